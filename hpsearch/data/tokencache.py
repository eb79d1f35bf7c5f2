"""Tokenize each (data, tokenizer, max_length, task settings) once, on disk, shared by trials, folds and workers."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.data.prepare import Split
from hpsearch.errors import RowError
from hpsearch.tasks import Features, Task
from hpsearch.tasks.featuretable import FeatureTable
from hpsearch.workers import own_name, remove_left_behind

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt")
_FORMAT_VERSION = 3
_TABLE = "features.npz"


def tokenizer_fingerprint(folder: Path, tokenizer: Any = None) -> str:
    """Hash of a tokenizer's files in a model folder (weights are skipped: they do not change tokens) and of the class
    ``tokenizer`` was loaded as from them: transformers may pick the class by the model's type in config.json, and two
    classes read the same files differently (a WordPiece vocabulary loaded as a Qwen2 tokenizer becomes a
    character-level BPE), so two candidates with the same files do not always tokenize alike."""
    digest = hashlib.sha256()
    if tokenizer is not None:
        digest.update(f"{type(tokenizer).__name__} {getattr(tokenizer, 'add_prefix_space', None)}\n".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix in _WEIGHT_SUFFIXES or path.name in ("config.json", "README.md") or ".cache" in path.parts:
            continue
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class Tokenized:
    """Model inputs of one split (unpadded features; see :class:`hpsearch.tasks.Features`)."""

    tokens: Features
    key: str
    from_cache: bool

    @property
    def features(self) -> FeatureTable:
        return self.tokens.rows

    def __len__(self) -> int:
        return len(self.tokens.rows)

    def lengths(self) -> list[int]:
        """Tokens of each feature."""
        return self.tokens.rows.lengths()

    def example_lengths(self) -> list[int]:
        """Tokens of each example (all its windows)."""
        lengths = self.lengths()
        if self.tokens.windows is None:
            return lengths
        return [sum(lengths[f] for f in window) for window in self.tokens.windows]


class TokenCache:
    """On-disk cache under ``root``; ``passes`` counts the tokenizations this object actually ran."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.passes = 0

    def has(self, split: Split, task: Task, tokenizer_key: str, max_length: int) -> bool:
        """Whether :meth:`tokenize` would read ``split`` from the cache (no tokenizing)."""
        return (self.root / _cache_key(split.fingerprint, tokenizer_key, max_length, task.cache_key()) / "meta.json").is_file()

    def tokenize(self, split: Split, task: Task, tokenizer: Any, tokenizer_key: str, max_length: int) -> Tokenized:
        from filelock import FileLock

        key = _cache_key(split.fingerprint, tokenizer_key, max_length, task.cache_key())
        folder = self.root / key
        self.root.mkdir(parents=True, exist_ok=True)
        # One process tokenizes; the others wait on the lock and then read its result.
        with FileLock(str(folder) + ".lock"):
            if (folder / "meta.json").is_file():
                return Tokenized(_load(folder), key, from_cache=True)
            try:
                features = task.tokenize(split, tokenizer, max_length)
            except RowError as exc:
                raise split.row_error(exc) from None
            self.passes += 1
            _save_atomically(folder, features, {"task": task.cache_key(), "max_length": max_length, "rows": len(features.rows)})
        return Tokenized(features, key, from_cache=False)


def _cache_key(fingerprint: str, tokenizer_key: str, max_length: int, task: list[Any]) -> str:
    raw = json.dumps([_FORMAT_VERSION, fingerprint, tokenizer_key, max_length, task])
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def _save_atomically(folder: Path, features: Features, meta: dict[str, Any]) -> None:
    remove_left_behind(folder.parent, folder.name)  # a pass killed before its end (under the same lock, so not a live one's)
    tmp = Path(tempfile.mkdtemp(prefix=own_name(folder.name) + ".", dir=folder.parent))
    try:
        features.rows.save(tmp / _TABLE)
        (tmp / "meta.json").write_text(json.dumps({**meta, "windows": features.windows}), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> Features:
    windows = json.loads((folder / "meta.json").read_text(encoding="utf-8")).get("windows")
    return Features(FeatureTable.load(folder / _TABLE), windows)
