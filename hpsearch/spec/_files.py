"""What the files a spec points at hold, read cheaply: column names from a header, row counts, model
configs and weights files.

Used by ``validate`` (and every command that loads a spec) to report a missing column or a scope that
cannot apply before anything is trained. Nothing here reads a whole data set into memory.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SMALL_JSON = 64 << 20  # a JSON array file up to this size is parsed whole to find its columns


def data_format(path: Path, declared: str | None) -> str | None:
    if declared is not None:
        return "json" if declared == "jsonl" else declared
    return "disk" if path.is_dir() else _SUFFIXES.get(path.suffix.lower())


def csv_delimiter(path: Path, declared: str | None, delimiter: str | None) -> str | None:
    """The field separator of a csv source (``delimiter`` as the spec gives it); None when it is not a csv file."""
    if data_format(path, declared) != "csv":
        return None
    return delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")


def other_separator(header: list[str], delimiter: str) -> str | None:
    """The separator a csv file really uses when its header, cut at ``delimiter``, reads as one column that holds
    another one (a ';'-separated spreadsheet export read as commas, say); None otherwise."""
    if len(header) != 1:
        return None
    return next((c for c in ";\t|," if c != delimiter and c in header[0]), None)


def column_names(path: Path, fmt: str | None, split: str = "train", delimiter: str | None = None) -> list[str] | None:
    """The columns of a local data file or save_to_disk folder, from its header or schema; None when
    they cannot be told cheaply (the full load reports problems then)."""
    try:
        if fmt == "csv":  # utf-8-sig: spreadsheets write a byte-order mark, which the full load drops too
            with path.open(newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle, delimiter=delimiter or ","), None)
            return header
        if fmt == "json":
            return _json_columns(path)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if fmt == "disk":
            info = path / "dataset_info.json"
            if not info.is_file():
                info = path / split / "dataset_info.json"
            return list(json.loads(info.read_text(encoding="utf-8")).get("features", {})) if info.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError, StopIteration):
        return None  # unreadable: the full load says why, with the file's name
    except Exception:  # noqa: BLE001 - e.g. a parquet file pyarrow cannot read: the same
        return None
    return None


def _json_columns(path: Path) -> list[str] | None:
    with path.open(encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if isinstance(record, dict):  # JSON lines: the first record's keys
        return list(record)
    if path.stat().st_size > SMALL_JSON:
        return None
    whole = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(whole, list) and whole and isinstance(whole[0], dict):
        return list(whole[0])
    if isinstance(whole, dict):  # a column-oriented file, or {"data": [...]}
        inner = whole.get("data")
        if isinstance(inner, list) and inner and isinstance(inner[0], dict):
            return list(inner[0])
        return list(whole)
    return None


WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def has_weights(folder: Path) -> bool:
    """Whether a model folder holds a weights file that ``from_pretrained`` reads."""
    return any((folder / name).is_file() for name in WEIGHTS_FILES)


def no_weights(folder: Path) -> str | None:
    """What is wrong with a model folder that holds no weights file, with the fix; None when it holds one."""
    if has_weights(folder):
        return None
    return f"no weights file in {folder} (looked for {', '.join(WEIGHTS_FILES)}); save the model there with save_pretrained"


def model_config(folder: Path) -> dict[str, Any] | None:
    """A model folder's config.json as a mapping, or None."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def layer_count(config: dict[str, Any]) -> int | None:
    """Blocks in a model's stack as its config says (num_hidden_layers, or n_layer / n_layers)."""
    for key in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
