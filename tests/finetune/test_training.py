from __future__ import annotations

import math
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from hpsearch.errors import TrialError
from hpsearch.finetune.layouts import layout_of
from hpsearch.spec import Candidate

LEARNABLE = {"learning_rate": 3e-3, "epochs": 5, "batch_size": 8, "warmup_ratio": 0.1}
TRAIN, EVAL = list(range(120)), list(range(120, 160))


@pytest.mark.parametrize("task", ["text-classification", "text-pair-classification", "regression", "token-classification"])
def test_loss_falls_on_a_learnable_toy_set(make_tuner, task: str) -> None:
    spec, tuner = make_tuner(task)
    # 8 epochs: the regression head leaves its starting plateau after 2 to 4 epochs, earlier or later by the
    # rounding of the machine's thread count (it had fallen to only 0.62 of its first loss after 5 epochs once)
    fitted = tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 8}, train_rows=TRAIN, eval_rows=EVAL)
    losses = [r.train_loss for r in fitted.result.history]
    assert losses[-1] < 0.6 * losses[0], losses
    assert all(math.isfinite(v) for r in fitted.result.history for v in r.metrics.values())


def test_regression_in_bf16_keeps_the_spread_of_its_predictions(make_tuner) -> None:
    """Under bf16 autocast (what precision: auto picks on a CPU with native bf16), a head whose outputs sat near the
    targets' mean (about 1.5) was rounded to steps of 0.008: the tiny model's 40 predictions, spread over 2e-4 in
    fp32, came out as one value (Pearson undefined). Trained in standard units with its outputs in fp32, they keep
    their spread."""
    predictions = {}
    for precision in ("fp32", "bf16"):
        spec, tuner = make_tuner("regression", precision=precision)
        fitted = tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 1}, train_rows=TRAIN, eval_rows=EVAL)
        predictions[precision] = np.array([float(x.reshape(-1)[0]) for x in tuner.predict(fitted, "train", EVAL)])
        assert math.isfinite(fitted.result.history[0].metrics["pearson"])
    spread = float(np.std(predictions["fp32"]))
    assert float(np.std(predictions["bf16"])) > 0.5 * spread > 0
    assert np.corrcoef(predictions["fp32"], predictions["bf16"])[0, 1] > 0.5  # the same ordering, roughly: 1 epoch of rounding apart


def test_multiclass_classification_learns(make_tuner, tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner
    from hpsearch.spec import load_spec
    from toydata import classification_rows, write_csv

    study = tmp_path / "multi.yaml"
    write_csv(tmp_path / "multi.csv", classification_rows(180, classes=3))
    study.write_text(f"name: m\ntask: text-classification\ndata: {{train: multi.csv}}\nmodels: [{{name: tiny, path: {tiny_bert}}}]\n")
    spec = load_spec(study)
    tuner = FineTuner(prepare_data(spec), cache_dir=tmp_path / "cache", max_length=32)
    fitted = tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 6}, train_rows=list(range(140)), eval_rows=list(range(140, 180)))
    assert len(tuner.data.label_map) == 3
    assert max(r.metrics["accuracy"] for r in fitted.result.history) > 0.6


def _rated_tuner(tmp_path: Path, tiny_bert: Path, rate: Callable[[float], float]) -> tuple[Any, Any, list[float]]:
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner
    from hpsearch.spec import load_spec
    from toydata import regression_rows, write_csv

    rows = [{**row, "label": rate(row["label"])} for row in regression_rows(160)]
    write_csv(tmp_path / "ratings.csv", rows)
    study = tmp_path / "ratings.yaml"
    study.write_text(f"name: r\ntask: regression\ndata: {{train: ratings.csv}}\nmodels: [{{name: tiny, path: {tiny_bert}}}]\n")
    spec = load_spec(study)
    return spec, FineTuner(prepare_data(spec), cache_dir=tmp_path / "cache", max_length=32), [float(r["label"]) for r in rows]


def _short_fit_saved(tmp_path: Path, tuner: Any, candidate: Any, targets: list[float], scope: str,
                     within: float) -> tuple[Any, Any, list[float], float]:
    """One epoch at a fine-tuning learning rate, whose RMSE must be within ``within`` times what predicting the
    training mean scores; then saved and reloaded as transformers reads it. Returns the fit's output layer, the
    reloaded model, the fit's predictions of the evaluation rows as served, and the training mean."""
    import statistics

    from transformers import AutoModelForSequenceClassification

    from hpsearch.finetune.modeling import output_layer

    fitted = tuner.fit(candidate, {"learning_rate": 1e-5, "epochs": 1, "batch_size": 8, "scope": scope}, train_rows=TRAIN, eval_rows=EVAL)
    mean = statistics.fmean(targets[i] for i in TRAIN)
    baseline = math.sqrt(statistics.fmean((targets[i] - mean) ** 2 for i in EVAL))
    assert fitted.result.history[0].metrics["rmse"] < within * baseline, (fitted.result.history[0].metrics, baseline)
    layer = output_layer(fitted.model)
    predicted = [float(x.reshape(-1)[0]) for x in tuner.predict(fitted, "train", EVAL, served=True)]
    fitted.save(tmp_path / "saved")
    return layer, AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval(), predicted, mean


@pytest.mark.parametrize("scope", ["full", "lora"])
def test_a_regression_head_starts_at_the_scale_of_its_training_targets(tmp_path: Path, tiny_bert: Path, scope: str) -> None:
    """Ratings around 100: a short fit at a fine-tuning learning rate lands about as far off as predicting the training
    mean does, not 100 off (a head built to predict about 0 cannot move that far in a few small steps); the saved model
    is a plain one whose output layer holds that start, and computes what the fit did."""
    from hpsearch.finetune.modeling import output_layer

    spec, tuner, targets = _rated_tuner(tmp_path, tiny_bert, lambda label: 100 + 10 * label)
    _, saved, predicted, mean = _short_fit_saved(tmp_path, tuner, spec.models[0], targets, scope, within=2)
    assert type(output_layer(saved)) is torch.nn.Linear and abs(output_layer(saved).bias.item() - mean) < 1
    batch = tuner.inputs(spec.models[0]).tokenizer([tuner.data.train.columns["text"][i] for i in EVAL], padding=True, truncation=True,
                                                    max_length=32, return_tensors="pt")
    with torch.no_grad():
        reloaded = saved(**batch).logits.flatten().tolist()
    assert reloaded == pytest.approx(predicted, abs=1e-3)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_decoders_regression_head_without_a_bias_starts_at_the_targets_mean(tmp_path: Path, tiny_bert: Path, family: str) -> None:
    """Ratings around 100, 10 standard deviations from 0: a decoder's head has no bias to start at their mean, so the
    mean goes into its weights; one short fit lands within a few times what predicting the mean scores (without the
    start: about 10 times; the random tiny Llama, whose features vary most, lands at about 3 times, the GPT-2 at 1),
    and the saved model, a plain one, computes what the fit did."""
    from hpsearch.finetune.modeling import TargetUnitLinear, output_layer
    from tinymodel import build_tiny_family

    _, tuner, targets = _rated_tuner(tmp_path, tiny_bert, lambda label: 100 + 10 * label)
    decoder = Candidate(name=family, path=build_tiny_family(tmp_path / family, family, tiny_bert))
    layer, saved, predicted, _ = _short_fit_saved(tmp_path, tuner, decoder, targets, "full", within=4)
    assert isinstance(layer, TargetUnitLinear) and layer.bias is None and layer.unplaced_shift == 0
    assert type(output_layer(saved)) is torch.nn.Linear
    tokenizer = tuner.inputs(decoder).tokenizer
    with torch.no_grad():
        reloaded = [saved(**tokenizer(tuner.data.train.columns["text"][i], return_tensors="pt")).logits.item() for i in EVAL]
    assert reloaded == pytest.approx(predicted, abs=1e-3)


def test_the_mean_goes_into_a_bias_free_head_along_its_steadiest_direction() -> None:
    """The direction solved in the rows' space is the one the shrunk covariance gives directly; the mean output over
    the rows is then the shift, with more features than rows too; rows that are all 0 leave the head as it was."""
    from sklearn.covariance import ledoit_wolf

    from hpsearch.finetune.modeling import TargetUnitLinear, _steadiest_direction

    generator = torch.Generator().manual_seed(0)
    for count, width in ((200, 16), (12, 40)):
        rows = (torch.randn(count, width, generator=generator) + 3 * torch.randn(width, generator=generator)).double()
        direct = np.linalg.solve(ledoit_wolf(rows.numpy())[0], rows.mean(0).numpy())
        assert _steadiest_direction(rows).numpy() == pytest.approx(direct / (rows.mean(0).numpy() @ direct), rel=1e-6)
        head = TargetUnitLinear(torch.nn.Linear(width, 1, bias=False), scale=4.0, shift=250.0)
        assert head.shift == 0 and head.unplaced_shift == 250.0
        head.start_at_shift(rows.float())
        assert head.unplaced_shift == 0
        assert head(rows.float()).mean().item() == pytest.approx(250.0, rel=1e-5)
    head = TargetUnitLinear(torch.nn.Linear(8, 1, bias=False), scale=1.0, shift=5.0)
    before = head.weight.detach().clone()
    head.start_at_shift(torch.zeros(10, 8))
    assert torch.equal(head.weight, before) and head.unplaced_shift == 5.0


def test_regression_trains_the_same_whatever_units_its_targets_come_in(tmp_path: Path, tiny_bert: Path) -> None:
    """Targets times 1,000 plus 7, or times 0.001: the same fit's predictions, in those units. Trained with its
    weights in the targets' units, a head's AdamW steps (about the learning rate per weight) were huge for targets of
    0.001 and tiny for targets of 1,000."""
    params = {**LEARNABLE, "epochs": 3}
    predicted = {}
    for scale, shift in ((1.0, 0.0), (1000.0, 7.0), (0.001, 0.0)):
        spec, tuner, _ = _rated_tuner(tmp_path / str(scale), tiny_bert, lambda label: scale * label + shift)
        fitted = tuner.fit(spec.models[0], params, train_rows=TRAIN, eval_rows=EVAL)
        predicted[scale] = [(float(x.reshape(-1)[0]) - shift) / scale for x in tuner.predict(fitted, "train", EVAL)]
    spread = float(np.std(predicted[1.0]))
    assert spread > 1e-3  # the fit learned something that varies by row
    for scale in (1000.0, 0.001):
        assert predicted[scale] == pytest.approx(predicted[1.0], abs=0.01 * spread), scale


def test_truncation_keeps_the_first_k_layers(make_tuner, tiny_bert_4layers: Path) -> None:
    from hpsearch.spec import Candidate

    spec, tuner = make_tuner(model=tiny_bert_4layers)
    truncated = Candidate(name="cut", path=tiny_bert_4layers, num_layers=2)
    fitted = tuner.fit(truncated, {**LEARNABLE, "epochs": 1}, train_rows=TRAIN, eval_rows=EVAL)
    layers = layout_of(fitted.model).block_list
    assert len(layers) == 2 and fitted.model.config.num_hidden_layers == 2
    # The kept layers are the pretrained first two, not fresh ones: compare an untouched (frozen) copy.
    from safetensors.torch import load_file

    stored = load_file(str(next(tiny_bert_4layers.glob("*.safetensors"))))
    key = next(k for k in stored if k.endswith("encoder.layer.1.attention.self.query.weight"))
    frozen = tuner.fit(truncated, {**LEARNABLE, "epochs": 1, "scope": "freeze-2"}, train_rows=TRAIN, eval_rows=EVAL)
    assert torch.equal(layout_of(frozen.model).block_list[1].attention.self.query.weight.cpu(), stored[key])


def test_too_many_layers_is_a_clear_error(make_tuner) -> None:
    from hpsearch.spec import Candidate

    spec, tuner = make_tuner()
    with pytest.raises(TrialError, match="num_layers=9 but .* has only 2 layers"):
        tuner.fit(Candidate(name="x", path=spec.models[0].path, num_layers=9), LEARNABLE, train_rows=TRAIN, eval_rows=EVAL)


@pytest.mark.parametrize("cache", [True, False])
def test_frozen_parameters_do_not_change(make_tuner, cache: bool) -> None:
    spec, tuner = make_tuner(frozen_cache=cache)
    from hpsearch.finetune.modeling import load_model

    reference = load_model(tuner.inputs(spec.models[0]).folder, tuner.task, tuner.data.label_map, num_layers=None, trust_remote_code=False, seed=0)
    fitted = tuner.fit(spec.models[0], {**LEARNABLE, "scope": "freeze-1"}, train_rows=TRAIN, eval_rows=EVAL)
    assert fitted.used_frozen_cache is cache
    trained = dict(fitted.model.named_parameters())
    for name, before in reference.named_parameters():
        same = torch.equal(before, trained[name].detach().cpu())
        if name.startswith("bert.embeddings") or ".layer.0." in name:
            assert same, f"{name} changed although frozen"
        elif ".layer.1." in name or name.startswith("classifier"):
            assert not same, f"{name} did not train"


def test_head_scope_trains_only_the_head(make_tuner) -> None:
    spec, tuner = make_tuner()
    fitted = tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 1, "scope": "head"}, train_rows=TRAIN, eval_rows=EVAL)
    trainable = {n for n, p in fitted.model.named_parameters() if p.requires_grad}
    assert trainable == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}


def test_lora_trains_only_adapters_and_head(make_tuner) -> None:
    spec, tuner = make_tuner()
    fitted = tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 2, "scope": "lora", "lora_r": 4}, train_rows=TRAIN, eval_rows=EVAL)
    trainable = [n for n, p in fitted.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable), trainable
    assert any("lora_A" in n for n in trainable) and any(".query." in n for n in trainable)
    assert fitted.trainable_parameters < fitted.total_parameters / 4


def test_frozen_cache_matches_the_uncached_run(make_tuner, tmp_path: Path) -> None:
    params = {**LEARNABLE, "epochs": 2, "scope": "freeze-1"}
    spec, cached = make_tuner(frozen_cache=True)
    _, plain = make_tuner(frozen_cache=False)
    a = cached.fit(spec.models[0], params, train_rows=TRAIN, eval_rows=EVAL)
    b = plain.fit(spec.models[0], params, train_rows=TRAIN, eval_rows=EVAL)
    assert a.used_frozen_cache and not b.used_frozen_cache
    for ra, rb in zip(a.result.history, b.result.history):
        assert ra.train_loss == pytest.approx(rb.train_loss, rel=1e-4)
        assert ra.metrics["macro_f1"] == pytest.approx(rb.metrics["macro_f1"])
    # A second trial with the same model, data and depth reuses the stored outputs.
    before = cached.frozen_cache.computed
    cached.fit(spec.models[0], {**params, "learning_rate": 1e-3}, train_rows=TRAIN, eval_rows=EVAL)
    assert cached.frozen_cache.computed == before
    assert len(list((tmp_path / "cache" / "frozen").glob("*.pt"))) == 1
    # The states are held once: every input's are a view of one tensor (built in place, saved without a copy).
    (held,) = [h for h in cached.frozen_cache._memory.values() if len(h) > 1][:1]
    assert len({h.untyped_storage().data_ptr() for h in held}) == 1


def test_a_frozen_cache_too_big_for_the_memory_free_is_not_built_and_the_fit_says_so(make_tuner, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache keeps every input's float32 states in memory (655,380 rows of about 30 tokens from a 384-wide model: 29 GiB),
    more than many machines have. Where the states would take more than a quarter of the memory free, the fit runs its
    frozen layers at every step instead, as uncached fits do."""
    from hpsearch.finetune import frozen

    params = {**LEARNABLE, "epochs": 2, "scope": "freeze-1"}
    warned: list[str] = []
    spec, tuner = make_tuner(warn=warned.append)
    lengths = tuner.inputs(spec.models[0]).tokenized["train"].lengths()
    tokens = sum(lengths)
    need = frozen.stored_bytes(lengths, 32)  # the tiny model's width
    assert need == tokens * 32 * 4
    monkeypatch.setattr(frozen, "available_memory", lambda: 4 * need - 1)  # a quarter of it is a byte short
    small = tuner.fit(spec.models[0], params, train_rows=TRAIN, eval_rows=EVAL)
    assert not small.used_frozen_cache and tuner.frozen_cache.computed == 0
    said = [w for w in warned if w.startswith("frozen-layer cache off for ")]
    assert len(said) == 1 and f"would take {need / 2**30:.1f} GiB, more than 25% of the " in said[0], warned
    tuner.fit(spec.models[0], params, train_rows=TRAIN, eval_rows=EVAL)
    assert len([w for w in warned if w.startswith("frozen-layer cache off")]) == 1  # said once per candidate

    monkeypatch.setattr(frozen, "available_memory", lambda: 4 * need)
    _, roomy = make_tuner()
    fitted = roomy.fit(spec.models[0], params, train_rows=TRAIN, eval_rows=EVAL)
    assert fitted.used_frozen_cache
    for ra, rb in zip(small.result.history, fitted.result.history):  # the same training either way
        assert ra.train_loss == pytest.approx(rb.train_loss, rel=1e-4)
    monkeypatch.setattr(frozen, "available_memory", lambda: 1)  # once built, the entry held in memory is used whatever is free
    assert roomy.fit(spec.models[0], params, train_rows=TRAIN, eval_rows=EVAL).used_frozen_cache


def test_the_frozen_layers_outputs_and_validation_show_how_far_they_are(make_tuner) -> None:
    """On large data the outputs take minutes, and nothing showed how far they were (training epochs had their bar)."""
    class Shown:
        def __init__(self) -> None:
            self.steps: list[tuple[int, int, str, str]] = []

        def __call__(self, message: str, **fields: object) -> None:
            pass

        def step(self, done: int, total: int, description: str, unit: str = "step") -> None:
            self.steps.append((done, total, description, unit))

    shown = Shown()
    spec, tuner = make_tuner(info=shown)
    steps: list[tuple[int, int, int, str]] = []
    tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 2, "scope": "freeze-1"}, train_rows=TRAIN, eval_rows=EVAL,
              on_step=lambda *step: steps.append(step))
    said = "tiny: frozen layers' outputs for train"
    assert [s for s in shown.steps if s[3] == "input"] == [(64, 160, said, "input"), (128, 160, said, "input"), (160, 160, said, "input")]
    # So does each epoch's validation (40 rows in batches of 8), after its training steps.
    for epoch in (1, 2):
        assert [s[1:3] for s in steps if s[0] == epoch and s[3] == "validation"] == [(done, 40) for done in range(8, 41, 8)], steps
        assert [s[1:3] for s in steps if s[0] == epoch and s[3] == "training"] == [(done, 15) for done in range(1, 16)], steps


def test_every_pass_of_a_fit_over_the_data_calls_between_batches(make_tuner) -> None:
    """The runner counts the machine's workers again between batches (its share of the cores). Only training steps did: a
    worker that joined while another computed a candidate's frozen-layer outputs or validated an epoch (minutes each on
    large data) ran beside more threads than cores until the next training step."""
    spec, tuner = make_tuner()
    passes: list[str] = []
    tuner.between_batches = lambda: passes.append("training" if torch.is_grad_enabled() else "no gradients")
    tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 1, "scope": "freeze-1"}, train_rows=TRAIN, eval_rows=EVAL)
    # The frozen layer's outputs for the 160 rows (batches of 64), 120 training rows and 40 validation rows (batches of 8).
    assert passes == ["no gradients"] * 3 + ["training"] * 15 + ["no gradients"] * 5


def test_nan_loss_fails_with_a_reason(make_tuner, tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner
    from hpsearch.spec import load_spec
    from toydata import write_csv

    # Targets this large overflow float32 in the squared error: the loss is inf on the first step.
    write_csv(tmp_path / "huge.csv", [{"text": f"good film {i}", "label": 1e30 * (i % 2)} for i in range(20)])
    study = tmp_path / "huge.yaml"
    study.write_text(f"name: h\ntask: regression\ndata: {{train: huge.csv}}\nmodels: [{{name: tiny, path: {tiny_bert}}}]\ncv: {{stratify: false}}\n")
    spec = load_spec(study)
    tuner = FineTuner(prepare_data(spec), cache_dir=tmp_path / "cache", max_length=16)
    with pytest.raises(TrialError, match=r"training loss became inf at epoch 1, step 1; lower the learning rate"):
        tuner.fit(spec.models[0], LEARNABLE, train_rows=list(range(15)), eval_rows=list(range(15, 20)))


def test_callback_can_stop_training(make_tuner) -> None:
    spec, tuner = make_tuner()
    seen = []
    fitted = tuner.fit(spec.models[0], LEARNABLE, train_rows=TRAIN, eval_rows=EVAL, on_epoch=lambda r: seen.append(r.epoch) or r.epoch == 2)
    assert seen == [1, 2] and len(fitted.result.history) == 2 and fitted.result.stopped_early


def test_model_ends_with_its_best_epoch_weights(make_tuner) -> None:
    spec, tuner = make_tuner()
    # A learning rate this high makes later epochs worse than an early one on this toy set.
    params = {"learning_rate": 5e-2, "epochs": 6, "batch_size": 8, "max_grad_norm": 0.0}
    fitted = tuner.fit(spec.models[0], params, train_rows=TRAIN, eval_rows=EVAL)
    history = fitted.result.history
    best = fitted.result.best_epoch
    assert history[best - 1].metrics["macro_f1"] == max(r.metrics["macro_f1"] for r in history)
    assert tuner.score(fitted, "train", EVAL)["macro_f1"] == pytest.approx(history[best - 1].metrics["macro_f1"])


def test_same_seed_same_result(make_tuner) -> None:
    spec, tuner = make_tuner()
    runs = [tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 2}, train_rows=TRAIN, eval_rows=EVAL, seed=7) for _ in range(2)]
    assert [r.train_loss for r in runs[0].result.history] == [r.train_loss for r in runs[1].result.history]


def test_closed_runs_release_their_model(make_tuner) -> None:
    spec, tuner = make_tuner()
    refs = []
    for _ in range(3):
        fitted = tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 1}, train_rows=TRAIN, eval_rows=EVAL)
        refs.append(weakref.ref(fitted.model))
        fitted.close()
    assert all(ref() is None for ref in refs)


@pytest.mark.parametrize("where", ["hpsearch.finetune.core.apply_scope", "hpsearch.finetune.core.FineTuner._start_head_at_shift"])
def test_out_of_memory_before_training_is_said_and_frees_the_model(make_tuner, monkeypatch, where: str) -> None:
    """Out of memory while the model goes to its device (or its head is started) is the same clear error as during
    training, and the model is freed before it goes up: a worker's next trial needs that memory."""
    from hpsearch.errors import OutOfMemory
    from hpsearch.finetune import modeling

    spec, tuner = make_tuner()
    built = []
    load = modeling.load_model

    def loaded(*args, **kwargs):
        built.append(weakref.ref(model := load(*args, **kwargs)))
        return model

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr("hpsearch.finetune.core.load_model", loaded)
    monkeypatch.setattr(where, no_memory)
    with pytest.raises(OutOfMemory, match="out of memory with batch_size=8: lower batch_size or max_length"):
        tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 1}, train_rows=TRAIN, eval_rows=EVAL)
    assert len(built) == 1 and built[0]() is None


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_the_cpu_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native) -> None:
    from hpsearch.finetune import loop

    monkeypatch.setattr(loop, "native_cpu_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert loop.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert loop.autocast_dtype(cpu, "auto") is (torch.bfloat16 if native else None)
    assert loop.resolve_precision("bf16", cpu) == "bf16"  # asked for by name: kept
    assert loop.resolve_precision("fp16", cpu) == "fp32" and loop.resolve_precision("fp32", cpu) == "fp32"


def test_auto_precision_on_cuda_follows_the_gpu(monkeypatch) -> None:
    from hpsearch.finetune import loop

    gpu = torch.device("cuda", 0)
    for supported, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
        assert loop.resolve_precision("auto", gpu) == expected
    assert loop.resolve_precision("fp32", gpu) == "fp32" and loop.autocast_dtype(gpu, "fp16") is torch.float16


def test_the_precision_line_says_what_auto_chose_and_why(monkeypatch) -> None:
    from hpsearch.finetune import loop

    monkeypatch.setattr(loop, "native_cpu_bf16", lambda: True)
    assert loop.describe_precision("auto", "bf16", "cpu") == "training in bf16 autocast on cpu (precision: auto; this CPU computes bf16 natively)"
    monkeypatch.setattr(loop, "native_cpu_bf16", lambda: False)
    assert loop.describe_precision("auto", "fp32", "cpu").endswith("(precision: auto; this CPU has no native bf16)")
    assert loop.describe_precision("fp16", "fp32", "cpu") == "training in fp32 on cpu (precision: fp16; the CPU has no fp16 autocast)"
    assert loop.describe_precision("auto", "fp16", "cuda:0").endswith("(precision: auto; the GPU has no bf16)")


def test_the_tuner_resolves_auto_alike_for_every_task(monkeypatch, make_tuner) -> None:
    from hpsearch.finetune import loop

    monkeypatch.setattr(loop, "native_cpu_bf16", lambda: True)
    assert make_tuner()[1].precision == make_tuner("regression")[1].precision == "bf16"
    assert make_tuner("regression", precision="fp32")[1].precision == "fp32"


@pytest.mark.parametrize("native", [True, False])
def test_bf16_asked_for_on_a_cpu_that_would_emulate_it_is_warned_of(monkeypatch, make_tuner, native) -> None:
    from hpsearch.finetune import loop

    monkeypatch.setattr(loop, "native_cpu_bf16", lambda: native)
    warned: list[str] = []
    assert make_tuner(precision="bf16", warn=warned.append)[1].precision == "bf16"  # kept as asked
    assert [w for w in warned if "emulated" in w and "execution.precision: auto" in w] == ([] if native else warned)
    assert len(warned) == (0 if native else 1)
    make_tuner(warn=warned.append)  # auto: bf16 where native, fp32 where not; nothing to warn of
    assert len(warned) == (0 if native else 1)


def test_bf16_trains_on_the_cpu_when_asked_for(make_tuner) -> None:
    spec, tuner = make_tuner(precision="bf16")
    assert tuner.precision == "bf16"
    fitted = tuner.fit(spec.models[0], {**LEARNABLE, "epochs": 2}, train_rows=TRAIN, eval_rows=EVAL)
    assert all(math.isfinite(r.train_loss) for r in fitted.result.history)


def test_under_bf16_the_frozen_layer_cache_matches_running_the_frozen_layers(tmp_path, tiny_bert_4layers) -> None:
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner
    from hpsearch.spec import load_spec
    from toydata import toy_study

    spec = load_spec(toy_study(tmp_path, tiny_bert_4layers, rows=96))
    data = prepare_data(spec)
    params = {**LEARNABLE, "epochs": 2, "scope": "freeze-2"}
    runs = []
    for cache in (True, False):
        tuner = FineTuner(data, cache_dir=tmp_path / f"cache-{cache}", max_length=32, precision="bf16", frozen_cache=cache)
        runs.append(tuner.fit(spec.models[0], params, train_rows=list(range(64)), eval_rows=list(range(64, 96))))
    assert runs[0].used_frozen_cache and not runs[1].used_frozen_cache
    for cached, plain in zip(runs[0].result.history, runs[1].result.history):  # cache states computed in fp32 differ at 1e-5
        assert cached.train_loss == pytest.approx(plain.train_loss, rel=1e-6)
        assert cached.metrics["loss"] == pytest.approx(plain.metrics["loss"], rel=1e-6)


@pytest.mark.parametrize("task", ["text-classification", "token-classification"])
def test_batches_are_padded_to_a_multiple_of_8_tokens_and_predict_as_unpadded(make_tuner, monkeypatch, task: str) -> None:
    """A batch padded to its longest row had a length of its own, and on the CPU each new shape got a bf16 kernel of its
    own kept for the process: a trial's resident peak climbed far above the plan's. Padded to a multiple of 8 tokens
    (the mask hides the padding), a model computes the same outputs. (Training draws its dropout per element, so it
    draws differently on wider batches: a fit is not the same fit padded otherwise.)"""
    import hpsearch.finetune.batching as batching

    spec, tuner = make_tuner(task, precision="fp32", frozen_cache=True)
    candidate, inputs = spec.models[0], tuner.inputs(spec.models[0])
    fitted = tuner.fit(candidate, {**LEARNABLE, "epochs": 1}, train_rows=TRAIN, eval_rows=EVAL)
    frozen = tuner.fit(candidate, {**LEARNABLE, "epochs": 1, "scope": "freeze-1"}, train_rows=TRAIN, eval_rows=EVAL)
    assert frozen.used_frozen_cache

    def widths() -> set[int]:
        tokens = {batch["input_ids"].shape[1] for _, batch in tuner._token_batcher(inputs, "train").batches(TRAIN, 8)}
        hidden = tuner._hidden_batcher(frozen.model, inputs, "train", 1, candidate.name)
        for _, batch in hidden.batches(TRAIN, 8):
            tokens.add(batch["inputs_embeds"].shape[1])
            if task == "token-classification":  # one target per token, padded as the inputs are
                assert batch["labels"].shape[1] == batch["inputs_embeds"].shape[1]
        return tokens

    padded, padded_widths = tuner.predict(fitted, "train", EVAL), widths()
    assert padded_widths and all(w % 8 == 0 for w in padded_widths), padded_widths
    monkeypatch.setattr(batching, "PAD_MULTIPLE", 1)  # each batch to its longest row, as before
    unpadded, unpadded_widths = tuner.predict(fitted, "train", EVAL), widths()
    assert any(w % 8 for w in unpadded_widths), unpadded_widths  # the toy rows do come in other lengths
    for a, b in zip(padded, unpadded, strict=True):
        assert np.allclose(np.asarray(a), np.asarray(b), atol=1e-5), (a, b)
    monkeypatch.undo()
    assert batching.pad_multiple(64) == 8 and batching.pad_multiple(50) is None  # never past the length inputs are cut at
