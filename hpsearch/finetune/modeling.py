"""Building a candidate model: source folder, layer truncation, task head, training scope."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.data.labels import LabelMap
from hpsearch.errors import TrialError
from hpsearch.finetune.tasks import Task
from hpsearch.spec import Candidate, package_model_dir


def model_dir(candidate: Candidate) -> Path:
    """Local folder of a candidate's files (hub models are fetched into the hub cache once)."""
    if candidate.path is not None:
        return candidate.path
    if candidate.package is not None:
        folder = package_model_dir(candidate)
        if folder is None:
            raise TrialError(f"package {candidate.package!r} of model {candidate.name!r} is not installed")
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(candidate.hub, revision=candidate.revision))
    except Exception as exc:
        raise TrialError(f"cannot get hub model {candidate.hub!r}: {exc}") from exc


@dataclass(frozen=True)
class Scope:
    """What is trained: everything, the head plus the layers above K frozen ones, or LoRA adapters."""

    kind: str  # "full", "freeze", "head" or "lora"
    frozen_layers: int = 0

    @classmethod
    def parse(cls, text: str) -> Scope:
        match = re.fullmatch(r"freeze-(\d+)", text)
        if match:
            return cls("freeze", int(match.group(1)))
        if text in ("full", "head", "lora"):
            return cls(text)
        raise TrialError(f"unknown training scope {text!r}; use full, head, lora or freeze-K")


def load_model(
    folder: Path, task: Task, label_map: LabelMap, *, num_layers: int | None, trust_remote_code: bool, seed: int
) -> Any:
    """The pretrained encoder with a freshly initialised (seeded) head for ``task``."""
    import torch
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:  # no config, an unknown architecture, or code that is not trusted
        raise TrialError(f"cannot load the model config from {folder}: {exc}") from None
    available = getattr(config, "num_hidden_layers", None)
    if num_layers is not None:
        if available is not None and num_layers > available:
            raise TrialError(f"num_layers={num_layers} but {folder.name} has only {available} layers; lower num_layers")
        config.num_hidden_layers = num_layers
    config.num_labels = task.num_labels(label_map)
    if label_map.labels:
        config.id2label, config.label2id = label_map.id2label, label_map.label2id
    else:
        config.problem_type = "regression"
    torch.manual_seed(seed)  # the new head's initial weights are part of the trial's seed
    try:
        return task.model_class().from_pretrained(folder, config=config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - a missing, damaged or mismatched weights file: each is this candidate's failure
        raise TrialError(f"cannot load model weights from {folder}: {type(exc).__name__}: {exc}") from None


def encoder_parts(model: Any) -> tuple[Any, Any] | None:
    """(base model, its list of encoder layers) for BERT-like models, else None."""
    base = getattr(model, "base_model", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or layers is None or not hasattr(base, "embeddings"):
        return None
    return base, layers


def apply_scope(model: Any, scope: Scope, lora: dict[str, Any] | None = None) -> Any:
    """Freeze or wrap ``model`` for ``scope``; returns the model to train."""
    if scope.kind == "full":
        return model
    if scope.kind == "lora":
        return _with_lora(model, lora or {})
    parts = encoder_parts(model)
    if parts is None:
        raise TrialError(f"scope {scope.kind!r} needs a BERT-like encoder; {type(model).__name__} is not one")
    base, layers = parts
    depth = len(layers) if scope.kind == "head" else scope.frozen_layers
    if depth > len(layers):
        raise TrialError(f"scope freeze-{depth} but the model has {len(layers)} layers; lower K")
    for module in [base.embeddings, *list(layers)[:depth]]:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return model


def frozen_modules(model: Any, scope: Scope) -> list[Any]:
    """Modules kept in eval mode during training (frozen layers run without dropout)."""
    parts = encoder_parts(model)
    if scope.kind not in ("freeze", "head") or parts is None:
        return []
    base, layers = parts
    depth = len(layers) if scope.kind == "head" else scope.frozen_layers
    return [base.embeddings, *list(layers)[:depth]]


def _with_lora(model: Any, settings: dict[str, Any]) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    task_type = TaskType.TOKEN_CLS if "TokenClassification" in type(model).__name__ else TaskType.SEQ_CLS
    config = LoraConfig(
        task_type=task_type,
        r=int(settings.get("lora_r", 8)),
        lora_alpha=float(settings.get("lora_alpha", 16)),
        lora_dropout=float(settings.get("lora_dropout", 0.1)),
        # None lets peft pick the attention projections it knows for this architecture.
        target_modules=None,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise TrialError(f"LoRA is not available for {type(model).__name__}: {exc}") from exc


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for parameter in model.parameters():
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total
