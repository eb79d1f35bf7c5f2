"""What a trial cost: training samples, device-seconds, estimated FLOPs and peak memory.

FLOPs are an estimate from the parameter counts and the tokens processed (the usual rule: a forward
pass costs about 2 FLOPs per parameter per token; the backward pass about 2 per parameter the gradient
flows through plus 2 per trained parameter). They count what a configuration needs, not what the
frozen-layer cache saved, so configurations compare on equal terms.
"""
from __future__ import annotations

from typing import Any


def training_flops(tokens_trained: int, tokens_evaluated: int, total_parameters: int, trainable_parameters: int, scope: str) -> float:
    """Estimated FLOPs of training on ``tokens_trained`` tokens and evaluating ``tokens_evaluated``."""
    # Full fine-tuning and LoRA send gradients through every layer; freeze-K and head stop at the frozen part.
    through = total_parameters if scope in ("full", "lora") else trainable_parameters
    per_token = 2 * total_parameters + 2 * through + 2 * trainable_parameters
    return float(tokens_trained * per_token + tokens_evaluated * 2 * total_parameters)


def peak_memory_mb(device: Any) -> float:
    """Peak memory in MiB: GPU memory allocated on a CUDA device since the last reset, else the process's
    peak resident memory (which covers every trial this worker ran so far)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def device_memory_mb(device: Any) -> float | None:
    """The memory of ``device`` in MiB: a CUDA GPU's, else this machine's physical memory; None where it cannot be read."""
    import os

    import torch

    if getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory / 2**20
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (AttributeError, OSError, ValueError):  # not a POSIX system that says
        return None


def reset_peak_memory(device: Any) -> None:
    import torch

    # Before this process's first CUDA call there is nothing to reset, and PyTorch refuses the call.
    if getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats(device)


def totals(costs: list[dict[str, Any]]) -> dict[str, float]:
    """Study totals over every finished trial (pruned and failed ones cost too)."""
    return {"trials": len(costs), "train_samples": sum(int(c.get("train_samples") or 0) for c in costs),
            "device_seconds": sum(float(c.get("device_seconds") or 0.0) for c in costs),
            "flops": sum(float(c.get("flops") or 0.0) for c in costs)}
