"""Where progress goes: readable lines (default), nothing but the result (quiet), or JSON lines.

Every progress call is ``progress(message, **fields)``; the fields (trial, fold, epoch, scores, ...)
make the JSON-lines mode useful to batch systems without parsing text. In a terminal, the text mode
also draws a progress bar over the steps of the running epoch, with its ETA; written to a file or a pipe
(a batch job's log), an epoch's training, its validation or a candidate's frozen layers' outputs that take longer than a
minute say how far they are, once a minute.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

MODES = ("text", "quiet", "jsonl")


class Progress:
    def __init__(self, mode: str = "text", label: str | None = None, stream: TextIO | None = None, every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        self.mode, self.label = mode, label
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self.every, self.clock = every, clock
        self._steps: _Span | None = None  # outside a terminal: the long work being counted

    def __call__(self, message: str, **fields: Any) -> None:
        self.close_bar()
        if self.mode == "quiet":
            return
        if self.mode == "jsonl":
            record = {"time": round(time.time(), 3), **({"worker": self.label} if self.label else {}), "message": message, **fields}
            self.stream.write(json.dumps(record, default=str) + "\n")
        else:
            self.stream.write((f"[{self.label}] " if self.label else "") + message + "\n")
        self.stream.flush()

    def result(self, text: str, **fields: Any) -> None:
        """A command's result, on the standard output: the text as it reads, or in JSON-lines mode one ``result`` event
        holding it (and ``fields``), so that the two streams, merged into one log as batch systems do, parse line by line."""
        self.close_bar()
        if self.mode == "jsonl":
            text = json.dumps({"time": round(time.time(), 3), "message": text.strip("\n"), "event": "result", **fields}, default=str)
        print(text, flush=True)

    def route_warnings(self) -> None:
        """Send Python warnings (a library's deprecation notice, say) through this progress as ``warning`` events, so
        that in JSON-lines mode every line of the stream parses."""
        import warnings

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
            self(f"{category.__name__}: {message}", event="warning", category=category.__name__, location=f"{filename}:{lineno}")

        warnings.showwarning = show

    def step(self, done: int, total: int, description: str, unit: str = "step") -> None:
        """``done`` of the ``total`` units of long work (the optimizer steps of the running epoch, say): drawn as a bar in an
        interactive terminal; elsewhere said as a line (an event ``steps`` in JSON lines) once every ``every`` seconds of
        work that runs longer."""
        if self.mode == "quiet":
            return
        if self.mode == "jsonl" or not self.stream.isatty():
            self._say_steps(done, total, description, unit)
            return
        if self._bar is None:
            from tqdm import tqdm

            prefix = f"[{self.label}] " if self.label else ""
            self._bar = tqdm(total=total, desc=prefix + description, file=self.stream, leave=False, unit=unit, dynamic_ncols=True)
        self._bar.n = done
        self._bar.refresh()
        if done >= total:
            self.close_bar()

    def _say_steps(self, done: int, total: int, description: str, unit: str) -> None:
        now, span = self.clock(), self._steps
        if span is None or span.description != description or done < span.last:  # another epoch, or one begun again
            self._steps = _Span(description, now, done, now, done)
            return
        span.last = done
        if now - span.said < self.every or done >= total or done == span.first:
            return
        from hpsearch.status import duration

        left = (now - span.began) / (done - span.first) * (total - done)
        span.said = now
        self(f"{description}: {done:,} of {total:,} {unit}s ({done / total:.0%}), about {duration(left)} left", event="steps",
             done=done, total=total, unit=unit, seconds_left=round(left, 1))

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def epoch_steps(say: Any, label: str) -> Callable[[int, int, int, str], None] | None:
    """The training loop's step callback (``finetune.loop.StepCallback``) that shows ``label``'s epochs, their training
    steps and then their validated inputs, on ``say``'s progress display; None where ``say`` has none."""
    show = getattr(say, "step", None)
    if show is None:
        return None

    def on_step(epoch: int, done: int, total: int, what: str) -> None:
        validation = what == "validation"
        show(done, total, f"{label} epoch {epoch}" + (" validation" if validation else ""), unit="input" if validation else "step")

    return on_step


@dataclass
class _Span:
    """Long work counted outside a terminal: what it is, when its first step was seen and which it was, when its steps
    were last said, and the last step seen."""

    description: str
    began: float
    first: int
    said: float
    last: int
