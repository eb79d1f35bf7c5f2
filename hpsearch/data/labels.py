"""One label map per study, stored beside the results and reused by every trial and the export."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hpsearch.errors import DataError, RowError, refuse_rows


@dataclass(frozen=True)
class LabelMap:
    """Label names in a fixed order; ids are positions in that order. Empty for regression."""

    labels: tuple[str, ...]

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, values: Sequence[object], split: str, row: int | None = None) -> list[int]:
        """Ids of ``values``, one per row; or, with ``row``, the tags of that one row, one per token. A label that the map
        does not know is an error naming it and its row."""
        mapping = self.label2id
        keys = [str(value) for value in values]
        unknown = [position for position, key in enumerate(keys) if key not in mapping]
        if unknown:
            what = f"label {keys[unknown[0]]!r}" if row is None else f"tag {keys[unknown[0]]!r} of token {unknown[0]}"
            problem = (f"{what} never occurs in the training data (known labels: {list(self.labels)}); fix the row or add the "
                       "label to data.labels")
            if row is not None:  # the tags of one row: the row is named once
                raise RowError(split, row, problem)
            refuse_rows(split, ((position, problem) for position in unknown), like="a label that never occurs in the training data")
        return [mapping[key] for key in keys]

    def lookalikes(self) -> list[list[str]]:
        """Groups of labels that differ only in case, spacing or the way a number is written ('pos' and 'pos ', 'NEG'
        and 'neg', '1' and '1.0'): trained as different classes, though they are most likely one."""
        groups: dict[object, list[str]] = {}
        for label in self.labels:
            key: object = " ".join(label.split()).casefold()
            try:
                key = float(str(key))
            except ValueError:
                pass
            groups.setdefault(key, []).append(label)
        return [group for group in groups.values() if len(group) > 1]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"labels": list(self.labels)}, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        return cls(tuple(json.loads(path.read_text(encoding="utf-8"))["labels"]))

    @classmethod
    def from_values(cls, values: Sequence[object], declared: Sequence[str] | None) -> LabelMap:
        """The declared label list, or the sorted labels seen in ``values``."""
        seen = sorted({str(v) for v in values})
        if declared is None:
            return cls(tuple(seen))
        unknown = [v for v in seen if v not in declared]
        if unknown:
            numbered = not set(seen) & set(declared) and all(v.lstrip("-").isdigit() for v in seen)
            raise DataError(
                f"training labels {unknown} are not in data.labels {list(declared)}; data.labels lists the labels as the data "
                f"writes them: add these to it" + (", or, where the numbers stand for the declared labels, write the labels "
                                                   "in the data instead of the numbers" if numbered else "")
            )
        return cls(tuple(declared))
