"""``hpsearch status``: what a study has done and is doing, read from its storage alone.

It needs no data, model or GPU, so it works from any machine that reaches the storage, while the
study runs.
"""
from __future__ import annotations

import functools
import textwrap
from datetime import datetime
from typing import Any

from hpsearch.accounting import retry_of
from hpsearch.numbers import amount_figure, score_figure
from hpsearch.selection import CARRIED_ATTR, PROGRESS_ATTR, REPEAT_ATTR, ended_state, spent
from hpsearch.space import describe_params
from hpsearch.spec import StudySpec


def trial_table(spec: StudySpec, study: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per trial: number, state, model, searched params, CV mean/std, epochs, duration, device, note and cost."""
    from hpsearch.binding import superseded
    from hpsearch.workers import worker_gone

    now, old, trials = now or datetime.now(), superseded(study), study.get_trials(deepcopy=False)
    only = spec.models[0].name if len(spec.models) == 1 else "?"  # the model of a waiting trial that does not name one
    retries = {retry_of(t): t.number for t in trials if retry_of(t) is not None}
    rows = []
    for t in trials:
        end = t.datetime_complete or (now if t.state.name == "RUNNING" else None)
        seconds = (end - t.datetime_start).total_seconds() if end and t.datetime_start else None
        # A trial waiting in the queue has only the settings enqueued (search.enqueue, or a repeat's); the rest are drawn when it starts.
        params = t.params or (t.system_attrs.get("fixed_params") or {} if t.state.name == "WAITING" else {})
        pid, gone = t.user_attrs.get("pid"), worker_gone(t)  # RUNNING until a worker of the study next claims a trial here
        rows.append({
            "trial": t.number, "state": ended_state(t), "model": t.user_attrs.get("model", params.get("model", only)),
            "params": {k.split(":")[-1]: v for k, v in params.items() if k != "model"},
            "cv_mean": t.user_attrs.get("cv_mean"), "cv_std": t.user_attrs.get("cv_std"),
            "epochs": t.user_attrs.get("best_epochs"), "seconds": seconds, "device": t.user_attrs.get("device", ""),
            "host": t.user_attrs.get("host", ""), "pid": pid, "worker_gone": gone,
            "note": "; ".join(part for part in (_note(t, old, retries.get(t.number)), _gone_text(pid) if gone else "") if part),
            **spent(t.state.name, t.user_attrs),
            "flops": t.user_attrs.get("flops"), "peak_memory_mb": t.user_attrs.get("peak_memory_mb"),
            "latency_ms": t.user_attrs.get("objective_latency"),  # with search.second_objective: latency
            "progress": t.user_attrs.get(PROGRESS_ATTR) if t.state.name == "RUNNING" else None,
        })
    return rows


def _gone_text(pid: int) -> str:
    return f"its worker process {pid} is gone: the next run or worker of this study on this machine marks it failed and runs its settings again"


def _note(trial: Any, superseded: set[int], retry: int | None = None) -> str:
    """Where a trial came from and why it ended as it did: carried over, settings since changed, failure reason, repeat;
    the trial that ran its settings again (``retry``), or that one will when the study resumes."""
    carried = trial.user_attrs.get(CARRIED_ATTR)
    ended = (("under earlier settings: " if trial.number in superseded else "") + trial.user_attrs.get("failure_reason", "")
             + (f"settings of trial {trial.user_attrs[REPEAT_ATTR]}: not trained again"
                if REPEAT_ATTR in trial.user_attrs and "failure_reason" not in trial.user_attrs else ""))
    again = ""  # an interrupted trial, or one whose worker died, runs its settings again as a new trial
    if retry is not None:
        again = f"run again as trial {retry}"
    elif not trial.params and (trial.user_attrs.get("interrupted") or trial.user_attrs.get("requeued")):
        again = "stopped before it drew its settings; a new trial takes its place"
    elif ended_state(trial) == "INTERRUPTED":
        again = "runs again when the study resumes"
    elif retry_of(trial) is not None:
        again = f"settings of trial {retry_of(trial)}, run again"
    return "; ".join(part for part in (f"carried over (trial {carried['trial']} of {carried['study']})" if carried else "", ended, again) if part)


def space_note(spec: StudySpec, study: Any) -> str | None:
    """Where a finite search space has had all its configurations tried: that the search ended there (or ends
    when the running trials finish) although fewer than n_trials are finished."""
    from hpsearch.repeats import space_taken
    from hpsearch.space import configurations

    every, trials = configurations(spec), study.get_trials(deepcopy=False)
    if not space_taken(spec, trials, every):
        return None
    assert every is not None
    running = any(t.state.name == "RUNNING" for t in trials)
    return (f"search space: every one of its {len(every)} configurations has been tried; "
            + ("the search ends when the running trials finish" if running else "the search ended there (more trials would only repeat them)"))


def best_row(spec: StudySpec, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [r for r in rows if r["state"] == "COMPLETE" and r["cv_mean"] is not None]
    if not done:
        return None
    from hpsearch.selection import rank_key

    return min(done, key=lambda r: rank_key(r["cv_mean"], r["trial"], spec.direction))


# The columns a narrow terminal sheds first, in this order; trial, state, model, params and the score always stay.
SHED_ORDER = ("note", "device", "compute", "best epoch", "duration")
WRAPPED = ("params", "compute", "note")  # the columns whose cells may take several lines (between words)


def render(spec: StudySpec, rows: list[dict[str, Any]], counted: int, space: str | None = None, width: int = 160) -> str:
    """The status as text (a rich table, rendered without colour so it also reads well in logs); ``space``: the
    :func:`space_note`. Columns of :data:`SHED_ORDER` empty in every row are left out. The table fits ``width`` columns
    without cutting a word: where it cannot, the other columns of :data:`SHED_ORDER` are left out in turn, and a line
    names them."""
    from rich.console import Console

    headers = ("trial", "state", "model", "params", f"{spec.metric} ({spec.scored_on})", "best epoch", "duration", "compute", "device", "note")
    cells = [_cells(spec, r) for r in rows]
    empty = [name for name in SHED_ORDER if not any(c[headers.index(name)] for c in cells)]
    shed: list[str] = list(empty)  # nothing to show: their width goes to the columns that wrap
    for name in [*(n for n in SHED_ORDER if n not in empty), None]:
        keep = [i for i, header in enumerate(headers) if header not in shed]
        widths = _fitted_widths([[headers[i], *(c[i] for c in cells)] for i in keep], [headers[i] in WRAPPED for i in keep],
                                width - 3 * len(keep) - 1)  # each column has a border and a space either side
        if widths is not None or name is None:
            break
        shed.append(name)
    table = _table(spec, counted, [headers[i] for i in keep], [[c[i] for i in keep] for c in cells], widths)
    console = Console(width=width, color_system=None, force_terminal=False)
    with console.capture() as capture:
        console.print(table)
    lines = ["\n".join(line.rstrip() for line in capture.get().rstrip().splitlines())]
    left_out = [name for name in shed if name not in empty]
    if left_out:
        lines.append(f"left out to fit {width} columns: {', '.join(left_out)} (--json shows every field)")
    best = best_row(spec, rows)
    lines.append(f"best so far: trial {best['trial']} ({best['model']}), {spec.metric} {spec.trial_score_text(best['cv_mean'], best['cv_std'])}"
                 if best else "best so far: none (no completed trial yet)")
    running = [r for r in rows if r["state"] == "RUNNING"]
    for r in running:
        lines.append(f"running: trial {r['trial']} ({r['model']}) on {r['device'] or '?'}@{r['host'] or '?'} for {duration(r['seconds'])}"
                     + progress_text(spec, r.get("progress")) + (f"; {_gone_text(r['pid'])}" if r.get("worker_gone") else ""))
    if not running:
        lines.append("running: nothing")
    if space:
        lines.append(space)
    return "\n".join(lines)


def progress_text(spec: StudySpec, progress: dict[str, Any] | None) -> str:
    """', fold 2/3 epoch 1/3 done (macro_f1 0.6462)': how far a running trial has got, from its last finished epoch;
    empty before its first one ends."""
    if not progress:
        return ""
    fold = f"fold {progress['fold']}/{progress['folds']} " if progress.get("folds", 1) > 1 else ""
    epochs = f"/{progress['epochs']}" if isinstance(progress.get("epochs"), int) else ""
    return f", {fold}epoch {progress['epoch']}{epochs} done ({spec.metric} {score_figure(progress['score'])})"


def _cells(spec: StudySpec, r: dict[str, Any]) -> tuple[str, ...]:
    """One trial's row of the table, as text, in the order of the columns."""
    score = spec.trial_score_text(r["cv_mean"], r["cv_std"]) if r["cv_mean"] is not None else ""
    return (str(r["trial"]), r["state"], r["model"], describe_params(r["params"]), score, str(r["epochs"] or ""),
            duration(r["seconds"]), _compute_text(r), r["device"], textwrap.shorten(r["note"], 60, placeholder=" …"))


def _compute_text(r: dict[str, Any]) -> str:
    """What a trial cost, as far as it recorded it: '3,600 samples, 14 dev-s, 8e+12 FLOPs, peak 1,168 MiB', then the
    latency where it is the second objective."""
    parts = [f"{r['train_samples']:,} samples" if r.get("train_samples") is not None else "",
             f"{amount_figure(r['device_seconds'])} dev-s" if r.get("device_seconds") is not None else "",
             f"{r['flops']:.2g} FLOPs" if r.get("flops") else "",
             f"peak {r['peak_memory_mb']:,.0f} MiB" if r.get("peak_memory_mb") is not None else "",
             f"{amount_figure(r['latency_ms'])} ms/example" if r.get("latency_ms") is not None else ""]
    return ", ".join(part for part in parts if part)


def _fitted_widths(columns: list[list[str]], wrapped: list[bool], room: int) -> list[int] | None:
    """The width of each column (its header and cells) so that together they take at most ``room`` characters: a
    wrapped column gives up a character at a time, the one whose cells then take the fewest more lines (the widest of
    those), never going below its longest word; None where even that does not fit."""
    from collections import Counter

    from rich.cells import cell_len

    widths = [max(cell_len(text) for text in column) for column in columns]
    words = [Counter(tuple(cell_len(word) for word in text.split()) for text in column) if wrap else Counter()
             for column, wrap in zip(columns, wrapped)]
    least = [max((length for lengths in words[i] for length in lengths), default=0) if wrap else widths[i]
             for i, wrap in enumerate(wrapped)]

    @functools.cache
    def lines(i: int, width: int) -> int:
        return sum(count * _wrapped_lines(lengths, width) for lengths, count in words[i].items())

    while sum(widths) > room:
        narrower = [i for i in range(len(widths)) if widths[i] > least[i]]
        if not narrower:
            return None
        cheapest = min(narrower, key=lambda i: (lines(i, widths[i] - 1) - lines(i, widths[i]), -widths[i]))
        widths[cheapest] -= 1
    return widths


def _wrapped_lines(lengths: tuple[int, ...], width: int) -> int:
    """The lines that words of these lengths take when wrapped at ``width``, a word at a time, as rich wraps them (no
    word is longer than ``width``)."""
    count, used = 1, -1
    for length in lengths:
        if used >= 0 and used + 1 + length > width:
            count, used = count + 1, length
        else:
            used += 1 + length
    return count


def _table(spec: StudySpec, counted: int, headers: list[str], cells: list[list[str]], widths: list[int] | None) -> Any:
    """The rich table of ``cells`` under ``headers``, each column as wide as ``widths`` says (None: as rich sees fit,
    folding words where the terminal is too narrow for any other way)."""
    from rich.table import Table

    table = Table(title=f"study {spec.name}: {spec.search.done_text(counted)} finished", title_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, overflow="fold", width=widths[i] if widths else None)
    for row in cells:
        table.add_row(*row)
    return table


def as_json(spec: StudySpec, rows: list[dict[str, Any]], counted: int, space: str | None = None) -> str:
    """The status as one JSON object: the rows of :func:`trial_table`, the best so far, what runs and the
    :func:`space_note` (null when it has none)."""
    import json

    return json.dumps({
        "study": spec.name, "metric": spec.metric, "direction": spec.direction, "finished": counted, "n_trials": spec.search.n_trials,
        "best": best_row(spec, rows), "running": [r["trial"] for r in rows if r["state"] == "RUNNING"], "space": space, "trials": rows,
    }, default=str)


def duration(seconds: float | None) -> str:
    """'1m26s', '42s' (to the nearest second); under 10 s '2.9s', to 2 significant digits as the device-seconds beside
    it are written (a trial's duration holds its device-seconds); '' for None."""
    if seconds is None:
        return ""
    if abs(seconds) < 9.95:
        return f"{amount_figure(seconds)}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
