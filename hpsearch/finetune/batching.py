"""Batches for training and evaluation: dynamic padding, length-grouped order."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from hpsearch.tasks.base import IGNORE_INDEX
from hpsearch.tasks.featuretable import FeatureTable

MEGA_BATCH = 50
"""Batches per length-sorted block: long enough to group lengths, short enough to stay random."""

PAD_MULTIPLE = 8
"""Each batch is padded to a multiple of this many tokens, not merely to its longest row. On the CPU oneDNN builds and
keeps a bf16 kernel per input shape: with a length of its own for each batch, a fold built dozens, and a trial's resident
peak climbed far above the plan's calibration (1,684 MiB against 1,306 padded so, at the same speed, on 1,600 WNUT rows:
benchmarks/cpu_peak.py)."""


def pad_multiple(max_length: int) -> int | None:
    """The multiple a candidate's batches are padded to: :data:`PAD_MULTIPLE` where the length its inputs are cut at is
    one too (so padding never passes it, nor the model's positions), else None (each batch to its longest row)."""
    return PAD_MULTIPLE if max_length % PAD_MULTIPLE == 0 else None


def padded_length(longest: int, multiple: int | None) -> int:
    return longest if not multiple else -(-longest // multiple) * multiple


def length_grouped_order(
    rows: Sequence[int], lengths: Sequence[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Shuffled batches whose members have similar lengths, so little padding is computed."""
    shuffled = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
    block = batch_size * MEGA_BATCH
    batches: list[list[int]] = []
    for start in range(0, len(shuffled), block):
        chunk = sorted(shuffled[start : start + block], key=lambda i: -lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def sorted_order(rows: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches sorted by length (order does not matter there, padding does)."""
    ordered = sorted(rows, key=lambda i: lengths[i])
    return [ordered[j : j + batch_size] for j in range(0, len(ordered), batch_size)]


class _Batcher:
    """Shared ordering: length-grouped shuffled batches for training, length-sorted ones for evaluation."""

    lengths: list[int]

    def batches(
        self, rows: Sequence[int], batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        order = (
            length_grouped_order(rows, self.lengths, batch_size, generator)
            if generator is not None
            else sorted_order(rows, self.lengths, batch_size)
        )
        for chunk in order:
            yield chunk, self._collate(chunk)

    def _collate(self, chunk: list[int]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class TokenBatcher(_Batcher):
    """Batches of token ids, padded per batch by the task's transformers collator."""

    def __init__(self, features: FeatureTable, collator: Any) -> None:
        self.features = features
        self.collator = collator
        self.lengths = features.lengths()

    def _collate(self, chunk: list[int]) -> dict[str, torch.Tensor]:
        return dict(self.collator([self.features[i] for i in chunk]))


class HiddenBatcher(_Batcher):
    """Batches of precomputed hidden states (the output of frozen bottom layers), with the loss's targets."""

    def __init__(self, hidden: list[torch.Tensor], features: FeatureTable, target_keys: tuple[str, ...],
                 multiple: int | None = None) -> None:
        self.hidden = hidden
        self.targets = {key: features.column(key) for key in target_keys}
        self.lengths = [h.shape[0] for h in hidden]
        self.multiple = multiple  # see pad_multiple

    def _collate(self, chunk: list[int]) -> dict[str, torch.Tensor]:
        longest = padded_length(max(self.lengths[i] for i in chunk), self.multiple)
        width = self.hidden[chunk[0]].shape[1]
        embeds = torch.zeros(len(chunk), longest, width, dtype=self.hidden[chunk[0]].dtype)
        mask = torch.zeros(len(chunk), longest, dtype=torch.long)
        for row, i in enumerate(chunk):
            embeds[row, : self.lengths[i]] = self.hidden[i]
            mask[row, : self.lengths[i]] = 1
        batch = {"inputs_embeds": embeds, "attention_mask": mask}
        for key, values in self.targets.items():
            batch[key] = _stack_targets([values[i] for i in chunk], longest)
        return batch


def _stack_targets(values: list[Any], longest: int) -> torch.Tensor:
    """One target per row (a class, a number, a position) or one per token (padded with IGNORE_INDEX)."""
    if isinstance(values[0], list):
        labels = torch.full((len(values), longest), IGNORE_INDEX, dtype=torch.long)
        for row, value in enumerate(values):
            labels[row, : len(value)] = torch.tensor(value)
        return labels
    return torch.tensor(values, dtype=torch.float32 if isinstance(values[0], float) else torch.long)
