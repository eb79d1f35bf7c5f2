"""Errors raised by hpsearch. Every message names the problem and the fix."""
from __future__ import annotations


class HpsearchError(Exception):
    """Base class of every error hpsearch raises on purpose."""


class SpecError(HpsearchError):
    """The study spec is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} found{where}:"
        super().__init__("\n".join([header, *(f"  - {p}" for p in self.problems)]))


class DataError(HpsearchError):
    """The data cannot be loaded or does not fit the task."""


class TrialError(HpsearchError):
    """A trial could not be trained; the message is recorded as the trial's failure reason."""


class OutOfMemory(TrialError):
    """A fit ran out of GPU memory; a smaller batch may fit."""


class StorageUnavailable(HpsearchError):
    """The study's storage database stayed unreachable for longer than ``search.storage_patience``."""

    exit_code = 75  # EX_TEMPFAIL: try again later
