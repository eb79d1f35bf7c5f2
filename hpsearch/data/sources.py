"""Reading one split from a local file, a saved folder or the hub, with `datasets`."""
from __future__ import annotations

from pathlib import Path

from hpsearch.errors import DataError, cannot_write, first_line
from hpsearch.spec import DataSource, StudySpec
from hpsearch.spec._files import csv_delimiter, data_format


def load_source(source: DataSource, cache_dir: Path | None = None):  # -> datasets.Dataset
    """Load one split as a ``datasets.Dataset``. Errors name the file and the fix."""
    import datasets

    datasets.disable_progress_bars()
    if source.hub is not None:
        try:
            loaded = datasets.load_dataset(source.hub, source.config, split=source.split, cache_dir=_str(cache_dir))
        except Exception as exc:  # the hub raises many types; all mean the same to the user
            _refuse_full_disk(exc)
            said = " ".join(str(exc).split())
            raise DataError(f"cannot load hub dataset {source.hub!r} (split {source.split!r}): {said}; check its name, config "
                            "and split and the connection, or save the data to a file (or save_to_disk) and point the split's "
                            f"path at it{_offline_hint(exc)}") from exc
        return loaded
    path = source.path
    assert path is not None  # the spec guarantees exactly one source
    if not path.exists():
        raise DataError(f"data file not found: {path}; check the path in the study file")
    fmt = data_format(path, source.format)
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}; "
            "use .csv, .tsv, .json, .jsonl or .parquet, or set 'format' on the source"
        )
    try:
        if fmt == "disk":
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if source.split not in loaded:
                    raise SplitNotFound(f"{path} has splits {list(loaded)}, not {source.split!r}; set 'split' on the source", list(loaded))
                loaded = loaded[source.split]
            return loaded
        if fmt in ("csv", "json"):
            _check_utf8(path)
        if fmt in ("csv", "json") and not _has_rows(path, header=fmt == "csv"):
            raise DataError(f"{path} has no data rows; check the file (or the path in the study file)")
        delimiter = csv_delimiter(path, source.format, source.delimiter)
        kwargs = {"delimiter": delimiter} if delimiter not in (None, ",") else {}
        loaded = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=_str(cache_dir), **kwargs)  # csv, json, parquet
    except DataError:
        raise
    except Exception as exc:
        _refuse_full_disk(exc)
        quoting = f"; a field that holds the separator {delimiter!r} must be in double quotes" if fmt == "csv" and delimiter else ""
        root = _root(exc)  # where a library wraps the parser's error, the parser's says which line is wrong
        raise DataError(f"cannot read {path} as {fmt}: {first_line(root) or type(root).__name__}{quoting}; check the file's format") from exc
    if fmt == "csv" and SHIFTED_INDEX in loaded.column_names:  # every row had one field more than the header: its first became an index
        raise DataError(f"every data row of {path} has more fields than its header ({', '.join(c for c in loaded.column_names if c != SHIFTED_INDEX)}): "
                        f"a field that holds the separator {delimiter!r} must be in double quotes (a csv writer quotes it), or the "
                        "header lacks a column name")
    return loaded


class SplitNotFound(DataError):
    """A folder saved with ``save_to_disk`` holds several splits (``splits``), none of them the one asked for."""

    def __init__(self, message: str, splits: list[str]) -> None:
        super().__init__(message)
        self.splits = splits


SHIFTED_INDEX = "__index_level_0__"
"""The column a csv read gains when each of its rows has one field more than the header (pandas takes the first
field of each row for the index, and the index is kept)."""


def _refuse_full_disk(exc: BaseException) -> None:
    """A full (or read-only) disk where ``datasets`` keeps its copy of the data (the study's cache) is no fault of the data."""
    refused = cannot_write(exc)
    if refused is not None:
        raise refused from exc


def _root(exc: BaseException) -> BaseException:
    """The exception at the bottom of ``exc``'s chain: where a library wraps the parser's error, the parser's says
    which line is wrong."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def encoding_problems(spec: StudySpec) -> list[str]:
    """The study's local csv and JSON data files that are not UTF-8, each with the line of its first byte that is not
    and the fix, all at once (``validate`` lists them before it reads the data; ``run`` refuses each as it reads it)."""
    problems = []
    for split in ("train", "validation", "test"):
        source = getattr(spec.data, split)
        if source is not None and source.path is not None and source.path.is_file() and data_format(source.path, source.format) in ("csv", "json"):
            try:
                _check_utf8(source.path)
            except DataError as exc:
                problems.append(f"data.{split}: {exc}")
    return problems


def _check_utf8(path: Path) -> None:
    """Refuse a text file that is not UTF-8, naming the line of its first byte that is not (``datasets`` reads only
    UTF-8: a csv fails with a parser's message, and a JSON file loads and fails later, when a row is read)."""
    import codecs

    decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += exc.object[: exc.start].count(b"\n")
                utf16 = exc.object[:2] in (b"\xff\xfe", b"\xfe\xff") and line == 1
                convert = ("iconv -f utf-16 -t utf-8" if utf16 else "from Windows-1252 or Latin-1: iconv -f cp1252 -t utf-8")
                raise DataError(
                    f"{path} is not UTF-8 text{' (it is UTF-16)' if utf16 else ''}: line {line} holds the byte "
                    f"0x{exc.object[exc.start]:02x}; save the file as UTF-8 ({convert} {path.name} > utf8-{path.name}) and point "
                    "the study at that copy") from None
            line += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text: it ends inside a character; save the file as UTF-8") from None


def _has_rows(path: Path, header: bool) -> bool:
    """Whether a text file has a data row (after the header line for csv): reads two lines at most."""
    with path.open("rb") as handle:
        lines = [line for line in (handle.readline(), handle.readline()) if line.strip()]
    return len(lines) > (1 if header else 0)


def _offline_hint(exc: Exception) -> str:
    """Where the hub could not be reached: that a copy cached by an earlier run is read at once in offline mode (the hub
    client otherwise retries for about half a minute on every run before it falls back to that copy)."""
    from huggingface_hub import constants

    if isinstance(exc, ConnectionError) and not constants.HF_HUB_OFFLINE:
        return "; on a machine without a connection, HF_HUB_OFFLINE=1 reads a copy cached by an earlier run without waiting"
    return ""


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
