"""Building a candidate model: source folder, layer truncation, task head, training scope."""
from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from hpsearch.architectures import architecture
from hpsearch.data.labels import LabelMap
from hpsearch.errors import ModelUnavailable, TrialError
from hpsearch.finetune.layouts import layout_of
from hpsearch.spec import Candidate, package_model_dir
from hpsearch.spec._files import has_weights, no_weights
from hpsearch.tasks import Task


HUB_FILES = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.py", "*.safetensors")
"""What a hub model's fine-tune reads: config, tokenizer files (vocabularies, merges, SentencePiece models), code
of ``trust_remote_code`` models, and the weights as safetensors."""
_HUB_FOLDERS: dict[tuple[str, str | None], Path] = {}
"""Hub folders this process has fetched, by (name, revision): asked for by the check before the first trial, the
tokenizer and the inputs, each would otherwise ask the hub again."""


def model_dir(candidate: Candidate) -> Path:
    """Local folder of a candidate's files (hub models are fetched into the hub cache once)."""
    if candidate.path is not None:
        return candidate.path
    if candidate.package is not None:
        folder = package_model_dir(candidate)
        if folder is None:
            raise ModelUnavailable(f"package {candidate.package!r} of model {candidate.name!r} is not installed")
        return folder
    assert candidate.hub is not None  # the spec guarantees exactly one source
    key = (candidate.hub, candidate.revision)
    if key not in _HUB_FOLDERS:
        _HUB_FOLDERS[key] = _fetch(candidate.hub, candidate.revision)
    return _HUB_FOLDERS[key]


def _fetch(hub: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        # Only what a fine-tune reads: a repository often holds the weights three to five times over (TensorFlow,
        # Flax, ONNX, Rust, pickles), gigabytes that would be downloaded and stored for nothing.
        folder = Path(snapshot_download(hub, revision=revision, allow_patterns=list(HUB_FILES)))
        if not has_weights(folder):  # no safetensors: the PyTorch pickles then
            folder = Path(snapshot_download(hub, revision=revision, allow_patterns=[*HUB_FILES, "pytorch_model*.bin"]))
        return folder
    except Exception as exc:
        said = " ".join(str(exc).split())  # the hub's messages run over several lines
        raise ModelUnavailable(f"cannot get hub model {hub!r} ({type(exc).__name__}: {said}); check its name and "
                               "revision and the connection, or point path: at a copy saved with save_pretrained") from exc


def hub_cached(candidate: Candidate) -> bool:
    """Whether a hub candidate's config and weights are in the local Hugging Face cache already (no download)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(candidate.hub, revision=candidate.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not there, or not all of it: either way it is fetched
        return False
    return (folder / "config.json").is_file() and has_weights(folder)


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


def check_files(candidate: Candidate, task: Task | None = None) -> None:
    """That the folder of ``candidate`` is there, its config loads, its depth allows ``num_layers``, transformers has a
    model for ``task`` of its type, and it holds a weights file: what a run checks of each candidate before its first
    trial (reading the weights is left to the fits). Raises ModelUnavailable or TrialError."""
    folder = model_dir(candidate)
    config = _config(folder, candidate.num_layers, candidate.trust_remote_code)
    problem = (missing_head(config, task) if task is not None else None) or no_weights(folder)
    if problem:
        raise ModelUnavailable(problem)


def missing_head(config: Any, task: Task) -> str | None:
    """Why transformers cannot build ``task``'s model for ``config``'s model type (Phi-3 and Gemma 2, say, have no
    question-answering model); None where it can, or where the model's own code (``auto_map``) may provide one."""
    auto = task.model_class()
    mapping = getattr(auto, "_model_mapping", None)
    if mapping is None or type(config) in mapping or auto.__name__ in (getattr(config, "auto_map", None) or {}):
        return None
    return (f"transformers has no {task.name} model for model type {getattr(config, 'model_type', type(config).__name__)!r} "
            f"({auto.__name__} does not take a {type(config).__name__}); remove this candidate, or use a model of a type "
            f"that has one")


def _config(folder: Path, num_layers: int | None, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:  # no config, an unknown architecture, or code that is not trusted
        raise ModelUnavailable(f"cannot load the model config from {folder}: {exc}") from None
    available = getattr(config, "num_hidden_layers", None)
    if num_layers is not None and available is not None and num_layers > available:
        raise TrialError(f"num_layers={num_layers} but {folder.name} has only {available} layers; lower num_layers")
    return config


def output_layer(model: Any) -> Any:
    """The linear layer that gives a task model's outputs: the last one outside the pretrained base model (BERT's
    ``classifier``, RoBERTa's ``classifier.out_proj``, a decoder's ``score``); None where there is none."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    inside = {id(m) for m in base.modules()} if isinstance(base, torch.nn.Module) else set()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and id(m) not in inside]
    return layers[-1] if layers else None


class TargetUnitLinear(torch.nn.Linear):
    """An output layer trained in standard units of its targets: it outputs ``scale * (x W^T + b) + shift``, so that
    ``W`` and ``b`` (what the optimizer moves) mean the same whatever units the targets come in, and AdamW's steps,
    which are about the learning rate per parameter whatever the gradient's size, are steps of the same size in the
    targets' spread. Folded into a plain ``Linear`` (:func:`fold_target_units`) before the model is saved.

    A layer without a bias (decoders' heads) has nowhere to keep the shift: it is left in ``unplaced_shift`` for
    :meth:`start_at_shift`, which puts it in the weights, and the layer's outputs have no shift of their own."""

    def __init__(self, layer: torch.nn.Linear, scale: float, shift: float) -> None:
        torch.nn.Module.__init__(self)  # not Linear's: the layer's own (seeded) weight and bias are kept
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.weight, self.bias = layer.weight, layer.bias
        self.scale = scale
        self.shift = shift if layer.bias is not None else 0.0
        self.unplaced_shift = 0.0 if layer.bias is not None else shift

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # In fp32 whatever the autocast: targets far from 0 (prices, years) do not fit fp16's range or bf16's steps.
        return torch.nn.functional.linear(inputs, self.weight, self.bias).float() * self.scale + self.shift

    def start_at_shift(self, inputs: torch.Tensor) -> None:
        """Move the weights so that the mean output over ``inputs`` (rows of this layer's inputs, a sample of the
        training rows' as the pretrained model computes them) is ``unplaced_shift``, as a bias would start it.

        The weights move along the direction ``u`` with (mean input) . u = 1 that varies least over the rows, by
        their covariance shrunk as Ledoit and Wolf do (toward its mean variance, as far as the number of rows
        against features calls for), so the shift is about the same for every input; the head's own random start is
        kept on top."""
        if not self.unplaced_shift or len(inputs) == 0:
            return
        rows = inputs.double()
        direction = _steadiest_direction(rows)
        if direction is None:
            return
        with torch.no_grad():
            weight = self.weight.double()
            wanted = self.unplaced_shift / self.scale - weight @ rows.mean(0)  # in standard units, per output
            self.weight.copy_(weight + wanted[:, None] * direction[None, :])
        self.unplaced_shift = 0.0

    def folded(self) -> torch.nn.Linear:
        """The plain ``Linear`` that computes the same outputs."""
        layer = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                                device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.weight * self.scale)
            if self.bias is not None:
                layer.bias.copy_(self.bias * self.scale + self.shift)
        layer.weight.requires_grad_(self.weight.requires_grad)
        return layer


def _steadiest_direction(rows: torch.Tensor) -> torch.Tensor | None:
    """``u`` with (mean of ``rows``) . u = 1 and the least variance of ``rows`` . u under their Ledoit-Wolf shrunk
    covariance ``a I + b X^T X`` (``X`` the centred rows), solved in the rows' space (Woodbury), so that thousands of
    features cost no features-by-features matrix; None where the mean is 0."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    count, width = rows.shape
    centre = rows.mean(0)
    centred = rows - centre
    variance = float(centred.square().sum()) / (count * width)
    if variance == 0:
        solved = centre  # every row the same: any direction with a reach works; the mean's own is the shortest
    else:
        shrinkage = float(ledoit_wolf_shrinkage(centred.numpy(), assume_centered=True)) if count > 1 else 1.0
        a, b = shrinkage * variance, (1 - shrinkage) / count
        solved = centre / a
        if b > 0:
            inner = torch.linalg.solve(a / b * torch.eye(count, dtype=rows.dtype) + centred @ centred.T, centred @ centre)
            solved = (centre - centred.T @ inner) / a
    reach = float(centre @ solved)
    return solved / reach if reach > 0 else None


def train_in_target_units(model: Any, scale: float, shift: float) -> bool:
    """Make ``model``'s output layer (:func:`output_layer`) a :class:`TargetUnitLinear` starting from the same outputs
    times ``scale`` plus ``shift``; False where the model has no such layer."""
    layer = output_layer(model)
    if layer is None:
        return False
    _replace_module(model, layer, TargetUnitLinear(layer, scale, shift))
    return True


def fold_target_units(model: Any) -> None:
    """Replace each :class:`TargetUnitLinear` of ``model`` by the plain ``Linear`` that computes the same outputs, as
    ``save_pretrained`` writes and ``from_pretrained`` reads it."""
    for layer in [m for m in model.modules() if isinstance(m, TargetUnitLinear)]:
        _replace_module(model, layer, layer.folded())


@contextlib.contextmanager
def without_layer(model: Any, layer: Any) -> Iterator[None]:
    """Inside the block ``layer`` is an identity: ``model``'s outputs are what it feeds ``layer``, pooled as the model
    pools its outputs (a decoder's at the last token that is not padding)."""
    stand_in = torch.nn.Identity()
    _replace_module(model, layer, stand_in)
    try:
        yield
    finally:
        _replace_module(model, stand_in, layer)


def _replace_module(model: Any, old: Any, new: Any) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)


def load_model(
    folder: Path, task: Task, label_map: LabelMap, *, num_layers: int | None, trust_remote_code: bool, seed: int,
    pad_token_id: int | None = None, untie_shared: bool = False,
) -> Any:
    """The pretrained encoder with a freshly initialised (seeded) head for ``task``."""
    config = _config(folder, num_layers, trust_remote_code)
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    if getattr(config, "pad_token_id", None) is None and pad_token_id is not None:
        config.pad_token_id = pad_token_id  # decoders classify at the last non-pad token: they must know the pad
    task.configure_model(config, label_map)
    torch.manual_seed(seed)  # the new head's initial weights are part of the trial's seed
    try:
        model = task.model_class().from_pretrained(folder, config=config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - a missing, damaged or mismatched weights file: each is this candidate's failure
        raise ModelUnavailable(f"cannot load model weights from {folder}: {type(exc).__name__}: {exc}") from None
    known = architecture(getattr(config, "model_type", None))
    if untie_shared and known is not None and known.shared_blocks:
        _untie(model)
    return model


def _untie(model: Any) -> None:
    """Give each depth of a weight-sharing model (ALBERT) its own copy of the layer it used, so the bottom K
    can stay frozen while the layers above train. The copies start equal, so the model computes the same
    function; it is saved (and exported) with one layer group per depth."""
    import copy

    layout = layout_of(model)
    parent, name = layout.blocks
    groups = getattr(parent, name)
    config = layout.base.config
    depth, count = int(config.num_hidden_layers), len(groups)
    if count == depth:
        return
    per_group = depth / count  # ALBERT: layer i uses group int(i / (layers / groups))
    setattr(parent, name, torch.nn.ModuleList([copy.deepcopy(groups[int(i / per_group)]) for i in range(depth)]))
    config.num_hidden_groups = depth
    if getattr(model, "config", None) is not config:
        model.config.num_hidden_groups = depth


def apply_scope(model: Any, scope: Scope, lora: dict[str, Any] | None = None, lora_targets: list[str] | None = None,
                task_type: str = "SEQ_CLS") -> Any:
    """Freeze or wrap ``model`` for ``scope``; returns the model to train."""
    if scope.kind == "full":
        return model
    if scope.kind == "lora":
        return _with_lora(model, lora or {}, lora_targets, task_type)
    for module in frozen_modules(model, scope):
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return model


def frozen_modules(model: Any, scope: Scope) -> list[Any]:
    """Modules a scope freezes (kept in eval mode during training: frozen layers run without dropout).

    ``head``: the embeddings and every block; ``freeze-K``: the embeddings and the bottom K blocks.
    """
    if scope.kind not in ("freeze", "head"):
        return []
    layout = layout_of(model)
    blocks = layout.block_list
    if scope.kind == "head":
        return [*layout.embedding_modules(), *blocks]
    if layout.architecture is not None and layout.architecture.shared_blocks and len(blocks) != layout.base.config.num_hidden_layers:
        raise TrialError(f"scope freeze-{scope.frozen_layers}: {type(model).__name__} shares one layer's weights across depth; "
                         "it must be loaded with its layers untied (load_model(untie_shared=True))")
    if scope.frozen_layers > len(blocks):
        raise TrialError(f"scope freeze-{scope.frozen_layers} but the model has {len(blocks)} layers; lower K")
    return [*layout.embedding_modules(), *list(blocks)[: scope.frozen_layers]]


def _with_lora(model: Any, settings: dict[str, Any], targets: list[str] | None, task_type: str) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    known = architecture(getattr(model.config, "model_type", None))
    config = LoraConfig(
        task_type=TaskType[task_type],
        r=int(settings.get("lora_r", 8)),
        lora_alpha=float(settings.get("lora_alpha", 16)),
        lora_dropout=float(settings.get("lora_dropout", 0.1)),
        # The candidate's own targets, else the family's attention projections, else what peft knows.
        target_modules=list(targets) if targets else list(known.lora_targets) if known else None,
    )
    try:
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing` on every wrap: a note between the
            # two libraries that users can do nothing about, repeated for every LoRA fit.
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as exc:
        raise TrialError(f"LoRA is not available for {type(model).__name__}: {exc}; set lora_targets on the candidate") from exc


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for parameter in model.parameters():
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total
