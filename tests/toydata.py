"""Small labelled data sets for each task, generated from fixed word lists (learnable on purpose)."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

POSITIVE = ["good", "great", "lovely", "superb", "fine", "brilliant"]
NEGATIVE = ["bad", "awful", "boring", "dull", "poor", "terrible"]
NEUTRAL = ["movie", "film", "plot", "actor", "story", "scene", "music", "the", "a", "was", "very", "really"]
CITIES = ["paris", "london", "berlin", "rome", "madrid"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]


def _sentence(rng: random.Random, mood: list[str]) -> str:
    words = rng.sample(NEUTRAL, 2) + rng.sample(mood, 3)
    rng.shuffle(words)
    return " ".join(words)


def corpus() -> list[str]:
    """Sentences that cover the whole toy vocabulary (used to train the toy tokenizer)."""
    words = POSITIVE + NEGATIVE + NEUTRAL + CITIES + PEOPLE + ["lives", "in", "met", "at", "yes", "no", "same", "different"]
    return [" ".join(words[i : i + 6]) for i in range(0, len(words), 3)] * 3


def classification_rows(n: int, seed: int = 0, classes: int = 2) -> list[dict[str, object]]:
    rng = random.Random(seed)
    moods = [("pos", POSITIVE), ("neg", NEGATIVE), ("city", CITIES)][:classes]
    rows = []
    for i in range(n):
        label, words = moods[i % classes]
        rows.append({"text": _sentence(rng, words), "label": label, "group": f"g{i % 7}"})
    rng.shuffle(rows)
    return rows


def pair_rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    """Does the second review agree with the first (always positive) one?"""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        same = i % 2 == 0
        a, b = rng.choice(POSITIVE), " ".join(rng.sample(POSITIVE if same else NEGATIVE, 3))
        rows.append({"first": f"the film was {a}", "second": f"a movie very {b}", "label": "same" if same else "different"})
    return rows


def regression_rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(0, 3)
        words = rng.sample(NEUTRAL, 4 - min(k, 3)) + rng.sample(POSITIVE, k)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": float(k)})
    return rows


def ner_rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        person, city = rng.choice(PEOPLE), rng.choice(CITIES)
        if rng.random() < 0.5:
            tokens = [person, "lives", "in", city]
            tags = ["B-PER", "O", "O", "B-LOC"]
        else:
            tokens = ["the", city, "film", "met", person]
            tags = ["O", "B-LOC", "O", "O", "B-PER"]
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def qa_rows(n: int, seed: int = 0, unanswerable: float = 0.0) -> list[dict[str, object]]:
    """Questions 'PERSON lives in' about short passages 'a lives in x b lives in y ...': the answer is the city.

    Every passage has three people, and three questions about it (so contexts repeat, as in SQuAD);
    with ``unanswerable`` > 0 that share of questions asks about a person who is not in the passage.
    """
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    while len(rows) < n:
        people, cities = rng.sample(PEOPLE, 3), rng.sample(CITIES, 3)
        context = " ".join(f"{p} lives in {c}" for p, c in zip(people, cities))
        for person, city in zip(people, cities):
            if rng.random() < unanswerable:
                absent = next(p for p in PEOPLE if p not in people)
                rows.append({"question": f"{absent} lives in", "context": context, "answers": {"text": [], "answer_start": []}})
                continue
            start = context.index(f"{person} lives in {city}") + len(f"{person} lives in ")
            rows.append({"question": f"{person} lives in", "context": context, "answers": {"text": [city], "answer_start": [start]}})
    return rows[:n]


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


TASK_FILES = {
    "text-classification": ("cls.csv", classification_rows, ""),
    "text-pair-classification": ("pair.csv", pair_rows, "  columns: {text: first, text_pair: second}\n"),
    "regression": ("reg.csv", regression_rows, ""),
    "token-classification": ("ner.jsonl", ner_rows, ""),
    "question-answering": ("qa.jsonl", qa_rows, ""),
}


QUICK = """\
space:
  learning_rate: {type: float, low: 5.0e-3, high: 1.0e-2, log: true}
  epochs: 2
  batch_size: 8
  warmup_ratio: 0.0
  weight_decay: 0.0
cv: {folds: 2}
tracking: {enabled: false}
"""
"""Study sections of a quick run on the tiny model: 2 folds, 2 epochs, a learning rate it learns with, no tracking."""


def toy_study(folder: Path, model: Path, task: str = "text-classification", rows: int = 120, extra: str = "") -> Path:
    """Write toy data for ``task`` and a study file that uses it with the tiny model; return the study path."""
    name, make, columns = TASK_FILES[task]
    data = make(rows)
    (write_jsonl if name.endswith(".jsonl") else write_csv)(folder / name, data)
    study = folder / "study.yaml"
    study.write_text(
        f"name: toy\ntask: {task}\ndata:\n  train: {name}\n{columns}"
        f"models:\n  - {{name: tiny, path: {model}}}\n{extra}",
        encoding="utf-8",
    )
    return study
