"""Tokenize each (data, tokenizer, max_length, task) once, on disk, shared by trials, folds and workers."""
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

IGNORE_INDEX = -100
"""Label of positions that carry no loss (special tokens, non-first subwords)."""
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt")
_FORMAT_VERSION = 1


def tokenizer_fingerprint(folder: Path) -> str:
    """Hash of a tokenizer's files in a model folder (weights are skipped: they do not change tokens)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix in _WEIGHT_SUFFIXES or path.name in ("config.json", "README.md") or ".cache" in path.parts:
            continue
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class Tokenized:
    """Model inputs of one split: a list of per-example feature dicts (unpadded)."""

    features: list[dict[str, list[int] | int | float]]
    key: str
    from_cache: bool

    def __len__(self) -> int:
        return len(self.features)

    def lengths(self) -> list[int]:
        return [len(f["input_ids"]) for f in self.features]  # type: ignore[arg-type]


class TokenCache:
    """On-disk cache under ``root``; ``passes`` counts the tokenizations this object actually ran."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.passes = 0

    def tokenize(self, split: Split, task: str, tokenizer: Any, tokenizer_key: str, max_length: int) -> Tokenized:
        from filelock import FileLock

        key = _cache_key(split.fingerprint, tokenizer_key, max_length, task)
        folder = self.root / key
        self.root.mkdir(parents=True, exist_ok=True)
        # One process tokenizes; the others wait on the lock and then read its result.
        with FileLock(str(folder) + ".lock"):
            if (folder / "meta.json").is_file():
                return Tokenized(_load(folder), key, from_cache=True)
            features = tokenize_split(split, task, tokenizer, max_length)
            self.passes += 1
            _save_atomically(folder, features, {"task": task, "max_length": max_length, "rows": len(features)})
        return Tokenized(features, key, from_cache=False)


def _cache_key(fingerprint: str, tokenizer_key: str, max_length: int, task: str) -> str:
    raw = json.dumps([_FORMAT_VERSION, fingerprint, tokenizer_key, max_length, task])
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def tokenize_split(split: Split, task: str, tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    cols = split.columns
    if task == "token-classification":
        encoded = tokenizer(cols["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        features = []
        for i, tags in enumerate(cols["tags"]):
            feature = {k: encoded[k][i] for k in encoded.keys()}
            feature["labels"] = align_labels(encoded.word_ids(i), tags)
            features.append(feature)
        return features
    pairs = cols.get("text_pair")
    encoded = tokenizer(cols["text"], pairs, truncation=True, max_length=max_length)
    return [
        {**{k: encoded[k][i] for k in encoded.keys()}, "labels": label} for i, label in enumerate(cols["label"])
    ]


def align_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """Tag of each word on its first subword; other subwords and special tokens are ignored."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE_INDEX if word is None or word == previous else tags[word])
        previous = word
    return labels


def _save_atomically(folder: Path, features: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    import datasets

    datasets.disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        datasets.Dataset.from_list(features).save_to_disk(str(tmp / "data"))
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> list[dict[str, Any]]:
    import datasets

    return datasets.load_from_disk(str(folder / "data")).to_list()
