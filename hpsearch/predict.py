"""``hpsearch predict``: batch inference with an exported model, one output row per input row."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from hpsearch.data.sources import SplitNotFound, load_source
from hpsearch.errors import DataError, HpsearchError
from hpsearch.export import METADATA
from hpsearch.spec import DataSource
from hpsearch.spec._files import column_names, csv_delimiter, data_format, other_separator
from hpsearch.tasks import get_task
from hpsearch.tasks.base import is_missing


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA
    if not path.is_file():
        raise HpsearchError(f"{model_dir} has no {METADATA}: it was not written by 'hpsearch export'; export the study first")
    return json.loads(path.read_text(encoding="utf-8"))


def _holds_splits(path: Path) -> bool:
    """Whether ``path`` is a folder that ``datasets`` saved from a DatasetDict (one folder per split)."""
    import datasets

    return (path / datasets.config.DATASETDICT_JSON_FILENAME).is_file()


def predict_file(model_dir: Path, input_path: Path, output_path: Path, batch_size: int = 32, delimiter: str | None = None,
                 say: Callable[[str], None] = lambda message: None, every: float = 10.0,
                 columns: dict[str, str] | None = None, split: str | None = None) -> tuple[int, list[int]]:
    """Predict every row of ``input_path`` and write ``output_path`` (.csv or .jsonl), one row per input row; returns the
    row count and the rows (from 0) left without a prediction because an input column is empty there.
    ``delimiter``: the field separator of a csv input, and of a csv output. ``say`` hears how far it is, at most once
    every ``every`` seconds. ``columns``: the input's column for a field the model reads (``{"text": "review"}``),
    where it is not the one the study trained on. ``split``: the split to read from a folder saved with ``datasets``'
    ``save_to_disk`` that holds several (default: ``train``, or the folder's only split)."""
    meta = read_metadata(model_dir)
    fields = meta["input_columns"]
    unknown = sorted(set(columns or {}) - set(fields))
    if unknown:
        known = ", ".join(f"{f} (the study's column {c!r})" for f, c in fields.items())
        raise HpsearchError(f"--column {unknown[0]}=...: {unknown[0]!r} is not a field the model reads; its fields are {known}")
    meta = {**meta, "input_columns": {**fields, **(columns or {})}}
    if output_path.suffix.lower() not in (".csv", ".jsonl"):
        raise HpsearchError(f"--output must end in .csv or .jsonl, got {output_path.name!r}")
    if output_path.is_dir():
        raise HpsearchError(f"--output {output_path} is a folder; give a file in it (predictions{output_path.suffix.lower()}, say)")
    output_path.parent.mkdir(parents=True, exist_ok=True)  # before the work: a file in the way stops it now, not after
    path = input_path.resolve()
    if not path.exists():
        raise DataError(f"--input {input_path}: no such file; check the path")
    fmt = data_format(path, None)
    if fmt is None:
        raise DataError(f"--input {input_path}: cannot tell the format from its suffix {path.suffix!r}; give a .csv, .tsv, .json, "
                        ".jsonl or .parquet file (a spreadsheet saved as csv, say), or a folder saved with datasets' save_to_disk")
    if split is not None and not _holds_splits(path):
        raise HpsearchError(f"--split {split}: --input {input_path} holds no splits (--split picks one from a folder saved with "
                            "datasets' save_to_disk from a DatasetDict); leave --split out")
    try:
        source = DataSource(path=path, delimiter=delimiter, split=split or "train")
    except ValidationError as exc:  # a separator of more than one character, or one for a json file
        raise HpsearchError(f"--delimiter {delimiter!r}: {exc.errors()[0]['msg']}") from None
    read = list(meta["input_columns"].values())  # the input columns, in the order of the fields
    separator = csv_delimiter(path, None, delimiter)
    header = column_names(path, "csv", delimiter=separator) if separator is not None else None
    if header is not None and separator is not None and any(c not in header for c in read):
        other = other_separator(header, separator)
        if other is not None:  # read with the wrong separator, the rows would not even parse
            raise DataError(f"the header of {input_path} reads as one column {header[0]!r}: the file separates its fields "
                            f"with {other!r}; pass --delimiter {other!r}")
    try:
        rows = load_source(source).to_list()
    except SplitNotFound as exc:
        if split is not None or len(exc.splits) != 1:
            raise DataError(f"--input {input_path} holds the splits {', '.join(exc.splits)}, not {source.split}; pick one with --split "
                            f"(--split {exc.splits[0]}, say)") from None
        rows = load_source(source.model_copy(update={"split": exc.splits[0]})).to_list()  # its only split: no doubt which is meant
    if not rows:
        raise DataError(f"{input_path} has no rows")
    missing = [c for c in read if c not in rows[0]]
    if missing:
        field = next(f for f, c in meta["input_columns"].items() if c == missing[0])
        raise DataError(f"{input_path} lacks the column(s) {missing} the model reads (columns: {list(rows[0])}); rename them, or name "
                        f"the column to read with --column {field}=NAME")
    blank = [any(_blank(row[c]) for c in read) for row in rows]
    empty, keep = [i for i, b in enumerate(blank) if b], [i for i, b in enumerate(blank) if not b]
    if not keep:
        raise DataError(f"every row of {input_path} has an empty {' or '.join(repr(c) for c in read)}: nothing to predict")
    predictions = get_task(meta["task"]).predict(str(model_dir), meta, [rows[i] for i in keep], batch_size,
                                                 done=_progress(len(keep), say, every))
    for row in rows:  # a row with an empty input keeps its place, with empty prediction fields
        row.update(dict.fromkeys(predictions[0]))
    for i, prediction in zip(keep, predictions):
        rows[i].update(prediction)
    _write(output_path, rows, delimiter or ",")
    return len(rows), empty


def _progress(total: int, say: Callable[[str], None], every: float) -> Callable[[int], None]:
    """A ``done`` callback that says how many of ``total`` rows are predicted, and how fast, every ``every`` seconds."""
    started = last = time.monotonic()

    def done(rows: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= every or (rows == total and now - started >= every):
            last = now
            say(f"predicted {rows:,} of {total:,} rows ({rows / max(now - started, 1e-9):.0f} rows/s)")

    return done


def _blank(value: Any) -> bool:
    """An input with nothing to predict from (predicting from the text 'None' would be a guess passed off as an answer)."""
    return is_missing(value) or (isinstance(value, list) and not value)


def _write(path: Path, rows: list[dict[str, Any]], delimiter: str = ",") -> None:
    """The rows to ``path`` (its folder made by :func:`predict_file` before the work)."""
    if path.suffix.lower() == ".jsonl":
        path.write_text("".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in rows)
