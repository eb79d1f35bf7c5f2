from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpsearch.cli import main

STUDY = Path(__file__).resolve().parent.parent / "studies" / "rotten-tomatoes.yaml"


def test_help_does_not_import_torch() -> None:
    code = "import sys\nfrom hpsearch.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_module_entry_point_works() -> None:
    result = subprocess.run([sys.executable, "-m", "hpsearch", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("validate", "run", "worker", "status", "report", "export", "predict"):
        assert command in result.stdout


def test_the_program_leaves_with_mains_exit_code_and_all_its_output(tmp_path: Path) -> None:
    # stdout is a pipe here (block-buffered): output left in the buffer by the quick exit would be lost
    good = subprocess.run([sys.executable, "-m", "hpsearch", "validate", str(STUDY)], capture_output=True, text=True)
    assert good.returncode == 0 and "minilm-l3" in good.stdout and "training labels: " in good.stdout  # the data, printed last
    assert good.stdout.endswith("\n")
    bad = subprocess.run([sys.executable, "-m", "hpsearch", "validate", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr


def test_output_piped_to_a_reader_that_left_ends_quietly() -> None:
    """`hpsearch validate study.yaml | head -1`: the rest cannot be written; no traceback about it."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        result = subprocess.run([sys.executable, "-m", "hpsearch", "validate", str(STUDY)], stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == "", result.stderr


def test_validate_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(STUDY)]) == 0
    out = capsys.readouterr().out
    for part in ("minilm-l6", "minilm-l3", "3-fold CV", "grouped by 'movie'", "learning_rate", "storage: embedded", "tracking:"):
        assert part in out


def test_validate_reports_errors_and_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: nope\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:2: task" in err and "data: Field required" in err


def test_validate_masks_passwords(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"text {i},{'xy'[i % 2]}\n" for i in range(10)))  # enough for 5 folds
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here
    study = tmp_path / "s.yaml"
    study.write_text("name: s\ntask: text-classification\ndata: {train: d.csv}\nmodels: [{name: m, path: m}]\n"
                     "search: {storage: 'postgresql://alice:hunter2@db:5432/hp'}\ntracking: {uri: 'https://bob:s3cret@ml.example'}\n")
    assert main(["validate", str(study)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "s3cret" not in out
    assert "postgresql://alice:***@db:5432/hp" in out and "https://bob:***@ml.example" in out


def test_the_program_tokenizes_on_every_core_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokenizers' own parallelism, on by default (a large split tokenized 1.4x faster on 2 cores); a user's setting
    stays."""
    import os

    import transformers

    from hpsearch.cli import _quiet_libraries

    monkeypatch.setattr(transformers.utils.logging, "set_verbosity_error", lambda: None)
    monkeypatch.setattr(transformers.utils.logging, "disable_progress_bar", lambda: None)
    for preset, expected in ((None, "true"), ("false", "false")):
        env = {"MLFLOW_LOGGING_LEVEL": "WARNING", **({"TOKENIZERS_PARALLELISM": preset} if preset else {})}
        monkeypatch.setattr(os, "environ", env)
        _quiet_libraries()
        assert env["TOKENIZERS_PARALLELISM"] == expected
