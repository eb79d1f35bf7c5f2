"""Where progress goes: readable lines (default), nothing but the result (quiet), or JSON lines.

Every progress call is ``progress(message, **fields)``; the fields (trial, fold, epoch, scores, ...)
make the JSON-lines mode useful to batch systems without parsing text. In a terminal, the text mode
also draws a progress bar over the steps of the running epoch, with its ETA.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

MODES = ("text", "quiet", "jsonl")


class Progress:
    def __init__(self, mode: str = "text", label: str | None = None, stream: TextIO | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        self.mode, self.label = mode, label
        self.stream = stream or sys.stderr
        self._bar: Any = None

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

    def step(self, done: int, total: int, description: str) -> None:
        """One optimizer step of the running epoch; drawn as a bar only in an interactive terminal."""
        if self.mode != "text" or not self.stream.isatty():
            return
        if self._bar is None:
            from tqdm import tqdm

            prefix = f"[{self.label}] " if self.label else ""
            self._bar = tqdm(total=total, desc=prefix + description, file=self.stream, leave=False, unit="step", dynamic_ncols=True)
        self._bar.n = done
        self._bar.refresh()
        if done >= total:
            self.close_bar()

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
