"""Errors raised by hpsearch. Every message names the problem and the fix."""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any


class HpsearchError(Exception):
    """Base class of every error hpsearch raises on purpose."""


class SpecError(HpsearchError):
    """The study spec is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[str], source: str | None = None, header: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        header = header or f"{count} problem{'s' if count != 1 else ''} found{where}:"
        super().__init__("\n".join([header, *(f"  - {p}" for p in self.problems)]))


class DataError(HpsearchError):
    """The data cannot be loaded or does not fit the task."""


class RowError(DataError):
    """A problem with one row of a split, and the other rows (``more``) that have it too. Rows count as the task read
    them, from 0: after a subsample they are not the file's, so :func:`hpsearch.data.prepare.prepare_data` names the
    file's rows instead."""

    def __init__(self, split: str, row: int, problem: str, where: str | None = None, more: Sequence[int] = (),
                 like: str = "this problem") -> None:
        self.split, self.row, self.problem, self.where, self.more, self.like = split, row, problem, where, tuple(more), like
        prefix, counted = (f"{where}: " if where else ""), (" (counting data rows from 0)" if where is not None else "")
        super().__init__(f"{prefix}{split} row {row}{counted}: {problem}{_others(self.more, like)}")

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:  # pickled (across processes) with its fields
        return RowError, (self.split, self.row, self.problem, self.where, self.more, self.like)

    def in_source(self, rows: list[int] | None, where: str) -> RowError:
        """The same problem, named by its rows in the data source ``where``: ``rows`` holds the source's row of each row
        the task read (None: they are the same)."""
        def source(row: int) -> int:
            return row if rows is None else rows[row]

        return RowError(self.split, source(self.row), self.problem, where, sorted(map(source, self.more)), self.like)


def row_list(rows: Sequence[int], shown: int = 10) -> str:
    """The first ``shown`` of ``rows`` in words, then how many more ('3, 9, 17'; '0, 1, ..., 9 and 4 more')."""
    return ", ".join(map(str, rows[:shown])) + (f" and {len(rows) - shown} more" if len(rows) > shown else "")


def _others(rows: tuple[int, ...], like: str) -> str:
    """The rows besides the one a RowError names, in words (empty where there are none)."""
    if not rows:
        return ""
    return f" ({len(rows)} more row{'s' if len(rows) != 1 else ''} {'have' if len(rows) != 1 else 'has'} {like}: {row_list(rows)})"


class DataProblems(DataError):
    """Several problems with the data, found one check after another (see :class:`Gathered`), said together."""

    def __init__(self, problems: Sequence[DataError]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join([f"{len(self.problems)} problems with the data:", *(f"  - {p}" for p in self.problems)]))

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return DataProblems, (self.problems,)


_GATHERING: contextvars.ContextVar[list[DataError] | None] = contextvars.ContextVar("hpsearch_gathering", default=None)


class Gathered:
    """The data's problems, gathered over checks that can each run on their own, so that one run names them all rather
    than one run per problem.

    Inside :meth:`each`, :func:`refuse_rows` records its rows' problem and lets the check go on, and a ``DataError`` the
    block raises is recorded and ends the block; any other error after a problem was recorded is taken for its
    consequence (the code went on with rows it had refused) and ends the block too."""

    def __init__(self) -> None:
        self.problems: list[DataError] = []

    @contextlib.contextmanager
    def each(self, mend: Callable[[DataError], DataError] = lambda problem: problem) -> Iterator[None]:
        """Run the block gathering its problems, each passed through ``mend`` (which may say where its rows are)."""
        before = len(self.problems)
        token = _GATHERING.set(self.problems)
        try:
            yield
        except DataError as exc:
            self.problems.extend(exc.problems if isinstance(exc, DataProblems) else [exc])
        except Exception:
            if len(self.problems) == before:
                raise
        finally:
            _GATHERING.reset(token)
            self.problems[before:] = [mend(problem) for problem in self.problems[before:]]

    def raise_any(self) -> None:
        """Raise what was gathered: one problem as itself, several as :class:`DataProblems`."""
        if len(self.problems) == 1:
            raise self.problems[0]
        if self.problems:
            raise DataProblems(self.problems)


def refuse_rows(split: str, problems: Iterable[tuple[int, str]], like: str = "this problem") -> None:
    """Raise a RowError for the first of ``problems`` ((row, problem) pairs, in row order) that names every other row
    with one too, so that a file with many bad rows is fixed in one pass rather than one run per row. ``like`` says
    what the other rows have, where their problems differ in detail (the value found, say). Inside
    :meth:`Gathered.each` the error is recorded instead, and the caller goes on."""
    found = iter(problems)
    first = next(found, None)
    if first is None:
        return
    error = RowError(split, first[0], first[1], more=[row for row, _ in found], like=like)
    gathering = _GATHERING.get()
    if gathering is None:
        raise error
    gathering.append(error)


class TrialError(HpsearchError):
    """A trial could not be trained; the message is recorded as the trial's failure reason."""


class ModelUnavailable(TrialError):
    """A candidate's files cannot be had or read (package, hub, config, weights, tokenizer): every trial of it fails so."""


class OutOfMemory(TrialError):
    """A fit ran out of GPU memory; a smaller batch may fit."""


class StudyNotRun(HpsearchError):
    """A command that reads a study found none: it has not run yet (no journal, or no study of its name in the storage)."""


class StorageUnavailable(HpsearchError):
    """The study's storage database stayed unreachable for longer than ``search.storage_patience``."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class CannotWrite(HpsearchError):
    """The system refused to write (a full disk or quota, a read-only disk, a path without permission): no trial is to
    blame, so the work stops, and a trial it stopped runs again once the write can be made (see :func:`cannot_write`).
    ``reason``: the refusal in a few words (a trial it stopped records it)."""

    exit_code = 73  # EX_CANTCREAT: an output file cannot be created
    at = ": {}"
    fix = "make that folder writable for this user, or set output_dir to a folder it can write"

    def __init__(self, reason: str, path: str | None, kept: str, fix: str | None = None) -> None:
        self.reason, self.kept = reason, kept
        where = self.at.format(path) if path else ""
        super().__init__(f"{reason}{where}: {fix or self.fix}, then run the same command again; {kept}")


class DiskFull(CannotWrite):
    """The disk (or the user's quota) is full."""

    at = " writing {}"
    fix = "free some space, or set output_dir to a disk with room"


FULL_DISK_TEXTS = ("No space left on device", "os error 28", "Disk quota exceeded", "database or disk is full", "Not enough disk space")
"""How a full disk reads in errors that carry no errno: safetensors' (written in Rust), SQLite's and ``datasets``' (its check
of the free space before it writes a copy of the data)."""
READ_ONLY_TEXTS = ("attempt to write a readonly database",)
"""How a refused write reads in SQLite's errors, which carry no errno."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message ("" for none): what an error a library raised says, without its details."""
    return (str(exc).strip().splitlines() or [""])[0]


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during (a few levels: chains can loop)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def file_in_the_way(path: str | None) -> str | None:
    """The file that ``path``, or the nearest folder above it that exists, is: where a folder at ``path`` could not be
    made. None where that is a folder (or for no path)."""
    from pathlib import Path

    if not path:
        return None
    there = next((p for p in (Path(path), *Path(path).parents) if p.exists()), None)
    return None if there is None or there.is_dir() else str(there)


def cannot_write(exc: BaseException, kept: str = "what was finished is kept") -> CannotWrite | None:
    """The refused write behind ``exc`` (itself, or what it was raised from or during), said with the fix and what is
    ``kept``; None where there is none. Data and model files are read behind errors of their own: a refusal that gets
    here is a write (results, caches, the study's storage, the export)."""
    import errno

    for e in exception_chain(exc):
        if isinstance(e, CannotWrite):  # already said (by the study's storage, say), under a library's own error
            return e
        number = e.errno if isinstance(e, OSError) else None
        path = (getattr(e, "filename2", None) or getattr(e, "filename", None)) if number is not None else None  # a link or a move: the path made
        if number in (errno.ENOSPC, errno.EDQUOT) or (number is None and any(text in str(e) for text in FULL_DISK_TEXTS)):
            return DiskFull("no space left on the device", path, kept)
        if number in (errno.EACCES, errno.EPERM, errno.EROFS):
            return CannotWrite((e.strerror or "refused").lower(), path, kept)
        if number is None and any(text in str(e) for text in READ_ONLY_TEXTS):
            return CannotWrite("read-only database", None, kept)
        blocker = file_in_the_way(path) if number in (errno.EEXIST, errno.ENOTDIR) else None
        if blocker is not None:
            return CannotWrite("a file is where a folder is to be made", blocker, kept, fix="move that file, or choose another folder")
    return None
