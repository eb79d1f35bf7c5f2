"""The embedded storage: Optuna's journal file, the lock its writers take, and what a write cut short leaves.

Every process that writes the journal appends under Optuna's lock, a link beside the file
(``optuna.journal.lock``) that the writer makes before its record and removes after it. A process
killed in between (kill -9, out of memory) leaves the link behind, and Optuna's lock waits 30 s (its
grace period) before it takes a link that nobody will remove: every worker of the study would stand
still that long. :class:`JournalLock` takes the same link, so Optuna's other clients of the file
(optuna-dashboard, the ``optuna`` command) still wait for hpsearch's writes and hpsearch for theirs,
and knows a link left by one of its own processes on this machine that ended: it takes that one over
at once.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileSymlinkLock

from hpsearch.errors import HpsearchError
from hpsearch.workers import HOST, PID_SPACE, alive, seen_here

try:
    import fcntl
except ImportError:  # Windows has no fcntl: there every writer waits as Optuna's lock waits
    fcntl = None  # type: ignore[assignment]


class JournalLock(JournalFileSymlinkLock):
    """Optuna's link lock on the journal, taken by hpsearch's processes one at a time under an operating-system lock
    on a file beside it (``<journal>.writer``), which the system releases when its holder ends, however it ends.

    While it holds the link, the holder names itself in that file (host, PID namespace, process id) and empties it
    after. So a process that has the system lock and finds the link there, named by a process of this machine that has
    ended, knows the link was left in the middle of a write: it takes it over. A link the file does not name so (another
    Optuna client's, or a writer's on another machine sharing the file) is waited for as Optuna waits.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._writer = path + ".writer"
        self._guard: int | None = None

    def acquire(self) -> bool:
        if fcntl is None:
            return super().acquire()
        guard = os.open(self._writer, os.O_RDWR | os.O_CREAT, 0o666)  # made as the journal is: the umask says who may write
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if os.path.lexists(self._lock_file) and _ended_here(os.pread(guard, 512, 0)):
                os.unlink(self._lock_file)
            super().acquire()
            os.ftruncate(guard, 0)
            os.pwrite(guard, json.dumps({"host": HOST, "pid_space": PID_SPACE, "pid": os.getpid()}).encode(), 0)
        except BaseException:
            os.close(guard)  # closing releases the system lock
            raise
        self._guard = guard
        return True

    def release(self) -> None:
        guard, self._guard = self._guard, None
        try:
            super().release()
        finally:
            if guard is not None:
                os.ftruncate(guard, 0)
                os.close(guard)


def _ended_here(holder: bytes) -> bool:
    """Whether ``holder`` (what a :class:`JournalLock` writes while it holds the link, named as a trial names its worker)
    names a process of this machine that has ended."""
    try:
        named = json.loads(holder)
    except ValueError:  # empty: no hpsearch process holds the link
        return False
    return isinstance(named, dict) and isinstance(named.get("pid"), int) and seen_here(named) and not alive(named["pid"])


def journal_storage(path: Path) -> Any:
    """Optuna's journal file storage at ``path`` under a :class:`JournalLock`, its torn last record cut off first
    (:func:`cut_torn_record`)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    lock = JournalLock(str(path))  # the lock Optuna's backend takes to append: no record is being written meanwhile
    backend = JournalFileBackend(str(path), lock_obj=lock)
    if not _ends_a_record(path):
        lock.acquire()
        try:
            cut_torn_record(path)
        finally:
            lock.release()
    try:
        return JournalStorage(backend)  # reads every record
    except ValueError as exc:  # a line that is no record (Optuna raises json's error, or "Invalid log format.")
        raise HpsearchError(_damaged_journal(path, exc)) from None


def _damaged_journal(path: Path, exc: ValueError) -> str:
    """What is wrong with a journal that Optuna cannot read, and how to mend it."""
    with path.open("rb") as journal:
        for number, line in enumerate(journal, start=1):
            try:
                json.loads(line)
                continue
            except ValueError:
                pass
            start = line.find(b'{"op_code"', 1)
            if start > 0:  # the tail of a write cut short, then a whole record appended after it
                return (f"the study's journal {path} cannot be read: line {number} starts with {start} bytes of a record cut short "
                        f"(a full disk or a process killed while writing), then a whole record; keep a copy of the file, delete "
                        f"those first {start} bytes of the line (up to '{{\"op_code\"'), and run the same command again")
            return (f"the study's journal {path} cannot be read: line {number} is not a whole record ({line[:60]!r}...); keep a copy "
                    "of the file, then mend or delete that line and run the same command again")
    return f"the study's journal {path} cannot be read ({exc}); keep a copy of the file and look at its last lines"


def _ends_a_record(path: Path) -> bool:
    """Whether the journal at ``path`` is empty or ends with a whole record (each is one line)."""
    with path.open("rb") as journal:
        size = journal.seek(0, os.SEEK_END)
        if size == 0:
            return True
        journal.seek(size - 1)
        return journal.read(1) == b"\n"


def cut_torn_record(path: Path) -> int:
    """Cut off the journal's last line where it is not whole, and return the bytes cut: a write that a full disk or a
    killed process cut short. Optuna skips such a line when it reads the journal, but appends the next record right
    after it, and the two then make one line it cannot read: every later read of the study fails. Call it under the
    journal's lock (a record being written by another process would look torn)."""
    with path.open("r+b") as journal:
        size = end = journal.seek(0, os.SEEK_END)
        while end > 0:  # back to the last newline, a block at a time
            start = max(0, end - (1 << 16))
            journal.seek(start)
            newline = journal.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            journal.truncate(end)
        return size - end
