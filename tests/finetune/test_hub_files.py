"""A hub model is fetched with only the files a fine-tune reads, never every format its repository holds."""
from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import pytest

from hpsearch.finetune.modeling import model_dir
from hpsearch.spec import Candidate

OTHER_FORMATS = ["tf_model.h5", "flax_model.msgpack", "rust_model.ot", "onnx/model.onnx", "coreml/model.mlmodel"]


def _hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repository: Path) -> list[str]:
    """Serve ``repository`` as the hub would: snapshot_download fetches the files its patterns match, into one folder."""
    import huggingface_hub

    import hpsearch.finetune.modeling as modeling

    monkeypatch.setattr(modeling, "_HUB_FOLDERS", {})  # what an earlier test fetched under the same name
    fetched: list[str] = []
    snapshot = tmp_path / "snapshot"

    def snapshot_download(repo_id: str, *, revision: str | None = None, allow_patterns: list[str] | None = None,
                          local_files_only: bool = False, **_: object) -> str:
        if local_files_only:  # the cache: what was fetched before
            if not fetched:
                from huggingface_hub.errors import LocalEntryNotFoundError

                raise LocalEntryNotFoundError("not in the cache")
            return str(snapshot)
        for file in repository.rglob("*"):
            name = file.relative_to(repository).as_posix()
            if file.is_file() and (allow_patterns is None or any(fnmatch.fnmatch(name, p) for p in allow_patterns)):
                (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(file, snapshot / name)
                fetched.append(name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return fetched


def _repository(tmp_path: Path, model: Path, pickles_only: bool = False) -> Path:
    repository = tmp_path / "repository"
    shutil.copytree(model, repository)
    for name in OTHER_FORMATS:
        (repository / name).parent.mkdir(parents=True, exist_ok=True)
        (repository / name).write_bytes(b"weights in another format")
    if pickles_only:
        (repository / "model.safetensors").rename(repository / "pytorch_model.bin")
    else:
        (repository / "pytorch_model.bin").write_bytes(b"the same weights, pickled")
    return repository


def test_a_hub_model_is_fetched_without_other_formats(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched = _hub(monkeypatch, tmp_path, _repository(tmp_path, tiny_bert))
    folder = model_dir(Candidate(name="m", hub="org/tiny"))
    count = len(fetched)
    assert model_dir(Candidate(name="m2", hub="org/tiny")) == folder and len(fetched) == count  # asked once per process
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not set(fetched) & {*OTHER_FORMATS, "pytorch_model.bin"}, fetched
    assert {p.name for p in tiny_bert.iterdir()} <= set(fetched)  # config, tokenizer files and weights: all there


def test_a_hub_model_with_pickled_weights_only_gets_them(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched = _hub(monkeypatch, tmp_path, _repository(tmp_path, tiny_bert, pickles_only=True))
    folder = model_dir(Candidate(name="m", hub="org/tiny"))
    assert (folder / "pytorch_model.bin").is_file() and not set(fetched) & set(OTHER_FORMATS), fetched


def test_a_run_says_when_it_fetches_a_hub_model(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download takes minutes and the libraries' own bars are off: the check before the first trial names it, once."""
    from hpsearch.finetune.core import unavailable

    _hub(monkeypatch, tmp_path, _repository(tmp_path, tiny_bert))
    said: list[str] = []
    candidate = Candidate(name="m", hub="org/tiny")
    assert unavailable([candidate], say=lambda message, **fields: said.append(message)) == []
    assert said == ["m: fetching org/tiny from the hub (once: it stays in the Hugging Face cache)"]
    assert unavailable([candidate], say=lambda message, **fields: said.append(message)) == [] and len(said) == 1  # cached now
