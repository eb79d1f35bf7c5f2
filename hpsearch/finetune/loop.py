"""The training loop: AdamW, warm-up schedule, autocast, per-epoch evaluation, best-epoch weights."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from hpsearch.data.labels import LabelMap
from hpsearch.data.prepare import Split
from hpsearch.errors import TrialError
from hpsearch.tasks import Features, Task


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float
    epochs: int = 3
    batch_size: int = 16
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    scheduler: str = "linear"
    grad_accumulation: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "auto"
    loss_weight: float = 1.0
    """What the training loss is multiplied by before its gradients are taken (the task's, from ``Task.start_head``):
    regression's ``1 / sd**2`` of the targets makes the gradients those of standardised targets."""


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    metrics: dict[str, float]
    seconds: float
    """Training time of this epoch (evaluation excluded)."""
    samples: int
    eval_seconds: float = 0.0
    predictions: list[Any] | None = None
    """The task's compact prediction for each evaluated row, in the order of the evaluated rows."""

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    @property
    def train_seconds(self) -> float:
        return sum(r.seconds for r in self.history)

    @property
    def samples_per_second(self) -> float:
        seconds = self.train_seconds
        return sum(r.samples for r in self.history) / seconds if seconds > 0 else 0.0


BetweenBatches = Callable[[], None]
"""Called after each batch of every pass over the data, whatever the pass is for (training, validation, the frozen layers'
outputs): see :attr:`hpsearch.finetune.core.FineTuner.between_batches`."""


@dataclass
class EvalSet:
    """Rows (examples) of one split to score, with their features and what the task's metrics need."""

    batcher: Any
    rows: Sequence[int]
    split: Split
    label_map: LabelMap
    task: Task
    features: Features
    between: BetweenBatches | None = None
    on_batch: Callable[[int, int], None] | None = None
    """Called after each batch with (inputs done, inputs in all): progress display."""


EpochCallback = Callable[[EpochRecord], bool]
"""Called after each epoch's evaluation; returning True stops training (e.g. a pruned trial)."""
StepCallback = Callable[[int, int, int, str], None]
"""Called after each batch with (epoch, done, in all, what): progress display. What is 'training' (done and in all count
the epoch's batches) or 'validation' (they count the inputs validated after the epoch)."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """What ``precision`` means on ``device``: 'bf16', 'fp16' or 'fp32' (the autocast a fit runs under).

    'auto' is bf16 on CUDA where supported (else fp16), and bf16 on a CPU with native bf16 instructions
    (avx512_bf16 or AMX): measured 1.38x faster there with equal test scores (benchmarks/README.md,
    "bf16 on the CPU"), 1.40x for regression, whose head trains in standard units of its targets and
    computes its outputs in fp32; a CPU without them would emulate bf16, slower than fp32. 'bf16' and 'fp16'
    asked for by name are kept, except fp16 on the CPU (no fp16 autocast there: fp32).
    """
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return "fp32"
    if device.type == "cpu":
        if precision == "bf16" or (precision == "auto" and native_cpu_bf16()):
            return "bf16"
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def describe_precision(asked: str, used: str, device: str) -> str:
    """What the fits run in (``used``, from :func:`resolve_precision`), and why when ``auto`` chose it."""
    names = {"bf16": "bf16 autocast", "fp16": "fp16 autocast", "fp32": "fp32"}
    if asked != "auto":
        cpu_fp16 = "; the CPU has no fp16 autocast" if asked != used else ""
        return f"training in {names[used]} on {device} (precision: {asked}{cpu_fp16})"
    if device == "cpu":
        why = "this CPU computes bf16 natively" if used == "bf16" else "this CPU has no native bf16"
    else:
        why = "the GPU supports bf16" if used == "bf16" else "the GPU has no bf16"
    return f"training in {names[used]} on {device} (precision: auto; {why})"


def precision_warning(used: str, device: torch.device) -> str | None:
    """What to warn of about the precision fits run in (``used``, from :func:`resolve_precision`): bf16 by name on a
    CPU that would emulate it. None when there is nothing to say."""
    if device.type == "cpu" and used == "bf16" and not native_cpu_bf16():
        return ("precision: bf16 on a CPU without native bf16 (avx512_bf16 or AMX) is emulated, many times slower than "
                "fp32 (14x measured on a 2-core AVX2 machine); set execution.precision: auto to train in fp32 here")
    return None


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (see :func:`resolve_precision`); None: fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(precision, device))


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX tiles), as PyTorch's kernels detect it."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def train(
    model: Any,
    batcher: Any,
    train_rows: Sequence[int],
    evaluation: EvalSet,
    config: TrainConfig,
    *,
    device: torch.device,
    metric: str,
    direction: str,
    on_epoch: EpochCallback | None = None,
    frozen_modules: Sequence[Any] = (),
    keep_best: bool = True,
    on_step: StepCallback | None = None,
    between: BetweenBatches | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place; with ``keep_best`` it ends holding its best epoch's weights."""
    from transformers import get_scheduler

    dtype = autocast_dtype(device, config.precision)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    # The fused kernel updates every parameter in one pass: on CPU a full MiniLM step spends about
    # a fifth of its time in AdamW's multi-tensor (foreach) update, about 5 % with the fused one.
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.learning_rate, eps=config.adam_epsilon,
        fused=device.type in ("cpu", "cuda"),
    )
    steps_per_epoch = math.ceil(math.ceil(len(train_rows) / config.batch_size) / config.grad_accumulation)
    total_steps = max(1, steps_per_epoch * config.epochs)
    scheduler = get_scheduler(
        "constant_with_warmup" if config.scheduler == "constant" else config.scheduler,
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    generator = torch.Generator().manual_seed(config.seed)
    result, best_score, best_state = TrainResult(), None, None
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        train_loss = _train_epoch(model, batcher, train_rows, config, optimizer, scheduler, scaler, generator, device, dtype, frozen_modules,
                                  epoch, on_step, between)
        seconds = time.perf_counter() - started
        # No validation rows (a refit on all training data): train for exactly the epochs asked for.
        started = time.perf_counter()
        if on_step is not None:
            evaluation = dataclasses.replace(evaluation, on_batch=lambda done, total, epoch=epoch: on_step(epoch, done, total, "validation"))
        scores, predictions = evaluate_rows(model, evaluation, device, dtype, config.batch_size) if evaluation.rows else ({}, None)
        record = EpochRecord(epoch, train_loss, scores, seconds, len(train_rows), time.perf_counter() - started, predictions)
        result.history.append(record)
        score = scores.get(metric)
        if score is None:
            result.best_epoch = epoch
        elif best_score is None or (score > best_score if direction == "maximize" else score < best_score):
            best_score, result.best_epoch = score, epoch
            if keep_best and epoch < config.epochs:
                best_state = _trainable_state(model)
            elif keep_best:
                best_state = None  # the final weights are the best ones
        if on_epoch is not None and on_epoch(record):
            result.stopped_early = True
            break
    if keep_best and best_state is not None and result.best_epoch != len(result.history):
        model.load_state_dict(best_state, strict=False)
    del optimizer, scheduler, best_state
    return result


def _train_epoch(model, batcher, rows, config, optimizer, scheduler, scaler, generator, device, dtype, frozen_modules, epoch,  # noqa: ANN001
                 on_step=None, between=None) -> float:
    model.train()
    for module in frozen_modules:
        module.eval()  # frozen layers behave as at inference, matching the frozen-output cache
    total, count = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    batches = list(batcher.batches(rows, config.batch_size, generator))
    for step, (_, batch) in enumerate(batches, start=1):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise TrialError(
                f"training loss became {loss.item()} at epoch {epoch}, step {step}; "
                "lower the learning rate or keep max_grad_norm > 0"
            )
        total += loss.item()
        count += 1
        loss = loss * (config.loss_weight / config.grad_accumulation)
        (scaler.scale(loss) if scaler else loss).backward()
        if step % config.grad_accumulation == 0 or step == len(batches):
            if scaler:
                scaler.unscale_(optimizer)
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if between is not None:
            between()
        if on_step is not None:
            on_step(epoch, step, len(batches), "training")
    return total / max(count, 1)


@torch.no_grad()
def predict_logits(model: Any, evaluation: EvalSet, device: torch.device, dtype: torch.dtype | None, batch_size: int) -> tuple[list[Any], float]:
    """The task's outputs per row in ``evaluation.rows`` order, and the mean loss over their features.

    A row with one feature gets that feature's output; a row with several (windows of a long context)
    gets the list of its (feature, output) pairs.
    """
    model.eval()
    by_feature: dict[int, Any] = {}
    loss_sum, loss_count = 0.0, 0
    inputs = evaluation.features.of(evaluation.rows)
    for chunk, batch in evaluation.batcher.batches(inputs, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            output = model(**batch)
        loss_sum += output.loss.float().item() * len(chunk)
        loss_count += len(chunk)
        by_feature.update(zip(chunk, evaluation.task.outputs(output, batch)))
        if evaluation.between is not None:
            evaluation.between()
        if evaluation.on_batch is not None:
            evaluation.on_batch(loss_count, len(inputs))
    windows = evaluation.features.windows
    if windows is None:
        return [by_feature[row] for row in evaluation.rows], loss_sum / max(loss_count, 1)
    rows = evaluation.features.rows
    return [[(rows[f], by_feature[f]) for f in windows[row]] for row in evaluation.rows], loss_sum / max(loss_count, 1)


def evaluate(model: Any, evaluation: EvalSet, device: torch.device, dtype: torch.dtype | None, batch_size: int) -> dict[str, float]:
    return evaluate_rows(model, evaluation, device, dtype, batch_size)[0]


def evaluate_rows(model: Any, evaluation: EvalSet, device: torch.device, dtype: torch.dtype | None, batch_size: int) -> tuple[dict[str, float], list[Any]]:
    """Metrics of ``evaluation`` and the task's compact prediction for each of its rows."""
    logits, loss = predict_logits(model, evaluation, device, dtype, batch_size)
    if not math.isfinite(loss):
        raise TrialError(f"validation loss is {loss}: the model diverged; lower the learning rate")
    rows = list(evaluation.rows)
    predictions = evaluation.task.decode(logits, evaluation.split, rows, evaluation.label_map)
    scores = evaluation.task.measure(predictions, evaluation.split, rows, evaluation.label_map)
    scores["loss"] = loss
    return scores, predictions


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation weights, as in BERT's recipe."""
    norm_types = (torch.nn.LayerNorm,)
    no_decay: set[str] = set()
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, norm_types) or "norm" in module_name.lower().split(".")[-1]:
                no_decay.add(f"{module_name}.{name}" if module_name else name)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in trainable if n not in no_decay], "weight_decay": weight_decay},
        {"params": [p for n, p in trainable if n in no_decay], "weight_decay": 0.0},
    ]


def _trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
