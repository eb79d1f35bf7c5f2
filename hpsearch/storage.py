"""Where a study's trials are stored: the embedded journal file, or a database its workers share.

A database can go away for a while (a restart, a failover, a dropped network link). Every call a
worker makes to a database storage goes through :class:`PatientStorage`, which waits and tries again
(1 s, 2 s, 4 s ... at most 30 s apart) while the database is unreachable, for at most
``search.storage_patience`` seconds in all; then the worker stops with :class:`StorageUnavailable`.
Trials already finished are in the database and safe; a trial that was running when the worker stopped
is recovered like the trial of a dead worker (run again) when a worker next starts.

A write whose connection drops after the database committed it but before it answered is sent again;
Optuna's writes are keyed by trial, so the repeat either does the same thing again or is refused.
"""
from __future__ import annotations

import functools
import time
import warnings
from typing import Any, Callable, Iterator

from hpsearch.errors import StorageUnavailable
from hpsearch.spec import StudySpec
from hpsearch.summary import redact

HEARTBEAT_SECONDS = 30
"""Heartbeat interval of database storages (see :func:`grace_period` for when a silent trial counts as dead)."""

FIRST_WAIT, LONGEST_WAIT = 1.0, 30.0


def normalise_storage_url(url: str) -> str:
    """'postgresql://' means psycopg2 to SQLAlchemy; use psycopg 3 (the 'postgres' extra) when psycopg2 is absent."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_storage(spec: StudySpec, say: Callable[..., None] | None = None) -> Any:
    """The configured Optuna storage, or the embedded journal file in the output folder.

    The journal file storage needs no server and is safe for several local worker processes
    (appends under a file lock), unlike SQLite, which reports 'database is locked' under contention.
    Database storages get Optuna's heartbeats, so a trial whose worker vanished is failed and retried,
    and ride out outages shorter than ``search.storage_patience``.
    """
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    from hpsearch.workers import MAX_RETRIES

    url = spec.search.storage
    if not url:
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(spec.out_dir / "optuna.journal")))
    url = normalise_storage_url(url)
    patience = Patience(spec.search.storage_patience, url, say)
    if url.startswith(("postgresql", "mysql")):
        with warnings.catch_warnings():  # heartbeats are marked experimental; they are what we rely on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            database = patience.call(RDBStorage, url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_SECONDS,
                                     grace_period=grace_period(spec.search.storage_patience),
                                     heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
    elif url.startswith("sqlite"):
        database = patience.call(RDBStorage, url, engine_kwargs={"connect_args": {"timeout": 60}})
    else:
        return optuna.storages.get_storage(url)
    return patient_storage_class()(optuna.storages.get_storage(database), patience)


def grace_period(patience: float) -> int:
    """Seconds without a heartbeat after which other workers fail a running trial and run it again.

    Longer than the patience: a worker that waits out an outage must not find, once the database is
    back, that the others gave its trial up in the meantime. A dead worker's trial waits that long too.
    """
    return int(max(4 * HEARTBEAT_SECONDS, patience + 2 * HEARTBEAT_SECONDS))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during (a few levels: chains can loop)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the database cannot be reached.

    Optuna wraps SQLAlchemy's errors in its own StorageInternalError, so the chain is followed.
    """
    from sqlalchemy import exc as sa

    return any(isinstance(e, (sa.OperationalError, sa.InterfaceError, sa.TimeoutError))
               or (isinstance(e, sa.DBAPIError) and e.connection_invalidated) for e in _chain(exc))


def lost_storage(exc: BaseException) -> StorageUnavailable | None:
    """The StorageUnavailable that ``exc`` came from, if any.

    Optuna's trial bookkeeping needs the storage too; when it is gone, Optuna's own follow-up error
    can hide ours, so the chain is searched.
    """
    return next((e for e in _chain(exc) if isinstance(e, StorageUnavailable)), None)


class Patience:
    """Calls a storage function again, with growing waits, while the database is unreachable."""

    def __init__(self, seconds: float, url: str, say: Callable[..., None] | None = None) -> None:
        self.seconds, self.where = seconds, redact(url)
        self.say = say or (lambda message, **fields: None)
        self.exhausted = False  # after one give-up, later calls fail at once instead of waiting again

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        waited, wait = 0.0, FIRST_WAIT
        while True:
            try:
                result = function(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - only unreachable-database errors are retried
                if not unreachable(exc):
                    raise
                if self.exhausted or waited >= self.seconds:
                    self.exhausted = True
                    raise StorageUnavailable(
                        f"the study storage {self.where} has been unreachable for more than {self.seconds:g} s "
                        f"({type(exc).__name__}: {_first_line(exc)}). Trials already finished are safe in it; "
                        f"run the same command again once the database is back (a trial that was running then runs again), "
                        f"or raise search.storage_patience to wait longer") from exc
                if waited == 0:
                    self.say(f"storage {self.where} unreachable ({type(exc).__name__}); retrying for up to {self.seconds:g} s",
                             event="storage", state="unreachable")
                pause = min(wait, self.seconds - waited)
                time.sleep(pause)
                waited, wait = waited + pause, min(2 * wait, LONGEST_WAIT)
            else:
                if waited:
                    self.exhausted = False
                    self.say(f"storage {self.where} reachable again after {waited:.0f} s; continuing",
                             event="storage", state="reachable", waited_seconds=waited)
                return result


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return (str(cause).strip().splitlines() or [""])[0][:200]


@functools.cache
def patient_storage_class() -> type:
    """A storage that forwards every call of Optuna's storage interfaces to another one, patiently.

    The class is built from the interfaces' method names, so a method Optuna adds is forwarded too.
    """
    from optuna.storages import BaseStorage
    from optuna.storages._heartbeat import BaseHeartbeat

    def forward(name: str) -> Callable[..., Any]:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return self._patience.call(getattr(self._inner, name), *args, **kwargs)

        method.__name__ = name
        return method

    def __init__(self: Any, inner: Any, patience: Patience) -> None:  # noqa: N807
        self._inner, self._patience = inner, patience

    def __getattr__(self: Any, name: str) -> Any:  # noqa: N807 - anything else (engine, url) is the inner storage's
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    names = {name for base in (BaseStorage, BaseHeartbeat) for name, value in vars(base).items()
             if callable(value) and not name.startswith("__")}
    namespace = {name: forward(name) for name in sorted(names)}
    beat = namespace["record_heartbeat"]

    def record_heartbeat(self: Any, trial_id: int) -> None:
        # Optuna's heartbeat thread does not catch errors: a give-up raised there would print a thread
        # traceback. A missed heartbeat is harmless; the trial's own next call meets the outage too
        # and stops the worker cleanly.
        try:
            beat(self, trial_id)
        except StorageUnavailable:
            pass

    namespace["record_heartbeat"] = record_heartbeat
    namespace.update(__init__=__init__, __getattr__=__getattr__, __doc__="An Optuna storage that rides out database outages.")
    return type("PatientStorage", (BaseStorage, BaseHeartbeat), namespace)


