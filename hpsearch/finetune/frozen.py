"""Frozen bottom layers cost less: their outputs are computed once and reused.

With embeddings and the bottom K layers frozen (and run without dropout), their output for a given
input never changes. It is computed once per (model weights, tokenized data, K), kept on disk in the
study folder and in memory, and training then runs only the layers above K and the head, on those
stored hidden states. Every epoch, fold and trial that shares the model, data and K reuses it.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from hpsearch.finetune.batching import TokenBatcher
from hpsearch.finetune.layouts import layout_of

_MEMORY_ENTRIES = 2
MEMORY_SHARE = 0.25
"""The most of the memory available when the cache is built that one entry may take: a process holds up to two entries
(``_MEMORY_ENTRIES``), and training needs room besides."""


class _PassThrough(torch.nn.Module):
    """Stands in for the embeddings: the stored hidden states come in as ``inputs_embeds``.

    Families call their embeddings with keywords (BERT) or positionally (DistilBERT:
    ``embeddings(input_ids, inputs_embeds)``); either way the stored states are passed on unchanged.
    """

    def forward(self, *args: Any, inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = next(a for a in args[1:] if isinstance(a, torch.Tensor) and a.is_floating_point())
        return inputs_embeds


def cache_off(model: Any) -> str | None:
    """Why this model's frozen-layer outputs cannot be stored and reused (None: they can, exactly)."""
    return layout_of(model).cache_off


@contextlib.contextmanager
def only_layers(model: Any, start: int, stop: int | None, skip_embeddings: bool) -> Iterator[Any]:
    """Temporarily keep blocks [start:stop] (and optionally pass stored states through the embedding stage)."""
    layout = layout_of(model)
    parent, name = layout.blocks
    blocks = getattr(parent, name)
    originals = [(p, n, getattr(p, n)) for p, n in layout.embeddings]
    setattr(parent, name, torch.nn.ModuleList(list(blocks)[start:stop]))
    if skip_embeddings:
        # The first embedding module receives the stored states; later ones (ELECTRA's projection) pass them on.
        for index, (owner, attribute, _) in enumerate(originals):
            setattr(owner, attribute, _PassThrough() if index == 0 else torch.nn.Identity())
    try:
        yield model
    finally:
        setattr(parent, name, blocks)
        for owner, attribute, module in originals:
            setattr(owner, attribute, module)


def stored_bytes(lengths: list[int], width: int) -> int:
    """Bytes the stored outputs of inputs of ``lengths`` tokens take in memory (float32 states of ``width``)."""
    return sum(lengths) * width * 4


def available_memory() -> int | None:
    """Bytes of memory this machine can give a process now without swapping (None where that cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError):
        return None


def _key(model_key: str, data_key: str, depth: int, dtype: torch.dtype | None) -> str:
    parts: list[Any] = [model_key, data_key, depth] + ([str(dtype)] if dtype is not None else [])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


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

    def held(self, model_key: str, data_key: str, depth: int, dtype: torch.dtype | None = None) -> bool:
        """Whether this entry is in memory already (it then costs no more)."""
        return _key(model_key, data_key, depth, dtype) in self._memory

    def get(self, model: Any, depth: int, batcher: TokenBatcher, model_key: str, data_key: str, device: torch.device,
            dtype: torch.dtype | None = None, announce: Callable[[], None] = lambda: None,
            between: Callable[[], None] | None = None, on_rows: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
        """The outputs of the bottom ``depth`` blocks, computed as training computes them (under autocast to ``dtype``);
        ``announce`` is called before they are computed (not when they come from the cache), ``between`` and ``on_rows``
        (inputs done, inputs in all) after each batch of that computation."""
        from filelock import FileLock

        key = _key(model_key, data_key, depth, dtype)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{key}.pt"
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                stored = torch.load(path, weights_only=True)
                flat, lengths = stored["flat"], stored["lengths"].tolist()
            else:
                announce()
                flat = compute_frozen_outputs(model, depth, batcher, device, dtype=dtype, between=between, on_rows=on_rows)
                lengths = batcher.lengths
                self.computed += 1
                tmp = path.with_suffix(".tmp")
                torch.save({"flat": flat, "lengths": torch.tensor(lengths)}, tmp)
                tmp.replace(path)
        hidden = list(torch.split(flat, lengths))  # views: each example's rows of the one tensor
        self._memory[key] = hidden
        while len(self._memory) > _MEMORY_ENTRIES:
            self._memory.popitem(last=False)
        return hidden


@torch.no_grad()
def compute_frozen_outputs(model: Any, depth: int, batcher: TokenBatcher, device: torch.device, batch_size: int = 64,
                           dtype: torch.dtype | None = None, between: Callable[[], None] | None = None,
                           on_rows: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Output of embeddings + the first ``depth`` layers for every example, unpadded, on the CPU (float32), one
    example's tokens after another in one tensor (``batcher.lengths`` rows each: written in place, so the states are
    held once, and saved without a copy); under autocast to ``dtype`` when training runs under it, so a cached and an
    uncached fit see the same states. ``between`` is called after each batch, and ``on_rows`` with the inputs done so
    far and the inputs in all."""
    was_training = model.training
    model.eval()
    base = layout_of(model).base
    lengths = batcher.lengths
    starts = [0, *itertools.accumulate(lengths)]
    flat: torch.Tensor | None = None
    done = 0
    with only_layers(model, 0, depth, skip_embeddings=False):
        for chunk, batch in batcher.batches(range(len(lengths)), batch_size):
            inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                hidden = base(**inputs).last_hidden_state.float().cpu()
            if flat is None:
                flat = torch.empty(starts[-1], hidden.shape[-1])
            for position, row in enumerate(chunk):
                flat[starts[row]:starts[row + 1]] = hidden[position, : lengths[row]]
            if between is not None:
                between()
            done += len(chunk)
            if on_rows is not None:
                on_rows(done, len(lengths))
    model.train(was_training)
    return flat if flat is not None else torch.empty(0, 0)
