"""Finding a loaded model's embeddings and block list, for any family (see ``hpsearch.architectures``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hpsearch.architectures import Architecture, architecture
from hpsearch.errors import TrialError


@dataclass
class Layout:
    """The parts of one loaded model that scopes and the frozen-layer cache work on."""

    base: Any
    """The base model (the part under the task head)."""
    embeddings: list[tuple[Any, str]]
    """(parent module, attribute name) of each embedding-stage module."""
    blocks: tuple[Any, str]
    """(parent module, attribute name) of the block list."""
    architecture: Architecture | None

    @property
    def block_list(self) -> torch.nn.ModuleList:
        parent, name = self.blocks
        return getattr(parent, name)

    def embedding_modules(self) -> list[Any]:
        return [getattr(parent, name) for parent, name in self.embeddings]

    @property
    def cache_off(self) -> str | None:
        if self.architecture is None:
            return "hpsearch does not know this architecture's layer interface"
        return self.architecture.cache_off


def _resolve(root: Any, path: str) -> tuple[Any, str] | None:
    """(parent, attribute) of a dotted path under ``root``, or None when some part is missing."""
    *parents, name = path.split(".")
    for part in parents:
        root = getattr(root, part, None)
        if root is None:
            return None
    return (root, name) if getattr(root, name, None) is not None else None


def layout_of(model: Any) -> Layout:
    """The layout of ``model`` (a task model or its PEFT wrapper); TrialError when it has no block list."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):  # PEFT: the wrapped task model
        model = model.get_base_model()
    base = getattr(model, "base_model", model)
    config = getattr(base, "config", None)
    known = architecture(getattr(config, "model_type", None))
    if known is not None:
        blocks = _resolve(base, known.blocks)
        embeddings = [found for path in known.embeddings if (found := _resolve(base, path)) is not None]
        if blocks is not None and embeddings:
            return Layout(base, embeddings, blocks, known)
    return _general_layout(base, config)


def _general_layout(base: Any, config: Any) -> Layout:
    """An unlisted family: its blocks are the module list with one entry per layer; embeddings are what precedes them."""
    layers = getattr(config, "num_hidden_layers", None)
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == layers and name:
            parent, _, attribute = name.rpartition(".")
            blocks = (base.get_submodule(parent) if parent else base, attribute)
            embeddings = [(base, child) for child, _ in base.named_children() if "emb" in child.lower()]
            if embeddings:
                return Layout(base, embeddings, blocks, None)
    raise TrialError(f"cannot find the embeddings and the {layers} layers of {type(base).__name__}; "
                     "use scope full or lora (with lora_targets) for this candidate")
