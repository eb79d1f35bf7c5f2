"""The ``hpsearch`` command. Heavy libraries are imported inside the subcommands that need them."""
from __future__ import annotations

import argparse
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from hpsearch import __version__
from hpsearch.errors import HpsearchError, row_list


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except HpsearchError as exc:
        return _stopped(args, str(exc), getattr(exc, "exit_code", 2))
    except BrokenPipeError:  # the reader of the output went away (`hpsearch status | head`): nothing more to say
        return 141
    except Exception as exc:  # the disk filled up, or refused, while writing results, a cache or the study's storage
        from hpsearch.errors import cannot_write

        said = cannot_write(exc)
        if said is None:
            raise
        return _stopped(args, str(said), getattr(said, "exit_code", 2))
    except KeyboardInterrupt:
        return _stopped(args, "interrupted", 130)


def _stopped(args: argparse.Namespace, reason: str, code: int) -> int:
    """Say on stderr why the command stopped, and return its exit ``code``: a line of text, or with ``--log-format
    jsonl`` an ``error`` event, so that every line of that stream parses."""
    label = getattr(args, "label", None)  # a worker that run started: its lines say which one
    if getattr(args, "log_format", "text") == "jsonl":
        from hpsearch.progress import Progress

        Progress("jsonl", label=label)(f"hpsearch {args.command}: {reason}", event="error", exit_code=code)
    else:
        print(f"{f'[{label}] ' if label else ''}hpsearch {args.command}: {reason}", file=sys.stderr)
    return code


def entry() -> None:
    """The ``hpsearch`` program: :func:`main`, then a quick exit.

    Everything is written when ``main`` returns (storages commit each change, MLflow logs synchronously),
    so the interpreter's teardown of torch, transformers, MLflow and the rest (about 2 s of a short
    study, measured) is skipped: threads are joined, exit handlers run, output is flushed, and the
    process leaves.
    """
    code = main()
    import atexit
    import logging
    import os

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpsearch",
        description="Find the best pretrained model and fine-tuning settings for your labelled data, "
        "scored by cross-validation.",
    )
    parser.add_argument("--version", action="version", version=f"hpsearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def study_command(name: str, help_text: str, handler: object) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("study", type=Path, help="the study file (YAML)")
        p.set_defaults(handler=handler)
        return p

    study_command("validate", "check a study file and print what it resolves to", _validate)
    study_command("plan", "estimate what the study will cost: a short calibration of every candidate and scope on this device", _plan)
    run = study_command("run", "search, select the winner, test it and export it", _run)
    run.add_argument("--no-export", action="store_true", help="skip the export at the end")
    run.add_argument("--new-study", action="store_true", help="start the study afresh: an existing study of this name is "
                     "kept aside under <name>.replaced-<time> (needed after changing a setting that defines the objective)")
    run.add_argument("--keep-trials", action="store_true", help="with --new-study, after adding a candidate or changing the space: "
                     "the new study takes over the old one's completed and pruned trials that its space still holds")
    _progress_options(run)
    worker = study_command("worker", "join a study as one more worker; runs trials until it has n_trials", _worker)
    worker.add_argument("--storage", help="Optuna storage URL of the study")
    worker.add_argument("--device", help="GPU id or 'cpu' (default: the study's devices)")
    worker.add_argument("--label", help=argparse.SUPPRESS)
    worker.add_argument("--seed-offset", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--threads", type=int, help="CPU threads for this worker (default: execution.threads, else the "
                        "machine's cores divided by the hpsearch workers running on it)")
    _progress_options(worker)
    status = study_command("status", "trials so far, the best so far and what is running", _status)
    status.add_argument("--storage", help="Optuna storage URL of the study (default: the study file's)")
    status.add_argument("--json", action="store_true", help="print the status as one JSON object, for scripts")
    report = study_command("report", "write an HTML report with plots and the selection table", _report)
    report.add_argument("--out", type=Path, help="output folder (default: report/ in the study's output folder)")
    report.add_argument("--storage", help="Optuna storage URL of the study (default: the study file's)")
    export = study_command("export", "write the selected model as a Hugging Face folder", _export)
    export.add_argument("--out", type=Path, help="export folder (default: export.dir of the study)")
    export.add_argument("--force", action="store_true", help="overwrite a folder hpsearch did not write")
    predict = sub.add_parser("predict", help="batch predictions with an exported model",
                             description="Predict labels (or values, or entities) for every row of a csv/jsonl/json/parquet file.")
    predict.add_argument("model_dir", type=Path, help="a folder written by 'hpsearch export' or 'hpsearch run'")
    predict.add_argument("--input", type=Path, required=True,
                         help="input file (csv, tsv, jsonl, json or parquet), or a folder saved with datasets' save_to_disk; "
                              "its columns are those the study used")
    predict.add_argument("--split", help="the split to read from a save_to_disk folder that holds several (default: train, or "
                                         "the folder's only split)")
    predict.add_argument("--output", type=Path, required=True, help="output file (.csv or .jsonl), one row per input row")
    predict.add_argument("--batch-size", type=int, default=32, help="rows per forward pass (default 32); lower it if memory runs out")
    predict.add_argument("--delimiter", help="field separator of a csv input, e.g. ';' (also used for a csv output); default ','")
    predict.add_argument("--column", action="append", default=[], metavar="FIELD=NAME",
                         help="read a field the model takes from another column, e.g. text=review (repeat for each field); "
                              "default: the columns the study trained on")
    predict.set_defaults(handler=_predict)
    return parser


def _progress_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help="print only the result (and errors)")
    group.add_argument("--log-format", choices=["text", "jsonl"], default="text",
                       help="progress as readable lines (default) or one JSON object per line, for batch systems")


def _progress(args: argparse.Namespace, label: str | None = None):  # noqa: ANN202 - a Progress
    from hpsearch.progress import Progress

    progress = Progress("quiet" if args.quiet else args.log_format, label=label)
    if progress.mode != "text":  # JSON lines keep every line parseable; quiet prints only the result
        progress.route_warnings()
    return progress


def _progress_args(args: argparse.Namespace) -> list[str]:
    """The same progress options, for the worker processes that `run` starts."""
    return ["--quiet"] if args.quiet else ["--log-format", args.log_format]


def _existing_study(args: argparse.Namespace):  # noqa: ANN202 - (spec, optuna study)
    from hpsearch.binding import check_bound
    from hpsearch.study import load_existing_study
    from hpsearch.spec import load_spec

    spec = load_spec(args.study)
    if args.storage:
        spec = spec.model_copy(update={"search": spec.search.model_copy(update={"storage": args.storage})})
    study = load_existing_study(spec, say=lambda message, **fields: print(message, file=sys.stderr, flush=True))
    check_bound(spec, study)  # scores shown under the study file's settings must be the ones they were scored under
    return spec, study


def _status(args: argparse.Namespace) -> int:
    from hpsearch.accounting import counted_trials
    from hpsearch.status import as_json, render, space_note, trial_table

    spec, study = _existing_study(args)
    rows, counted, space = trial_table(spec, study), counted_trials(study), space_note(spec, study)
    # the terminal's width (or $COLUMNS); 160 where the output goes to a file or a pipe
    print(as_json(spec, rows, counted, space) if args.json else render(spec, rows, counted, space, width=shutil.get_terminal_size((160, 24)).columns))
    return 0


def _report(args: argparse.Namespace) -> int:
    from hpsearch.report import write_report

    spec, study = _existing_study(args)
    files = write_report(spec, study, (args.out or spec.out_dir / "report").resolve())
    print(f"wrote {files[0]} ({len(files) - 1} figures)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from hpsearch.runner import export_study

    _quiet_libraries()
    _stop_on_signals()
    return export_study(args.study, target=args.out.resolve() if args.out else None, force=args.force)


def _predict(args: argparse.Namespace) -> int:
    from hpsearch.predict import predict_file

    if args.batch_size < 1:
        raise HpsearchError(f"--batch-size must be at least 1, but got {args.batch_size}")
    columns = {}
    for given in args.column:
        field, _, column = given.partition("=")
        if not field or not column:
            raise HpsearchError(f"--column takes FIELD=NAME (text=review, say), got {given!r}")
        columns[field] = column
    _quiet_libraries()
    _stop_on_signals()
    rows, empty = predict_file(args.model_dir, args.input, args.output, batch_size=args.batch_size, delimiter=args.delimiter,
                               columns=columns, split=args.split,
                               say=lambda message: print(message, file=sys.stderr, flush=True))
    print(f"wrote {rows - len(empty)} predictions to {args.output}")
    if empty:
        row, has, its = ("row", "has", "its") if len(empty) == 1 else ("rows", "have", "their")
        print(f"warning: {len(empty)} {row} of {args.input} {has} an empty input and got no prediction ({its} prediction fields are "
              f"empty): {row} {row_list(empty)} (counting data rows from 0)", file=sys.stderr)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from hpsearch.runner import run_worker
    from hpsearch.workers import counted_as_worker

    _quiet_libraries()
    stop = _stop_on_signals()
    device = None
    if args.device is not None:
        if args.device != "cpu" and not args.device.isdigit():
            raise HpsearchError(f"--device takes a GPU id (0, 1, ...) or cpu, got {args.device!r}")
        device = "cpu" if args.device == "cpu" else f"cuda:{int(args.device)}"
    if args.threads is not None and args.threads < 1:
        raise HpsearchError(f"--threads must be at least 1, but got {args.threads}")
    # A worker that run started (it has a label): run said the data's warnings, once for all of them.
    with counted_as_worker():
        return run_worker(args.study, storage=args.storage, device=device, seed_offset=args.seed_offset, say=_progress(args, args.label),
                          stop=stop, threads=args.threads, data_warnings=args.label is None)


def _validate(args: argparse.Namespace) -> int:
    from hpsearch.data.sources import encoding_problems
    from hpsearch.errors import SpecError
    from hpsearch.spec import load_spec
    from hpsearch.summary import describe_data, describe_spec

    spec = load_spec(args.study)
    problems = encoding_problems(spec)
    if problems:
        raise SpecError(problems, str(args.study))
    print(describe_spec(spec), flush=True)
    print("\n".join(describe_data(spec)))  # a problem in the data ends here, as run would end on it
    return 0


def _plan(args: argparse.Namespace) -> int:
    from hpsearch.plan import plan_study, render
    from hpsearch.spec import load_spec

    _quiet_libraries()
    spec = load_spec(args.study)
    plan = plan_study(spec, say=lambda message, **fields: print(message, file=sys.stderr, flush=True))
    print(render(plan))
    print(f"saved: {spec.out_dir / 'plan.json'} ('hpsearch run' says the estimate as it starts, and beside the time it took at the end)")
    return 0


def _stop_on_signals() -> threading.Event:
    """SIGINT and SIGTERM (Ctrl-C, a scheduler's stop, or `run` passing one on) end the trial: it is
    recorded as interrupted and runs again when the study resumes.

    The returned event stays set even where the KeyboardInterrupt is lost (raised inside a finalizer
    that the garbage collector runs, Python only prints it), so the worker still stops: its trial after the
    batch it is in (recorded as interrupted), or before its next trial.
    """
    import signal

    stop = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        stop.set()
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    return stop


def _quiet_libraries() -> None:
    """The libraries' settings of the hpsearch program, where the environment does not set them: quiet (their chatter,
    load reports and per-file progress bars, would drown hpsearch's own progress lines), a tracking server's calls
    given up after about 30 s rather than 4 minutes, and the tokenizers on every core."""
    import logging
    import os

    # A split's rows are tokenized in parts of thousands, each spread over the cores (1.4x faster on 2 cores); set, so the
    # library does not warn when a process forks: hpsearch starts its workers afresh, and no forked process tokenizes.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"  # read by mlflow when it is imported
        # A database error in a tracking call: MLflow logs it with its SQL statement and values, a screenful per call;
        # hpsearch's own warning says that tracking stopped, and why (the error at the bottom of MLflow's).
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # A tracking server's calls: retried about 30 s (0, 4, 8 and 16 s between tries) before tracking stops and the study
    # goes on (MLflow's default, 7 tries and about 4 minutes, held every trial that long); no "View run" links on the
    # standard output at each run's end (two lines per trial amid the result, and a request each). Read at each call.
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"),
                        ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")):
        os.environ.setdefault(name, value)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _run(args: argparse.Namespace) -> int:
    from hpsearch.runner import run_study
    from hpsearch.workers import counted_as_worker

    if args.keep_trials and not args.new_study:
        print("hpsearch run: --keep-trials goes with --new-study (it says which trials the new study takes over); "
              "add --new-study", file=sys.stderr)
        return 2
    _quiet_libraries()
    stop = _stop_on_signals()
    with counted_as_worker():  # until it starts worker processes, if it does (run_study)
        return run_study(args.study, export=not args.no_export, say=_progress(args), worker_args=_progress_args(args), stop=stop,
                         new_study=args.new_study, keep_trials=args.keep_trials)


if __name__ == "__main__":  # pragma: no cover
    entry()
