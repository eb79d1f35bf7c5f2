from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from hpsearch.data import prepare_data
from hpsearch.data.tokencache import TokenCache, tokenizer_fingerprint
from hpsearch.tasks.base import IGNORE_INDEX
from hpsearch.tasks.entities import align_labels
from hpsearch.spec import load_spec
from toydata import toy_study


def _setup(tmp_path: Path, tiny_bert: Path, task: str = "text-classification"):
    from transformers import AutoTokenizer

    data = prepare_data(load_spec(toy_study(tmp_path, tiny_bert, task=task, rows=40)))
    return data, AutoTokenizer.from_pretrained(tiny_bert), tokenizer_fingerprint(tiny_bert)


def test_second_request_is_served_from_disk(tmp_path: Path, tiny_bert: Path) -> None:
    data, tokenizer, key = _setup(tmp_path, tiny_bert)
    first = TokenCache(tmp_path / "cache").tokenize(data.train, data.task, tokenizer, key, 32)
    second_cache = TokenCache(tmp_path / "cache")  # as a new trial or worker would
    second = second_cache.tokenize(data.train, data.task, tokenizer, key, 32)
    assert not first.from_cache and second.from_cache
    assert second_cache.passes == 0
    assert second.features == first.features
    assert len(second) == 40 and second.features[0]["labels"] == data.train.columns["label"][0]


def test_a_pass_killed_before_its_end_leaves_nothing_behind_once_the_data_is_tokenized_again(tmp_path: Path, tiny_bert: Path) -> None:
    """A process killed while it tokenized (kill -9, the out-of-memory killer) left its half-written copy of the tokens in
    the cache, one per kill, as large as the tokenized data."""
    import os
    import shutil
    import subprocess
    import sys

    from hpsearch.workers import HOST

    data, tokenizer, key = _setup(tmp_path, tiny_bert)
    first = TokenCache(tmp_path / "cache").tokenize(data.train, data.task, tokenizer, key, 32)
    folder = next(p for p in (tmp_path / "cache").rglob(first.key) if p.is_dir())
    shutil.rmtree(folder)  # as if the pass that wrote it had been killed before its end
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)
    names = [f"{first.key}.{dead}@{HOST}.a1b2", f"{first.key}.{os.getpid()}@{HOST}.live", f"{first.key}.{dead}@elsewhere.c3"]
    for name in names:
        (folder.parent / name / "data").mkdir(parents=True)
    again = TokenCache(tmp_path / "cache").tokenize(data.train, data.task, tokenizer, key, 32)
    assert not again.from_cache and again.features == first.features
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(first.key + ".") and p.is_dir()) == sorted(names[1:])


def test_key_changes_with_max_length_and_tokenizer(tmp_path: Path, tiny_bert: Path) -> None:
    data, tokenizer, key = _setup(tmp_path, tiny_bert)
    cache = TokenCache(tmp_path / "cache")
    a = cache.tokenize(data.train, data.task, tokenizer, key, 32)
    b = cache.tokenize(data.train, data.task, tokenizer, key, 8)
    c = cache.tokenize(data.train, data.task, tokenizer, "other-tokenizer", 32)
    assert len({a.key, b.key, c.key}) == 3 and cache.passes == 3
    assert max(b.lengths()) <= 8


def test_tokenizer_fingerprint_ignores_weights(tmp_path: Path, tiny_bert: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    assert tokenizer_fingerprint(copy) == tokenizer_fingerprint(tiny_bert)
    next(copy.glob("*.safetensors")).write_bytes(b"changed")
    assert tokenizer_fingerprint(copy) == tokenizer_fingerprint(tiny_bert)
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text().replace("128", "99"))
    assert tokenizer_fingerprint(copy) != tokenizer_fingerprint(tiny_bert)


def _tokenize_in_child(args: tuple[str, str, str]) -> tuple[int, bool]:
    study, model, cache_dir = args
    from transformers import AutoTokenizer

    data = prepare_data(load_spec(study))
    cache = TokenCache(Path(cache_dir))
    result = cache.tokenize(data.train, data.task, AutoTokenizer.from_pretrained(model), tokenizer_fingerprint(Path(model)), 32)
    return cache.passes, result.from_cache


def test_concurrent_workers_tokenize_once(tmp_path: Path, tiny_bert: Path) -> None:
    study = toy_study(tmp_path, tiny_bert, rows=300)
    args = (str(study), str(tiny_bert), str(tmp_path / "cache"))
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_tokenize_in_child, [args] * 3)
    assert sum(passes for passes, _ in results) == 1
    assert sorted(from_cache for _, from_cache in results) == [False, True, True]


def test_ner_labels_sit_on_first_subwords() -> None:
    # "Empire State Building" split as [CLS] em ##pire state build ##ing [SEP]
    word_ids = [None, 0, 0, 1, 2, 2, None]
    assert align_labels(word_ids, [3, 4, 4]) == [IGNORE_INDEX, 3, IGNORE_INDEX, 4, 4, IGNORE_INDEX, IGNORE_INDEX]


def test_ner_alignment_on_a_real_tokenizer(tmp_path: Path, tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    from hpsearch.data.prepare import Split
    from hpsearch.tasks import get_task

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    words = ["alice", "xqzv", "paris"]  # 'xqzv' is not in the toy vocabulary: several subwords or [UNK]
    split = Split("train", {"tokens": [words], "tags": [[1, 0, 2]]}, "fp")
    feature = get_task("token-classification").tokenize(split, tokenizer, 32).rows[0]
    encoded = tokenizer(words, is_split_into_words=True)
    expected, previous = [], None
    for word in encoded.word_ids():
        expected.append(IGNORE_INDEX if word is None or word == previous else [1, 0, 2][word])
        previous = word
    assert feature["labels"] == expected
    assert [label for label in feature["labels"] if label != IGNORE_INDEX] == [1, 0, 2]


@pytest.mark.parametrize("task", ["text-classification", "text-pair-classification", "regression", "token-classification",
                                  "question-answering"])
def test_tokenizing_in_parts_gives_the_features_of_one_pass(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                            task: str) -> None:
    """Tasks hand the tokenizer a few thousand rows at a time (its output for a whole split of 655,380 rows held 3.6 GiB
    more than the features kept); the features, and a long context's windows, are those of one pass over the split."""
    from hpsearch.tasks import base

    data, tokenizer, _ = _setup(tmp_path, tiny_bert, task)
    length = 16 if task == "question-answering" else 32  # contexts longer than one window
    whole = data.task.tokenize(data.train, tokenizer, length)
    monkeypatch.setattr(base, "TOKENIZE_CHUNK", 7)
    parts = data.task.tokenize(data.train, tokenizer, length)
    assert parts.rows == whole.rows and parts.windows == whole.windows
    assert len(whole.rows) >= 40 and (task != "question-answering" or len(whole.rows) > 40)  # some context takes two windows
