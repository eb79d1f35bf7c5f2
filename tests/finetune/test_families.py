"""Every model family a study compares, with every training scope, cut to fewer layers, cached or not."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpsearch.architectures import architecture
from hpsearch.data import prepare_data
from hpsearch.finetune import FineTuner
from hpsearch.finetune.layouts import layout_of
from hpsearch.spec import Candidate, load_spec
from tinymodel import FAMILIES, build_tiny_deberta_spm, build_tiny_family, build_tiny_roberta
from toydata import toy_study

SCOPES = ["full", "freeze-1", "head", "lora"]
PARAMS = {"learning_rate": 3e-3, "epochs": 2, "batch_size": 8, "warmup_ratio": 0.0, "weight_decay": 0.0}
TRAIN, EVAL = list(range(48)), list(range(48, 64))


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_tiny_family(root / family, family, tiny_bert) for family in FAMILIES}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path):  # noqa: ANN201 - a spec
    return load_spec(toy_study(tmp_path_factory.mktemp("family-study"), tiny_bert, rows=64))


def _tuner(study, folder: Path, cache: bool = True, warnings: list[str] | None = None, precision: str = "auto") -> FineTuner:  # noqa: ANN001
    sink = warnings if warnings is not None else []
    return FineTuner(prepare_data(study), cache_dir=folder, max_length=32, precision=precision, frozen_cache=cache,
                     warn=sink.append)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_with_every_scope(family: str, scope: str, family_models, study, tmp_path: Path) -> None:
    fitted = _tuner(study, tmp_path).fit(Candidate(name=family, path=family_models[family]), {**PARAMS, "scope": scope},
                                         train_rows=TRAIN, eval_rows=EVAL)
    assert len(fitted.result.history) == 2
    assert all(math.isfinite(v) for record in fitted.result.history for v in record.metrics.values())
    trainable = {n for n, p in fitted.model.named_parameters() if p.requires_grad}
    if scope == "full":
        assert fitted.trainable_parameters == fitted.total_parameters
    elif scope == "lora":
        assert any("lora_A" in n for n in trainable) and fitted.trainable_parameters < fitted.total_parameters
    else:
        layout = layout_of(fitted.model)
        frozen = [p for module in layout.embedding_modules() for p in module.parameters()]
        assert frozen and not any(p.requires_grad for p in frozen), "embeddings train although frozen"
        blocks = list(layout.block_list)
        assert not any(p.requires_grad for p in blocks[0].parameters())
        if scope == "freeze-1":  # the block above the frozen one trains
            assert all(p.requires_grad for p in blocks[1].parameters())
        else:
            assert not any(p.requires_grad for block in blocks for p in block.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_output_layer_found_gives_every_familys_outputs(family: str, family_models) -> None:
    """What a regression head is started from (its bias and scale): the layer whose values the model outputs."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from hpsearch.finetune.modeling import output_layer

    model = AutoModelForSequenceClassification.from_pretrained(family_models[family], num_labels=1).eval()
    layer = output_layer(model)
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.fill_(7.0)
        logits = model(input_ids=torch.tensor([[5, 6, 7, 8]]), attention_mask=torch.ones(1, 4, dtype=torch.long)).logits
    assert logits.flatten().tolist() == [7.0 if layer.bias is not None else 0.0]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_position_limit_is_the_longest_input_each_family_takes(family: str, family_models) -> None:
    """What a candidate's inputs are cut at when data.max_length asks for more than the model takes."""
    import json

    import torch
    from transformers import AutoModelForSequenceClassification

    from hpsearch.architectures import position_limit

    config = json.loads((family_models[family] / "config.json").read_text())
    limit = position_limit(config)
    model = AutoModelForSequenceClassification.from_pretrained(family_models[family], num_labels=2).eval()

    def runs(length: int) -> bool:
        ids = torch.full((1, length), 5)
        try:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=torch.ones_like(ids))
        except (IndexError, RuntimeError):
            return False
        return True

    if limit is None:  # positions that are not a table: longer inputs run
        assert runs(2 * (config.get("max_position_embeddings") or 64) + 1)
    else:
        assert runs(limit) and not runs(limit + 1), limit


@pytest.mark.parametrize("family", FAMILIES)
def test_num_layers_cuts_every_family(family: str, family_models, study, tmp_path: Path) -> None:
    tuner = _tuner(study, tmp_path)
    whole = tuner.fit(Candidate(name=family, path=family_models[family]), {**PARAMS, "epochs": 1}, train_rows=TRAIN, eval_rows=EVAL)
    cut = tuner.fit(Candidate(name=f"{family}-1", path=family_models[family], num_layers=1), {**PARAMS, "epochs": 1},
                    train_rows=TRAIN, eval_rows=EVAL)
    assert cut.model.config.num_hidden_layers == 1
    if architecture(family).shared_blocks:  # ALBERT: fewer repetitions of the same weights
        assert cut.total_parameters == whole.total_parameters
    else:
        assert len(layout_of(cut.model).block_list) == 1
        assert cut.total_parameters < whole.total_parameters


# Where a fit runs under bf16 autocast, the cache computes its states in larger batches than training does; a
# different padding shape rounds some states to the next bf16 value, so the two fits agree to bf16's precision
# (one bf16 step is 2**-8 of a value), not to fp32's; seen: at most 1.2e-4 apart. fp32 shows the cache is exact,
# bf16 that it runs under autocast too.
AGREEMENT = {"fp32": 1e-4, "bf16": 2**-8}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("scope", ["freeze-1", "head"])
@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_cache_is_exact_or_off_with_its_reason(family: str, scope: str, precision: str, family_models, study,
                                                      tmp_path: Path) -> None:
    candidate = Candidate(name=family, path=family_models[family])
    said: list[str] = []
    tuners = _tuner(study, tmp_path / "a", warnings=said, precision=precision), _tuner(study, tmp_path / "b", cache=False, precision=precision)
    assert [tuner.precision for tuner in tuners] == [precision, precision]
    cached, plain = (tuner.fit(candidate, {**PARAMS, "scope": scope}, train_rows=TRAIN, eval_rows=EVAL) for tuner in tuners)
    reason = architecture(family).cache_off
    assert cached.used_frozen_cache is (reason is None)
    if reason is not None:
        assert [m for m in said if m.startswith(f"frozen-layer cache off for {family}: {reason}")], said
    rel = AGREEMENT[precision]
    for a, b in zip(cached.result.history, plain.result.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=rel, abs=1e-6)
        assert a.metrics["loss"] == pytest.approx(b.metrics["loss"], rel=rel, abs=1e-6)
        if precision == "fp32":  # one rounding step may move a prediction across the boundary in bf16
            assert a.metrics["macro_f1"] == pytest.approx(b.metrics["macro_f1"], abs=1e-6)


def test_the_no_cache_reason_is_said_once_per_candidate(family_models, study, tmp_path: Path) -> None:
    said: list[str] = []
    tuner = _tuner(study, tmp_path, warnings=said)
    candidate = Candidate(name="gpt", path=family_models["gpt2"])
    for _ in range(2):
        tuner.fit(candidate, {**PARAMS, "epochs": 1, "scope": "freeze-1"}, train_rows=TRAIN, eval_rows=EVAL)
    assert len([m for m in said if "frozen-layer cache off" in m]) == 1


def test_candidates_with_the_same_tokenizer_files_read_as_other_classes_do_not_share_tokens(family_models, study, tmp_path: Path) -> None:
    """The tiny GPT-2 and Qwen2 carry the same tokenizer files (the tiny BERT's WordPiece vocabulary), which
    transformers loads as a BERT tokenizer for the one and as a Qwen2 tokenizer (a character-level BPE of the same
    vocabulary) for the other: each candidate's inputs are its own tokenizer's, not the other's cached ones."""
    tuner = _tuner(study, tmp_path)
    gpt, qwen = Candidate(name="gpt", path=family_models["gpt2"]), Candidate(name="qwen", path=family_models["qwen2"])
    assert all((gpt.path / name).read_bytes() == (qwen.path / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json"))
    text = tuner.data.train.columns["text"][0]
    for candidate in (gpt, qwen):
        inputs = tuner.inputs(candidate)
        assert inputs.tokenized["train"].features[0]["input_ids"] == inputs.tokenizer(text, truncation=True, max_length=32)["input_ids"]
    assert tuner.inputs(gpt).tokenized["train"].features[0] != tuner.inputs(qwen).tokenized["train"].features[0]


@pytest.mark.parametrize("family", ["gpt2", "llama", "phi3", "distilbert", "mpnet", "albert"])
def test_exported_models_of_other_families_load_in_a_pipeline(family: str, family_models, study, tmp_path: Path) -> None:
    from transformers import pipeline

    scope = "freeze-1" if family == "albert" else "full"  # ALBERT's untied layers must export as a plain ALBERT
    fitted = _tuner(study, tmp_path).fit(Candidate(name=family, path=family_models[family]), {**PARAMS, "scope": scope},
                                         train_rows=TRAIN, eval_rows=EVAL)
    fitted.save(tmp_path / "export")
    classify = pipeline("text-classification", model=str(tmp_path / "export"))
    predictions = classify(["the film was good", "a really dull plot and awful music"])
    assert {p["label"] for p in predictions} <= {"neg", "pos"} and len(predictions) == 2
    if architecture(family).decoder:  # the pad token the decoder was trained with travels with the export
        assert classify.tokenizer.pad_token is not None and classify.model.config.pad_token_id == classify.tokenizer.pad_token_id


def test_words_reach_a_byte_level_tokenizer_each_after_a_space(tmp_path: Path, tiny_bert: Path) -> None:
    """RoBERTa's and GPT-2's tokenizers mark a word's start by the space before it: words given one by one (token
    classification) must each get that space, or all but the first read as the middle of a word; the export keeps it."""
    from transformers import AutoTokenizer, pipeline

    from toydata import corpus

    model = build_tiny_roberta(tmp_path / "roberta", corpus())
    spec = load_spec(toy_study(tmp_path / "study", model, task="token-classification", rows=40))
    tuner = FineTuner(prepare_data(spec), cache_dir=tmp_path / "cache", max_length=32)
    candidate = Candidate(name="roberta", path=model)
    words = tuner.data.train.columns["tokens"][0]
    as_words = tuner.tokenizer(candidate)(words, is_split_into_words=True)["input_ids"]
    assert as_words == AutoTokenizer.from_pretrained(model)(" " + " ".join(words))["input_ids"]  # the text they come from
    fitted = tuner.fit(candidate, {**PARAMS, "epochs": 1}, train_rows=list(range(30)), eval_rows=list(range(30, 40)))
    fitted.save(tmp_path / "export")
    tagger = pipeline("token-classification", model=str(tmp_path / "export"))
    assert tagger.tokenizer.add_prefix_space is True and tagger("the film was good") is not None


def test_a_tokenizer_that_comes_as_a_sentencepiece_file_loads(tmp_path: Path, study) -> None:
    """DeBERTa-v3 (and others) ship only spm.model: the tokenizer is read with the sentencepiece package, a dependency."""
    from toydata import corpus

    model = build_tiny_deberta_spm(tmp_path / "deberta", corpus())
    assert sorted(p.name for p in model.iterdir() if "token" in p.name or p.suffix == ".model") == ["spm.model", "tokenizer_config.json"]
    tuner = _tuner(study, tmp_path / "cache")
    fitted = tuner.fit(Candidate(name="deberta", path=model), {**PARAMS, "epochs": 1}, train_rows=TRAIN, eval_rows=EVAL)
    assert fitted.inputs.tokenizer.tokenize("the film was good")[0].startswith("▁")
    assert all(math.isfinite(v) for v in fitted.result.history[0].metrics.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_to_a_multiple_of_8_tokens_leaves_every_familys_outputs_as_they_were(family: str, family_models, study,
                                                                                      tmp_path: Path, monkeypatch) -> None:
    """Batches are padded to a multiple of 8 tokens (hpsearch.finetune.batching.PAD_MULTIPLE); the mask hides the
    padding, whichever side a family's tokenizer pads on and however it pools (a decoder at its last real token)."""
    import numpy as np

    import hpsearch.finetune.batching as batching

    tuner = _tuner(study, tmp_path / "cache", precision="fp32")
    candidate = Candidate(name=family, path=family_models[family])
    fitted = tuner.fit(candidate, {"learning_rate": 1e-3, "epochs": 0, "scope": "full"}, train_rows=[], eval_rows=[])
    rows = list(range(24))
    padded = tuner.predict(fitted, "train", rows)
    monkeypatch.setattr(batching, "PAD_MULTIPLE", 1)
    unpadded = tuner.predict(fitted, "train", rows)
    for a, b in zip(padded, unpadded, strict=True):
        assert np.allclose(np.asarray(a), np.asarray(b), atol=1e-4), (family, a, b)
