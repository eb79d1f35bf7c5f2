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
    """Peak memory in MiB since :func:`reset_peak_memory`: GPU memory allocated on a CUDA device, else the process's
    peak resident memory (on Linux; elsewhere its peak since it started, which covers every trial it ran so far)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20
    kib = _resident_peak_kib()
    if kib is not None:
        return kib / 1024
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _resident_peak_kib() -> int | None:
    """The process's resident-memory high-water mark (Linux's VmHWM), None where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


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
    """Start measuring the peak afresh, so that it is one trial's (or one calibration's) own: on a CUDA device the
    allocator's peak, else the process's resident-memory high-water mark (Linux, 4.0 and later: writing 5 to
    /proc/self/clear_refs sets it to the memory resident now; where that is refused the peak keeps counting)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        # Before this process's first CUDA call there is nothing to reset, and PyTorch refuses the call.
        if torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass


def totals(costs: list[dict[str, Any]]) -> dict[str, float]:
    """Study totals over every finished trial (pruned and failed ones cost too)."""
    return {"trials": len(costs), "train_samples": sum(int(c.get("train_samples") or 0) for c in costs),
            "device_seconds": sum(float(c.get("device_seconds") or 0.0) for c in costs),
            "flops": sum(float(c.get("flops") or 0.0) for c in costs)}
