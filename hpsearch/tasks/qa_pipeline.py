"""Extractive question answering with a fine-tuned model: span decoding, and the pipeline that serves exports.

This file is self-contained (numpy, torch and transformers only): hpsearch copies it into every
question-answering export, whose config names it as the folder's own ``question-answering`` pipeline,
so that ``transformers.pipeline("question-answering", model=DIR, trust_remote_code=True)`` serves the
export with exactly the decoding the study scored it with (transformers 5 no longer ships an extractive
question-answering pipeline). hpsearch's own scoring imports the same functions from here.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np

N_BEST = 20
"""Start and end positions considered per window (the usual SQuAD setting)."""


def best_spans(start_logits: Any, end_logits: Any, offset_start: Sequence[int], max_answer_length: int,
               n_best: int = N_BEST) -> tuple[list[tuple[float, int, int]], float]:
    """Valid spans of one window, best first, as (score, first token, last token), and the window's null score.

    A span is valid when both ends lie in the context (``offset_start`` >= 0) and it is at most
    ``max_answer_length`` tokens long; the candidates are the ``n_best`` highest start and end logits.
    The null score is the score of the empty answer: start and end on the first token.
    """
    length = min(len(start_logits), len(offset_start))
    starts = np.argsort(start_logits[:length])[::-1][:n_best]
    ends = np.argsort(end_logits[:length])[::-1][:n_best]
    spans = []
    for first in starts:
        if offset_start[first] < 0:
            continue
        for last in ends:
            if offset_start[last] < 0 or last < first or last - first + 1 > max_answer_length:
                continue
            spans.append((float(start_logits[first] + end_logits[last]), int(first), int(last)))
    spans.sort(key=lambda s: (-s[0], s[1], s[2]))
    return spans, float(start_logits[0] + end_logits[0])


def best_answer(context: str, windows: Sequence[tuple[dict[str, Any], Any]], max_answer_length: int,
                allow_null: bool, null_threshold: float) -> tuple[str, float, int, int]:
    """(answer, probability, start char, end char) of the best span over an example's windows; ('', its probability,
    -1, -1) when no span is valid, or when ``allow_null`` and the empty answer beats the best span by more than
    ``null_threshold`` (in logits: spans are compared by the sum of their start and end logits, across windows too).

    Each window is (feature with ``offset_start``/``offset_end`` per token, -1 outside the context; logits of shape (2, tokens)).
    The probability is that of the answer's start and end tokens in its window (:func:`span_probability`).
    """
    best: tuple[float, int, int, int] | None = None  # logit sum, window, first and last token
    null: tuple[float, int] | None = None  # the lowest null score over the windows, and its window
    for index, (feature, logits) in enumerate(windows):
        spans, window_null = best_spans(logits[0], logits[1], feature["offset_start"], max_answer_length)
        if null is None or window_null < null[0]:
            null = (window_null, index)
        if spans and (best is None or spans[0][0] > best[0]):
            best = (spans[0][0], index, spans[0][1], spans[0][2])
    if best is None or (allow_null and null is not None and null[0] > best[0] + null_threshold):
        return "", span_probability(windows[null[1]], 0, 0) if null is not None else 0.0, -1, -1
    _, index, first, last = best
    feature = windows[index][0]
    start, end = int(feature["offset_start"][first]), int(feature["offset_end"][last])
    return context[start:end], span_probability(windows[index], first, last), start, end


def span_probability(window: tuple[dict[str, Any], Any], first: int, last: int) -> float:
    """The probability of the span from token ``first`` to ``last`` in ``window``: the softmax of its start logit times
    that of its end logit, each over the tokens an answer can start or end on (the context's, and the first token, the
    empty answer's), as transformers' question-answering pipelines reported it."""
    feature, logits = window
    allowed = [i == 0 or o >= 0 for i, o in enumerate(feature["offset_start"])]
    probability = 1.0
    for row, token in ((logits[0], first), (logits[1], last)):
        values = np.asarray(row[: len(allowed)], dtype=np.float64)
        values = np.where(allowed[: len(values)], values, -np.inf)
        values = np.exp(values - values.max())
        probability *= float(values[token] / values.sum())
    return probability


def context_offsets(offsets: Sequence[Sequence[int]], sequence_ids: Sequence[int | None]) -> tuple[list[int], list[int]]:
    """Character start and end of each token of the context (the second sequence); -1 for every other token."""
    starts = [int(o[0]) if s == 1 else -1 for o, s in zip(offsets, sequence_ids)]
    ends = [int(o[1]) if s == 1 else -1 for o, s in zip(offsets, sequence_ids)]
    return starts, ends


@functools.lru_cache(maxsize=None)
def _pipeline_class() -> Any:
    import torch
    from transformers import Pipeline

    class ExtractiveQuestionAnswering(Pipeline):
        """``pipe(question=..., context=...)`` (or a dict, or a list of dicts) -> {answer, score, start, end}.

        The score is the answer's probability: that of its start token times that of its end token, in the window it
        was found in (spans are chosen by the sum of their logits, as the study scored them). Settings default
        to those the model was selected with (``hpsearch_qa`` in its config); pass ``max_length``,
        ``doc_stride``, ``max_answer_length``, ``handle_impossible_answer`` or ``null_threshold`` to change them.
        """

        _load_processor = False
        _load_image_processor = False
        _load_feature_extractor = False
        _load_tokenizer = True

        def __call__(self, inputs: Any = None, question: Any = None, context: Any = None, **kwargs: Any) -> Any:
            if inputs is None:
                if isinstance(question, list):
                    inputs = [{"question": q, "context": c} for q, c in zip(question, context)]
                else:
                    inputs = {"question": question, "context": context}
            return super().__call__(inputs, **kwargs)

        def _sanitize_parameters(self, max_length: int | None = None, doc_stride: int | None = None, max_answer_length: int | None = None,
                                 handle_impossible_answer: bool | None = None, null_threshold: float | None = None, **_: Any) -> tuple[dict, dict, dict]:
            saved = dict(getattr(self.model.config, "hpsearch_qa", None) or {})
            length = max_length or saved.get("max_length", 384)
            pre = {"max_length": length, "doc_stride": doc_stride or saved.get("doc_stride", length // 4)}
            post = {"max_answer_length": max_answer_length or saved.get("max_answer_length", 30),
                    "allow_null": saved.get("allow_null", False) if handle_impossible_answer is None else handle_impossible_answer,
                    "null_threshold": saved.get("null_threshold", 0.0) if null_threshold is None else null_threshold}
            return pre, {}, post

        def preprocess(self, inputs: dict[str, str], max_length: int = 384, doc_stride: int = 96) -> dict[str, Any]:
            encoded = self.tokenizer(str(inputs["question"]), str(inputs["context"]), truncation="only_second", max_length=max_length,
                                     stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                                     padding=True, return_tensors="pt")
            offsets = [context_offsets(encoded["offset_mapping"][i].tolist(), encoded.sequence_ids(i)) for i in range(len(encoded["input_ids"]))]
            model_inputs = {k: v for k, v in encoded.items() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
            return {"model_inputs": model_inputs, "offsets": offsets, "context": str(inputs["context"])}

        def _forward(self, prepared: dict[str, Any]) -> dict[str, Any]:
            with torch.no_grad():
                output = self.model(**prepared["model_inputs"])
            return {"start": output.start_logits.float().cpu().numpy(), "end": output.end_logits.float().cpu().numpy(),
                    "offsets": prepared["offsets"], "context": prepared["context"]}

        def postprocess(self, output: dict[str, Any], max_answer_length: int = 30, allow_null: bool = False, null_threshold: float = 0.0) -> dict[str, Any]:
            windows = [({"offset_start": starts, "offset_end": ends}, np.stack([output["start"][i], output["end"][i]]))
                       for i, (starts, ends) in enumerate(output["offsets"])]
            answer, score, start, end = best_answer(output["context"], windows, max_answer_length, allow_null, null_threshold)
            return {"answer": answer, "score": score, "start": start, "end": end}

    return ExtractiveQuestionAnswering


def __getattr__(name: str) -> Any:  # the pipeline class is built on first use: importing this file stays light
    if name == "ExtractiveQuestionAnswering":
        return _pipeline_class()
    raise AttributeError(name)
