"""Where each model family keeps its embeddings and its stack of blocks, and what a scope needs from it.

Pure data (no torch), so ``validate`` can say which scopes a candidate can take from its config.json
alone. ``hpsearch.finetune.layouts`` finds these modules in a loaded model; a family that is not listed
here is handled by a general rule (the module list with one entry per ``num_hidden_layers``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    embeddings: tuple[str, ...]
    """Modules (paths under the base model) that turn token ids into the first hidden states."""
    blocks: str
    """Path of the list of transformer blocks under the base model."""
    lora_targets: tuple[str, ...]
    """Attention projections that get LoRA adapters."""
    cache_off: str | None = None
    """Why the outputs of frozen bottom blocks cannot be stored and fed back in for this family (None: they can)."""
    shared_blocks: bool = False
    """One block's weights used at every depth (ALBERT): ``freeze-K`` unties them first (each depth gets a copy)."""
    decoder: bool = False
    """A causal decoder used as a classifier: it reads the last non-pad token, so it needs a pad token."""


_BERT = Architecture(("embeddings",), "encoder.layer", ("query", "value"))
_ROTARY = "its layers take rotary position tensors and a causal mask that the model builds for the whole input"

ARCHITECTURES: dict[str, Architecture] = {
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "camembert": _BERT,
    "electra": Architecture(("embeddings", "embeddings_project"), "encoder.layer", ("query", "value")),
    "distilbert": Architecture(("embeddings",), "transformer.layer", ("q_lin", "v_lin")),
    "deberta-v2": Architecture(
        ("embeddings",), "encoder.layer", ("query_proj", "value_proj"),
        cache_off="its layers also take relative-position tensors that the encoder builds from the whole input",
    ),
    "deberta": Architecture(
        ("embeddings",), "encoder.layer", ("in_proj",),
        cache_off="its layers also take relative-position tensors that the encoder builds from the whole input",
    ),
    "albert": Architecture(
        ("embeddings", "encoder.embedding_hidden_mapping_in"), "encoder.albert_layer_groups", ("query", "value"),
        cache_off="it uses one layer's weights at every depth", shared_blocks=True,
    ),
    "modernbert": Architecture(
        ("embeddings",), "layers", ("Wqkv", "Wo"),
        cache_off="each layer picks local or global attention and its rotary positions by its own index",
    ),
    "mpnet": Architecture(
        ("embeddings",), "encoder.layer", ("q", "v"),
        cache_off="its layers also take a relative-position bias that the encoder builds from the whole input",
    ),
    **{family: Architecture(
        ("embed_tokens",), "layers", ("q_proj", "v_proj"),
        cache_off=_ROTARY,
        decoder=True,
    ) for family in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2")},
    "phi3": Architecture(("embed_tokens",), "layers", ("qkv_proj",), cache_off=_ROTARY, decoder=True),
    "gpt2": Architecture(
        ("wte", "wpe"), "h", ("c_attn",),
        cache_off="a decoder adds position embeddings to whatever comes in, so stored outputs cannot be fed back", decoder=True,
    ),
}


_LEARNED_POSITIONS = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "albert", "mpnet", "deberta", "deberta-v2")
_PADDED_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")
"""Families whose position ids start after the padding id (RoBERTa's 514 positions take 512 tokens)."""


def position_limit(config: dict) -> int | None:
    """The most tokens a model of ``config`` (config.json as a mapping) takes in one input: the rows of its table of
    learned positions, less those kept below the padding id where the family numbers positions from there. None
    where positions are not such a table (rotary and relative positions, DeBERTa without absolute positions) or the
    family is not listed: longer inputs do not fail there."""
    kind = config.get("model_type")
    if kind == "gpt2":
        return config.get("n_positions") or config.get("max_position_embeddings")
    if kind not in _LEARNED_POSITIONS or (kind.startswith("deberta") and not config.get("position_biased_input", True)):
        return None
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    padding = 1 if kind == "mpnet" else config.get("pad_token_id")  # MPNet numbers from 1 whatever its pad token
    return positions - (padding if isinstance(padding, int) else 1) - 1 if kind in _PADDED_POSITIONS else positions


def input_length(config: dict | None, max_length: int) -> tuple[int, str | None]:
    """The tokens a model of ``config`` (None: unknown) is given where data.max_length is ``max_length``: that, or its
    :func:`position_limit` where lower; and its model_type where the limit cut it (else None)."""
    limit = position_limit(config) if config else None
    if limit is not None and limit < max_length:
        return limit, str(config.get("model_type"))  # type: ignore[union-attr]
    return max_length, None


def architecture(model_type: str | None) -> Architecture | None:
    """The listed architecture of a config's ``model_type``, or None (then the general rule applies)."""
    return ARCHITECTURES.get(model_type or "")


def scope_problem(model_type: str | None, scope: str, lora_targets: list[str] | None) -> str | None:
    """Why ``scope`` cannot apply to a model of ``model_type``, or None when it can."""
    known = architecture(model_type)
    if scope == "lora" and known is None and model_type and not lora_targets and not _peft_knows(model_type):
        return (f"neither hpsearch nor peft knows which modules of a {model_type} model are its attention projections; "
                "set lora_targets on the candidate (e.g. [q_proj, v_proj])")
    return None


def _peft_knows(model_type: str) -> bool:
    """Whether peft has default LoRA targets for ``model_type`` (imported only for families not listed here)."""
    try:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known
    except ImportError:
        return False
    return model_type in known
