from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

# No hub at test time: everything loads from local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import transformers  # noqa: E402

# Load reports and per-file progress bars are noise in test output.
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

from tinymodel import build_tiny_bert  # noqa: E402
from toydata import corpus  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a 2-layer, 32-wide random BERT and its tokenizer."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), corpus())


@pytest.fixture(scope="session")
def broken_bert(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """The tiny BERT with its weights file damaged: it validates (a config is there) and fails when a trial loads it."""
    import shutil

    folder = tmp_path_factory.mktemp("broken-bert") / "model"
    shutil.copytree(tiny_bert, folder)
    (folder / "model.safetensors").write_bytes(b"not a weights file")
    return folder


@pytest.fixture(scope="session")
def tiny_bert_4layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-4"), corpus(), layers=4)


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database on 127.0.0.1, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"hpsearch_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


class OtherWorkers:
    """Processes entered in the machine's worker registry, as the hpsearch workers of another shell or study would be."""

    def __init__(self) -> None:
        import subprocess

        self._popen = subprocess.Popen
        self.running: list = []

    def start(self) -> int:
        from hpsearch.workers import register

        process = self._popen([sys.executable, "-c", "import time; time.sleep(300)"])
        self.running.append(process)
        register(process.pid)
        return process.pid

    def stop(self) -> None:
        from hpsearch.workers import unregister

        while self.running:
            process = self.running.pop()
            process.kill()
            process.wait()
            unregister(process.pid)


@pytest.fixture
def other_workers():
    """Start registered stand-ins for other hpsearch workers with ``start()``; ``stop()`` (or the test's end) ends them."""
    workers = OtherWorkers()
    yield workers
    workers.stop()


@pytest.fixture
def torch_threads():
    """Puts back this process's torch threads, which a worker's share of the cores sets."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
