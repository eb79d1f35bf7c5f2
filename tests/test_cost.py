"""What trials cost: the FLOPs estimate's arithmetic and the cost fields in every result."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hpsearch.cost import reset_peak_memory, totals, training_flops


def test_flops_follow_the_six_n_rule_for_full_fine_tuning() -> None:
    assert training_flops(1000, 0, 10, 10, "full") == 6 * 10 * 1000  # forward 2N, backward 4N per token
    assert training_flops(0, 500, 10, 10, "full") == 2 * 10 * 500  # evaluation: forward only


def test_frozen_layers_cost_only_their_forward_pass() -> None:
    # 100 parameters, 20 trained above the frozen part: forward 2*100, gradients through and for 20 only.
    assert training_flops(10, 0, 100, 20, "freeze") == 10 * (200 + 40 + 40)
    assert training_flops(10, 0, 100, 20, "head") == training_flops(10, 0, 100, 20, "freeze")
    # LoRA: the gradient still flows through every layer, but only the adapters get weight gradients.
    assert training_flops(10, 0, 100, 5, "lora") == 10 * (200 + 200 + 10)


def test_study_totals_add_every_finished_trial() -> None:
    costs = [{"train_samples": 10, "device_seconds": 1.5, "flops": 1e9}, {"train_samples": 5, "device_seconds": 0.5, "flops": None}]
    assert totals(costs) == {"trials": 2, "train_samples": 15, "device_seconds": 2.0, "flops": 1e9}


def test_peak_memory_reset_waits_for_the_first_cuda_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh worker process resets the peak before its first trial touches the GPU; PyTorch refuses a
    # reset before CUDA is initialised ("Invalid device argument"), which failed every trial on a GPU.
    import torch

    resets = []

    def reset(device: object) -> None:
        if not torch.cuda.is_initialized():
            raise RuntimeError("Invalid device argument")
        resets.append(device)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    reset_peak_memory(torch.device("cuda:0"))
    assert resets == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    reset_peak_memory(torch.device("cuda:0"))
    reset_peak_memory("cpu")
    assert resets == [torch.device("cuda:0")]


def test_cost_fields_reach_the_cv_table_selection_status_and_mlflow(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpsearch.cli import main
    from hpsearch.runner import run_study
    from hpsearch.spec import load_spec
    from toydata import QUICK, toy_study

    path = toy_study(tmp_path, tiny_bert, rows=40, extra=QUICK + "search: {n_trials: 2, pruner: {name: none}}\nexport: {enabled: false}\n")
    assert run_study(path, export=False, say=lambda m, **f: None) == 0
    spec = load_spec(path)
    rows = list(csv.DictReader((spec.out_dir / "cv_results.csv").open()))
    for row in rows:
        assert int(row["train_samples"]) == 2 * 20 * 2  # 2 folds x 20 training rows x 2 epochs
        assert float(row["device_seconds"]) > 0 and float(row["flops"]) > 0 and float(row["peak_memory_mb"]) > 0
    report = json.loads((spec.out_dir / "selection.json").read_text())
    assert report["study_cost"]["train_samples"] == sum(int(r["train_samples"]) for r in rows)
    assert report["study_cost"]["flops"] == pytest.approx(sum(float(r["flops"]) for r in rows))
    assert "cost: 160 training samples" in capsys.readouterr().out
    assert main(["status", str(path)]) == 0
    assert "FLOPs" in capsys.readouterr().out


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the resident-memory peak can be restarted on Linux only")
def test_a_cpu_trials_peak_memory_is_its_own_not_the_largest_of_the_process_so_far() -> None:
    import numpy as np

    from hpsearch.cost import peak_memory_mb

    big = np.ones(400 * 2**20 // 8)  # 400 MiB, resident: every page written
    before = peak_memory_mb("cpu")
    del big
    reset_peak_memory("cpu")  # what the next trial starts with
    small = np.ones(50 * 2**20 // 8)
    after = peak_memory_mb("cpu")
    del small
    assert after < before - 300, (before, after)  # the earlier 400 MiB no longer count
    reset_peak_memory("cpu")
    again = np.ones(200 * 2**20 // 8)
    assert peak_memory_mb("cpu") > after + 100  # and what this one holds does
    del again
