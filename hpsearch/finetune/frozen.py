"""Frozen bottom layers cost less: their outputs are computed once and reused.

With embeddings and the bottom K layers frozen (and run without dropout), their output for a given
input never changes. It is computed once per (model weights, tokenized data, K), kept on disk in the
study folder and in memory, and training then runs only the layers above K and the head, on those
stored hidden states. Every epoch, fold and trial that shares the model, data and K reuses it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import torch

from hpsearch.finetune.batching import TokenBatcher
from hpsearch.finetune.modeling import encoder_parts

_MEMORY_ENTRIES = 2


class _PassThrough(torch.nn.Module):
    """Stands in for the embeddings: the stored hidden states come in as ``inputs_embeds``."""

    def forward(self, *args: Any, inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        assert inputs_embeds is not None
        return inputs_embeds


def supports_cache(model: Any) -> bool:
    return encoder_parts(model) is not None


@contextlib.contextmanager
def only_layers(model: Any, start: int, stop: int | None, skip_embeddings: bool) -> Iterator[Any]:
    """Temporarily keep encoder layers [start:stop] (and optionally skip the embeddings)."""
    parts = encoder_parts(model)
    assert parts is not None
    base, layers = parts
    original_embeddings = base.embeddings
    base.encoder.layer = torch.nn.ModuleList(list(layers)[start:stop])
    if skip_embeddings:
        base.embeddings = _PassThrough()
    try:
        yield model
    finally:
        base.encoder.layer = layers
        base.embeddings = original_embeddings


def weights_fingerprint(folder: Path) -> str:
    """Identity of a model folder's weights (path, sizes and times: cheap, and per study folder)."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in (".safetensors", ".bin") or path.name == "config.json"):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


class FrozenOutputCache:
    """Hidden states after the bottom K layers, per example, on disk under ``root`` and in memory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.computed = 0
        self._memory: OrderedDict[str, list[torch.Tensor]] = OrderedDict()

    def get(self, model: Any, depth: int, batcher: TokenBatcher, model_key: str, data_key: str, device: torch.device) -> list[torch.Tensor]:
        from filelock import FileLock

        key = hashlib.sha256(json.dumps([model_key, data_key, depth]).encode()).hexdigest()[:20]
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{key}.pt"
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                stored = torch.load(path, weights_only=True)
                hidden = list(torch.split(stored["flat"], stored["lengths"].tolist()))
            else:
                hidden = compute_frozen_outputs(model, depth, batcher, device)
                self.computed += 1
                tmp = path.with_suffix(".tmp")
                torch.save({"flat": torch.cat(hidden), "lengths": torch.tensor([h.shape[0] for h in hidden])}, tmp)
                tmp.replace(path)
        self._memory[key] = hidden
        while len(self._memory) > _MEMORY_ENTRIES:
            self._memory.popitem(last=False)
        return hidden


@torch.no_grad()
def compute_frozen_outputs(model: Any, depth: int, batcher: TokenBatcher, device: torch.device, batch_size: int = 64) -> list[torch.Tensor]:
    """Output of embeddings + the first ``depth`` layers for every example, unpadded, on the CPU."""
    was_training = model.training
    model.eval()
    base, _ = encoder_parts(model)  # type: ignore[misc]
    rows = list(range(len(batcher.features)))
    out: list[torch.Tensor | None] = [None] * len(rows)
    with only_layers(model, 0, depth, skip_embeddings=False):
        for chunk, batch in batcher.batches(rows, batch_size):
            inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            hidden = base(**inputs).last_hidden_state.float().cpu()
            for position, row in enumerate(chunk):
                out[row] = hidden[position, : batcher.lengths[row]].clone()
    model.train(was_training)
    return out  # type: ignore[return-value]
