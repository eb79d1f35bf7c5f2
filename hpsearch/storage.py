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
from pathlib import Path
from typing import Any, Callable

from hpsearch.errors import CannotWrite, DiskFull, HpsearchError, StorageUnavailable, cannot_write, exception_chain, file_in_the_way, first_line
from hpsearch.spec import StudySpec
from hpsearch.summary import redact

HEARTBEAT_SECONDS = 30
"""Heartbeat interval of database storages (see :func:`grace_period` for when a silent trial counts as dead)."""

FIRST_WAIT, LONGEST_WAIT = 1.0, 30.0


def normalise_storage_url(url: str) -> str:
    """The SQLAlchemy URL for a storage URL as users write it.

    'postgres://' (Heroku, psql and most hosting panels write it so) means PostgreSQL; 'postgresql://'
    means psycopg2 to older SQLAlchemy versions: use psycopg 3 (the 'postgres' extra) when psycopg2 is absent.
    """
    import importlib.util

    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def storage_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be used as a study storage (it does not parse, or its driver is missing), else None.

    Checked without connecting, so ``validate`` can say it at once.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = redact(url)
    try:
        dialect = make_url(normalise_storage_url(url)).get_dialect()
    except NoSuchModuleError:  # a subclass of ArgumentError: first
        scheme = url.split(":", 1)[0]
        return (f"search.storage: unknown database kind {scheme!r} in {shown!r}; use postgresql://, mysql+pymysql:// "
                f"or sqlite:///, or remove search.storage for the embedded storage")
    except ArgumentError:
        return (f"search.storage: {shown!r} is not a database URL; write e.g. postgresql://user:password@host:5432/db, "
                f"mysql+pymysql://user:password@host/db or sqlite:///path/study.db, or remove it for the embedded storage")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        fix = "pip install 'hpsearch[postgres]'" if dialect.name == "postgresql" else f"install the Python driver for {dialect.name}"
        return f"search.storage: the database driver for {shown!r} is not installed ({exc}); {fix}"
    if dialect.name == "sqlite":
        return _sqlite_folder_problem(make_url(url).database)
    return None


def _sqlite_folder_problem(database: str | None) -> str | None:
    """Where a SQLite database's folder is not there: SQLite's error reads like a database out of reach, which a
    worker would wait for (``storage_patience``); a relative path (three slashes) starts at the working folder."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    folder = path.absolute().parent
    if folder.is_dir():
        return None
    blocker = file_in_the_way(str(folder))
    if blocker is None:
        what, fix = "does not exist", "create it"
    else:
        what, fix = ("is a file" if blocker == str(folder) else f"cannot be made ({blocker} is a file)"), "move that file"
    if path.is_absolute():
        return f"search.storage: the folder {folder} of the SQLite database {database} {what}; {fix}, or correct the path"
    return (f"search.storage: sqlite:///{database} names {database} relative to the folder the command runs in ({Path.cwd()}), "
            f"and {folder} {what}; {fix}, or write four slashes for an absolute path (sqlite:////{database} is /{database})")


def make_storage(spec: StudySpec, say: Callable[..., None] | None = None, read_only: bool = False) -> Any:
    """The configured Optuna storage, or the embedded journal file in the output folder.

    The journal file storage needs no server and is safe for several local worker processes
    (appends under a file lock), unlike SQLite, which reports 'database is locked' under contention.
    Database storages get Optuna's heartbeats, so a trial whose worker vanished is failed and retried,
    and ride out outages shorter than ``search.storage_patience``. ``read_only`` commands (status,
    report, export) do not wait: an unreachable database is an error at once, with its reason.
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from hpsearch.journal import journal_storage
    from hpsearch.workers import MAX_RETRIES

    url = spec.search.storage
    if not url:
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        return journal_storage(spec.out_dir / "optuna.journal")
    problem = storage_url_problem(url)
    if problem:
        raise HpsearchError(problem)
    patience = Patience(0 if read_only else spec.search.storage_patience, url, say, read_only=read_only)  # says the URL as written
    url = normalise_storage_url(url)
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        patience.file = make_url(url).database
    try:
        if url.startswith(("postgresql", "mysql")):
            engine: dict[str, Any] = {"pool_pre_ping": True}
            if read_only and url.startswith("postgresql"):
                engine["connect_args"] = {"connect_timeout": 5}  # a host that drops packets would hang for minutes
            # Workers started together on an empty database would all create Optuna's tables at once
            # (a unique-constraint error for all but one): one at a time, under a lock in the database.
            schema = DatabaseLock(url, "hpsearch-schema", patience, engine.get("connect_args"))
            schema.acquire()
            try:
                with warnings.catch_warnings():  # heartbeats are marked experimental; they are what we rely on
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    database = patience.call(RDBStorage, url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                                             grace_period=grace_period(spec.search.storage_patience),
                                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
            finally:
                schema.release()
        else:
            database = patience.call(RDBStorage, url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {})
    except HpsearchError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else the database says is a setting to fix, not a crash
        raise HpsearchError(f"cannot open the study storage {redact(url)}: {type(exc).__name__}: {_first_line(exc)}; "
                            "check search.storage (or --storage)") from exc
    return patient_storage_class()(optuna.storages.get_storage(database), patience)


def grace_period(patience: float) -> int:
    """Seconds without a heartbeat after which other workers fail a running trial and run it again.

    Longer than the patience: a worker that waits out an outage must not find, once the database is
    back, that the others gave its trial up in the meantime. A dead worker's trial waits that long too.
    """
    return int(max(4 * HEARTBEAT_SECONDS, patience + 2 * HEARTBEAT_SECONDS))


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the database cannot be reached.

    Optuna wraps SQLAlchemy's errors in its own StorageInternalError, so the chain is followed.
    """
    from sqlalchemy import exc as sa

    return any(isinstance(e, (sa.OperationalError, sa.InterfaceError, sa.TimeoutError))
               or (isinstance(e, sa.DBAPIError) and e.connection_invalidated) for e in exception_chain(exc))


TURNED_DOWN = (r'database "[^"]*" does not exist', r'role "[^"]*" does not exist', r'password authentication failed for user "[^"]*"',
               r'no pg_hba\.conf entry for host [^,]*, user "[^"]*", database "[^"]*"', r'(?:Peer|Ident) authentication failed for user "[^"]*"',
               r"Unknown database '[^']*'", r"Access denied for user '[^']*'@'[^']*'")
"""How PostgreSQL and MySQL say they answered and turned the connection down (no such database or user, a wrong password,
a host the server does not admit): settings to correct, which waiting would not mend."""


def turned_down(exc: BaseException) -> str | None:
    """What the database server said where it turned the connection down (see :data:`TURNED_DOWN`), else None."""
    import re

    for e in exception_chain(exc):
        found = next((m.group(0) for pattern in TURNED_DOWN if (m := re.search(pattern, str(e)))), None)
        if found is not None:
            return found
    return None


def lost_storage(exc: BaseException) -> StorageUnavailable | None:
    """The StorageUnavailable that ``exc`` came from, if any.

    Optuna's trial bookkeeping needs the storage too; when it is gone, Optuna's own follow-up error
    can hide ours, so the chain is searched.
    """
    return next((e for e in exception_chain(exc) if isinstance(e, StorageUnavailable)), None)


class Patience:
    """Calls a storage function again, with growing waits, while the database is unreachable."""

    def __init__(self, seconds: float, url: str, say: Callable[..., None] | None = None, read_only: bool = False) -> None:
        self.seconds, self.where, self.read_only = seconds, redact(url), read_only
        self.say = say or (lambda message, **fields: None)
        self.exhausted = False  # after one give-up, later calls fail at once instead of waiting again
        self.file: str | None = None  # a SQLite database's file (set by make_storage)

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        waited, wait = 0.0, FIRST_WAIT
        while True:
            try:
                result = function(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - only unreachable-database errors are retried
                if (refused := self.refused(exc)) is not None:  # a full or read-only disk: waiting would not help
                    raise refused from exc
                if not unreachable(exc):
                    raise
                if (said := turned_down(exc)) is not None:  # the server answered: no such database or user, or a wrong password
                    raise HpsearchError(f"the study storage {self.where} turned the connection down: {said}; create the database, "
                                        "or correct its name, the user or the password in search.storage (or --storage), then run "
                                        "the same command again") from exc
                if self.read_only:
                    raise HpsearchError(f"cannot reach the study storage {self.where}: {_first_line(exc)}; "
                                        "check that the database is running and the host, port and credentials in "
                                        "search.storage (or --storage) are right") from exc
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

    def refused(self, exc: BaseException) -> CannotWrite | None:
        """The write that the storage's disk refused behind ``exc`` (full, or read-only), said with the storage and the
        fix; None where there is none. SQLite says it as an OperationalError, which would otherwise read as the
        database being out of reach: the worker waited out its patience before it stopped."""
        refused = cannot_write(exc, kept="the finished trials are kept in it, and a trial it stopped runs again")
        if refused is None:
            return None
        full = isinstance(refused, DiskFull)
        if self.file is not None:
            fix = ("free some space on that disk, or move search.storage to a disk with room" if full
                   else "make that file and its folder writable for this user")
        else:
            fix = "free some space on the database server's disk" if full else "let this database user write to the study's database"
        return type(refused)(refused.reason, self.file or self.where, refused.kept, fix)


def _first_line(exc: BaseException) -> str:
    return first_line(exc.__cause__ or exc)[:200]


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


class DatabaseLock:
    """A lock that every worker of a study sees, on any machine: an advisory lock in the study's database.

    PostgreSQL's ``pg_advisory_lock`` and MySQL's ``GET_LOCK`` belong to one connection; if the worker
    dies, the database closes its connection and the lock is free again. Same interface as ``FileLock``.
    """

    def __init__(self, url: str, key: str, patience: Patience, connect_args: dict[str, Any] | None = None) -> None:
        import hashlib

        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool  # one connection per lock, closed when it is given back

        self._engine = create_engine(normalise_storage_url(url), poolclass=NullPool, connect_args=connect_args or {})
        self._mysql = self._engine.dialect.name.startswith(("mysql", "mariadb"))
        self._key = key
        # pg_advisory_lock takes a signed 64-bit number: the first 63 bits of a hash of the key.
        self._number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1
        self._patience = patience
        self._connection: Any = None

    @property
    def is_locked(self) -> bool:
        return self._connection is not None

    def _statement(self, connection: Any, take: bool) -> None:
        """Take or give back the lock on ``connection``."""
        from sqlalchemy import text

        if self._mysql:
            sql, values = ("SELECT GET_LOCK(:key, -1)" if take else "SELECT RELEASE_LOCK(:key)"), {"key": self._key[:64]}
        else:
            sql, values = ("SELECT pg_advisory_lock(:n)" if take else "SELECT pg_advisory_unlock(:n)"), {"n": self._number}
        connection.execute(text(sql), values)
        connection.commit()

    def acquire(self) -> None:
        def take() -> Any:
            connection = self._engine.connect()
            try:
                self._statement(connection, take=True)
            except BaseException:
                connection.close()
                raise
            return connection

        if self._connection is None:
            self._connection = self._patience.call(take)

    def release(self, force: bool = False) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            self._statement(connection, take=False)
        except Exception:  # noqa: BLE001 - a lost connection has released the lock on the server already
            pass
        finally:
            connection.close()


def claim_lock(spec: StudySpec, say: Callable[..., None] | None = None) -> Any:
    """The lock under which a worker checks the study for room and starts a trial.

    Database storages lock in the database (every machine sees it); the embedded journal and SQLite,
    which live in one machine's files, use a lock file beside them.
    """
    from filelock import FileLock

    url = spec.search.storage
    if url and normalise_storage_url(url).startswith(("postgresql", "mysql")):
        return DatabaseLock(url, f"hpsearch-claim:{spec.name}", Patience(spec.search.storage_patience, url, say))
    if url and url.startswith("sqlite:///"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:":
            return FileLock(f"{database}.claim.lock")
    return FileLock(str(spec.out_dir / "claim.lock"))
