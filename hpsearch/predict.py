"""``hpsearch predict``: batch inference with an exported model, one output row per input row."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hpsearch.data.sources import load_source
from hpsearch.errors import DataError, HpsearchError
from hpsearch.export import METADATA
from hpsearch.spec import DataSource


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA
    if not path.is_file():
        raise HpsearchError(f"{model_dir} has no {METADATA}: it was not written by 'hpsearch export'; export the study first")
    return json.loads(path.read_text(encoding="utf-8"))


def predict_file(model_dir: Path, input_path: Path, output_path: Path, batch_size: int = 32) -> int:
    """Predict every row of ``input_path`` and write ``output_path`` (.csv or .jsonl); returns the row count."""
    meta = read_metadata(model_dir)
    if output_path.suffix.lower() not in (".csv", ".jsonl"):
        raise HpsearchError(f"--output must end in .csv or .jsonl, got {output_path.name!r}")
    rows = load_source(DataSource(path=input_path.resolve())).to_list()
    if not rows:
        raise DataError(f"{input_path} has no rows")
    columns = meta["input_columns"]
    missing = [c for c in columns.values() if c not in rows[0]]
    if missing:
        raise DataError(f"{input_path} lacks the column(s) {missing} the model was trained on (columns: {list(rows[0])}); rename them")
    if meta["task"] == "token-classification":
        predictions = _tag_words(model_dir, [row[columns["tokens"]] for row in rows], meta["max_length"], batch_size)
    else:
        predictions = _classify(model_dir, meta, rows, batch_size)
    for row, prediction in zip(rows, predictions):
        row.update(prediction)
    _write(output_path, rows)
    return len(rows)


def _classify(model_dir: Path, meta: dict[str, Any], rows: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(model_dir), tokenizer=str(model_dir), device=-1)
    text, pair = meta["input_columns"]["text"], meta["input_columns"].get("text_pair")
    inputs = [{"text": str(r[text]), "text_pair": str(r[pair])} if pair else str(r[text]) for r in rows]
    options = {"truncation": True, "max_length": meta["max_length"], "batch_size": batch_size}
    if meta["task"] == "regression":
        outputs = pipe(inputs, function_to_apply="none", **options)
        return [{"prediction": float(o["score"])} for o in outputs]
    outputs = pipe(inputs, top_k=None, **options)
    result = []
    for scores in outputs:
        best = max(scores, key=lambda s: s["score"])
        result.append({"prediction": best["label"], "score": float(best["score"]),
                       "scores": json.dumps({s["label"]: round(float(s["score"]), 6) for s in scores})})
    return result


def _tag_words(model_dir: Path, sentences: list[list[str]], max_length: int, batch_size: int) -> list[dict[str, Any]]:
    """One tag per input word (from its first subword); words past max_length get 'O'."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    id2label = model.config.id2label
    outside = "O" if "O" in id2label.values() else id2label[0]
    result = []
    for start in range(0, len(sentences), batch_size):
        batch = [[str(w) for w in words] for words in sentences[start : start + batch_size]]
        encoded = tokenizer(batch, is_split_into_words=True, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        with torch.no_grad():
            predicted = model(**encoded).logits.argmax(-1).tolist()
        for i, words in enumerate(batch):
            tags, previous = [], None
            for position, word in enumerate(encoded.word_ids(i)):
                if word is not None and word != previous:
                    tags.append(id2label[predicted[i][position]])
                previous = word
            tags += [outside] * (len(words) - len(tags))
            result.append({"predicted_tags": tags})
    return result


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".jsonl":
        path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows)
