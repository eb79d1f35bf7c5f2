"""Token classification (named entities): one tag per word, scored by entity-level F1 (seqeval, IOB2)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from hpsearch.errors import refuse_rows
from hpsearch.tasks.base import IGNORE_INDEX, Column, Features, Task, chunks, is_missing
from hpsearch.tasks.featuretable import FeatureTable


@dataclass(frozen=True)
class TokenClassification(Task):
    name: ClassVar[str] = "token-classification"
    metrics: ClassVar[tuple[str, ...]] = ("f1", "precision", "recall", "accuracy")
    default_metric: ClassVar[str] = "f1"
    auto_class: ClassVar[str] = "AutoModelForTokenClassification"
    pipeline_task: ClassVar[str] = "token-classification"
    peft_task_type: ClassVar[str] = "TOKEN_CLS"
    inputs: ClassVar[tuple[str, ...]] = ("tokens",)
    split_words: ClassVar[bool] = True
    target: ClassVar[str | None] = "tags"
    columns: ClassVar[dict[str, tuple[str | None, str]]] = {
        "tokens": ("tokens", "Column of word lists (token-classification)."),
        "tags": ("tags", "Column of per-word tag lists (token-classification)."),
    }

    def cache_key(self) -> list[Any]:
        return [*super().cache_key(), "words-after-a-space"]  # not the features of earlier versions (no prefix space)

    def learns(self, labels: Sequence[str]) -> str:
        return f"tags: {', '.join(labels)}"

    def missing_targets(self, values: list[Any]) -> list[int]:
        return [row for row, tags in enumerate(values) if isinstance(tags, list) and any(is_missing(t) for t in tags)]

    def label_map(self, train_targets: list[Any], declared: Sequence[str] | None) -> Any:
        return super().label_map([tag for row in train_targets for tag in row], declared)

    def one_target(self, train: Any, label_map: Any) -> str | None:
        tags = {tag for row in train.columns["tags"] for tag in row}
        return repr(label_map.labels[tags.pop()]) if len(tags) == 1 else None

    def metric_problem(self, metric: str, label_map: Any) -> str | None:
        if metric == "accuracy" or "O" in label_map.labels:
            return None
        shown = ", ".join(map(repr, label_map.labels[:8])) + (" ..." if len(label_map) > 8 else "")
        return (f"search.metric {metric} counts entities, the runs of tags between 'O' tags, but no training tag is 'O' (tags: {shown}); "
                "write the tags as names (O, B-PER, I-PER, ...; a datasets ClassLabel feature, saved with save_to_disk, "
                "keeps them), or, where every word has a tag of its own (parts of speech), use search.metric: accuracy")

    def standardise(self, column: Column, split: str, label_map: Any) -> dict[str, list[Any]]:
        tokens, tags = column("tokens"), column("tags")
        refuse_rows(split, ((row, f"'{column.name('tokens')}' and '{column.name('tags')}' must be lists of equal length; fix the row")
                            for row, (words, row_tags) in enumerate(zip(tokens, tags))
                            if not isinstance(words, list) or not isinstance(row_tags, list) or len(words) != len(row_tags)))
        refuse_rows(split, ((row, "no tokens; remove the row") for row, words in enumerate(tokens) if not words))
        return {"tokens": [[str(w) for w in words] for words in tokens],
                "tags": [label_map.encode(row_tags, split, row=i) for i, row_tags in enumerate(tags)]}

    def tokenize(self, split: Any, tokenizer: Any, max_length: int) -> Features:
        cols = split.columns

        def parts() -> Iterator[dict[str, list[Any]]]:
            for part in chunks(len(cols["tokens"])):
                encoded = tokenizer(cols["tokens"][part], is_split_into_words=True, truncation=True, max_length=max_length)
                yield {**encoded, "labels": [align_labels(encoded.word_ids(i), tags) for i, tags in enumerate(cols["tags"][part])]}
        return Features(FeatureTable.of(parts()))

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")

    def outputs(self, output: Any, batch: dict[str, Any]) -> list[Any]:
        """The logits of each word's first subword, in word order."""
        logits = output.logits.float().cpu().numpy()
        labels = batch["labels"].cpu().numpy()
        return [logits[i][labels[i] != IGNORE_INDEX] for i in range(len(logits))]

    def decode(self, outputs: list[Any], split: Any, rows: list[int], label_map: Any) -> list[Any]:
        outside = label_map.labels.index("O") if "O" in label_map.labels else 0
        predicted = []
        for word_logits, row in zip(outputs, rows):
            words = len(split.columns["tags"][row])
            ids = [int(np.argmax(x)) for x in word_logits][:words]
            # Words cut off by max_length get no prediction: they count as 'O' (a miss, never a free hit).
            predicted.append(ids + [outside] * (words - len(ids)))
        return predicted

    def measure(self, predictions: list[Any], split: Any, rows: list[int], label_map: Any) -> dict[str, float]:
        from hpsearch.finetune import metrics

        names = scored_tags(label_map.labels)
        gold = [[names[i] for i in split.columns["tags"][row]] for row in rows]
        return metrics.entity_metrics([[names[i] for i in ids] for ids in predictions], gold)

    def ratio_parts(self, predictions: list[Any], split: Any, rows: list[int], label_map: Any, metric: str) -> list[tuple[float, float]] | None:
        """Entity precision, recall and F1 as seqeval counts them (an entity is matched when its type, first and
        last word agree), and word accuracy, from each sentence's counts."""
        from seqeval.metrics.sequence_labeling import get_entities

        if metric not in self.metrics:
            return None
        names = scored_tags(label_map.labels)
        parts = []
        for ids, row in zip(predictions, rows):
            gold, said = [names[i] for i in split.columns["tags"][row]], [names[i] for i in ids]
            if metric == "accuracy":
                parts.append((float(sum(g == s for g, s in zip(gold, said))), float(len(gold))))
                continue
            true, found = set(get_entities(gold)), set(get_entities(said))
            matched = len(true & found)
            parts.append({"f1": (2.0 * matched, float(len(true) + len(found))), "precision": (float(matched), float(len(found))),
                          "recall": (float(matched), float(len(true)))}[metric])
        return parts

    def baseline(self, data: Any, train_rows: Sequence[int], split: Any, rows: list[int]) -> tuple[list[Any], str]:
        empty = np.zeros((0, len(data.label_map)))  # no word predicted: every word counts as 'O'
        return self.decode([empty] * len(rows), split, rows, data.label_map), "'O' for every word"

    def finish_export(self, folder: Path) -> None:
        """Name IOBES and BILOU tags in the config as transformers' pipeline groups entities (:func:`pipeline_tags`); the
        training tags stay in the folder's hpsearch.json, which ``hpsearch predict`` reads."""
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        served = pipeline_tags(names)
        if served != names:
            config["id2label"] = {str(i): name for i, name in enumerate(served)}
            config["label2id"] = {name: i for i, name in reversed(list(enumerate(served)))}  # S-PER and B-PER: B-PER's id
            config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    def predict(self, model_dir: str, meta: dict[str, Any], rows: list[dict[str, Any]], batch_size: int,
                done: Callable[[int], None] = lambda rows: None) -> list[dict[str, Any]]:
        """One tag per input word (from its first subword); words past max_length get 'O'."""
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
        # The training tags (the config names IOBES and BILOU tags as the pipeline groups them: see finish_export)
        id2label = dict(enumerate(meta["labels"])) if meta.get("labels") else model.config.id2label
        outside = "O" if "O" in id2label.values() else id2label[0]
        column = meta["input_columns"]["tokens"]
        result = []
        for start in range(0, len(rows), batch_size):
            batch = [_words(row[column]) for row in rows[start : start + batch_size]]
            encoded = tokenizer(batch, is_split_into_words=True, truncation=True, max_length=meta["max_length"], padding=True, return_tensors="pt")
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
            done(len(result))
        return result


def _words(value: Any) -> list[str]:
    """The words of one input row: a list, or text (a JSON list, as a csv cell holds one, or words separated by spaces)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.lstrip().startswith("[") else value.split()
        except ValueError:
            value = value.split()
    return [str(w) for w in value]


SCHEMES = {"B": "B", "I": "I", "E": "E", "S": "S", "L": "E", "U": "S"}
"""Tag prefixes the entity metrics read (IOB1/IOB2, IOBES), with BILOU's last and unit tags as IOBES's."""


def scored_tags(names: Sequence[str]) -> list[str]:
    """Tag names as the entity metrics read them. A tag without a prefix ('ORG' on each word of a name: IO tagging)
    scores as 'I-ORG', so a run of one type is one entity, as transformers' pipeline groups it; BILOU's 'L-' and 'U-'
    score as 'E-' and 'S-'. seqeval reads a tag's first letter as its prefix: 'ORG' would be outside any entity,
    'BRAND' a new entity at each word."""
    out = []
    for name in names:
        prefix, dash, kind = name.partition("-")
        out.append(name if name == "O" else f"{SCHEMES[prefix]}-{kind}" if dash and prefix in SCHEMES and kind else f"I-{name}")
    return out


IOB2_PREFIXES = {"S": "B", "U": "B", "E": "I", "L": "I"}
"""IOBES's and BILOU's single-word and last-word prefixes, and the IOB2 prefix each span keeps its words under."""


def pipeline_tags(names: Sequence[str]) -> list[str]:
    """Tag names as transformers' token-classification pipeline groups them into entities (``aggregation_strategy``
    other than none): it knows 'B-' and 'I-' only, and takes any other name as a type of its own that continues a run,
    so 'B-PER E-PER' came out as two people and 'S-LOC S-LOC' as one place. IOBES's and BILOU's single and last tags
    become 'B-' and 'I-' (the same spans, in IOB2); other names are kept."""
    out = []
    for name in names:
        prefix, dash, kind = name.partition("-")
        out.append(f"{IOB2_PREFIXES[prefix]}-{kind}" if dash and kind and prefix in IOB2_PREFIXES else name)
    return out


def align_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """Tag of each word on its first subword; other subwords and special tokens are ignored."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE_INDEX if word is None or word == previous else tags[word])
        previous = word
    return labels
