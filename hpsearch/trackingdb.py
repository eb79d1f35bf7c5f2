"""Where MLflow keeps a study's runs: the tracking URI, a new SQLite database started from an empty one made once,
whether a tracking server or database can be reached now, and the MLflow UI's address for the study's runs.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Iterator

from hpsearch.errors import HpsearchError, first_line
from hpsearch.spec import StudySpec


def tracking_uri(spec: StudySpec) -> str:
    return spec.tracking.uri or f"sqlite:///{spec.out_dir / 'mlflow.db'}"


def seed_database(uri: str) -> None:
    """Start a new SQLite tracking database as a copy of an empty one, made once per MLflow version.

    Creating MLflow's tables (its schema migrations) takes about 2.5 s on 2 CPU cores, in every new
    study; copying a database that went through them takes under 0.1 s. The empty database is kept
    in the user's cache folder (``$XDG_CACHE_HOME/hpsearch``, else ``~/.cache/hpsearch``).
    """
    import os
    from importlib.metadata import version

    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///"):
        return
    target = Path(uri[len("sqlite:///"):])
    if target.exists():
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpsearch"
    template = cache / f"mlflow-{version('mlflow')}-empty.db"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(template) + ".lock"):
            if not template.is_file():
                staging = template.with_name(f"{template.stem}.{os.getpid()}.tmp")
                with quiet_logger("mlflow.store.db.utils"), quiet_logger("alembic"):
                    MlflowClient(tracking_uri=f"sqlite:///{staging}").search_experiments()
                os.replace(staging, template)
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):  # workers starting together: one copies, the others find it
            if not target.exists():
                staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                shutil.copyfile(template, staging)
                os.replace(staging, target)
    except OSError:
        return  # no cache folder to write to: MLflow creates the database itself, as it would anyway


def ui_command(spec: StudySpec) -> str:
    """The command that opens this study's results in the MLflow UI, and the page of its training runs (MLflow 3's UI
    opens an experiment on its GenAI overview unless the page asks for the model-training view)."""
    from hpsearch.summary import redact

    uri = tracking_uri(spec)
    page = runs_page(uri, experiment_name(spec))
    if uri.startswith(("http://", "https://")):
        return f"open {redact(uri).rstrip('/')}/{page} in a browser" if page else f"open {redact(uri)} in a browser (experiment {experiment_name(spec)!r})"
    command = f"mlflow ui --backend-store-uri {redact(uri)}"  # the password masked, as everywhere it is printed
    return f"{command}, then open http://127.0.0.1:5000/{page}" if page else command


def runs_page(uri: str, experiment: str) -> str | None:
    """The MLflow UI's address (after the server's) of the experiment's runs table; None when it cannot be looked up."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except (MlflowException, OSError):
        return None
    return f"#/experiments/{found.experiment_id}/runs?workflowType=machine_learning" if found else None


def experiment_name(spec: StudySpec) -> str:
    return spec.tracking.experiment or spec.name


def check_reachable(uri: str) -> None:
    """Stop at once where a tracking server or database cannot be reached (or a database turns the connection down), with
    the reason and the fix: MLflow's client retries each call for minutes (4 on a refused connection; about 100 s to open
    a database) and then fails with a traceback."""
    from hpsearch.summary import redact

    reason = unreachable(uri)
    if reason is not None:
        raise HpsearchError(f"tracking.uri {redact(uri)}: cannot reach the MLflow server ({reason}); start it or correct "
                            "tracking.uri, or set tracking: {enabled: false} to run without tracking")
    problem = database_problem(uri)
    if problem is not None:
        raise HpsearchError(f"tracking.uri {redact(uri)}: {problem}, or set tracking: {{enabled: false}} to run without tracking")


def database_problem(uri: str) -> str | None:
    """Why MLflow could not open a PostgreSQL or MySQL tracking database now, with the fix; None where it connects.
    MLflow tries for about 100 s, then fails with a traceback."""
    if not uri.startswith(("postgresql", "mysql")):
        return None
    from sqlalchemy import create_engine
    from sqlalchemy import exc as sa

    from hpsearch.storage import turned_down

    try:
        engine = create_engine(uri, connect_args={"connect_timeout": 10})
    except ImportError as exc:
        return f"the database driver is not installed ({exc}); install it"
    try:
        with engine.connect():
            return None
    except sa.DBAPIError as exc:
        said = turned_down(exc)
        if said is not None:
            return f"the database turned the connection down: {said}; create the database, or correct its name, the user or the password"
        return f"cannot reach the MLflow database ({first_line(exc.orig or exc)}); start it or correct tracking.uri"
    finally:
        engine.dispose()


def unreachable(uri: str) -> str | None:
    """Why the tracking server at ``uri`` cannot be reached now (a refused connection, say); None where it answers, or
    where ``uri`` is no server (a database file)."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=10)  # any answer, even a refusal, means a server is there
    except requests.RequestException as exc:
        cause = exc.args[0] if exc.args else exc
        return str(getattr(cause, "reason", cause)).rsplit(": ", 1)[-1]
    return None


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)
