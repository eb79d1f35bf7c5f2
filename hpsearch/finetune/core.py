"""The fine-tune core: one candidate, one set of parameters, one train/eval split of rows.

Shared by every trial, fold, refit and benchmark. It knows nothing about Optuna or MLflow: the search
drives it through plain arguments and an epoch callback.
"""
from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from hpsearch.data.prepare import StudyData
from hpsearch.data.tokencache import TokenCache, Tokenized, tokenizer_fingerprint
from hpsearch.errors import ModelUnavailable, OutOfMemory, TrialError
from hpsearch.finetune import frozen
from hpsearch.finetune.batching import HiddenBatcher, TokenBatcher, pad_multiple
from hpsearch.finetune.loop import (BetweenBatches, EpochCallback, EvalSet, TrainConfig, TrainResult, autocast_dtype, evaluate, precision_warning,
                                   predict_logits, resolve_precision, train)
from hpsearch.finetune.layouts import layout_of
from hpsearch.finetune.modeling import (Scope, TargetUnitLinear, apply_scope, check_files, count_parameters, fold_target_units,
                                       frozen_modules, hub_cached, load_model, model_dir, output_layer, without_layer)
from hpsearch.spec import Candidate
from hpsearch.tasks import Task, metric_direction

TRAIN_KEYS = ("learning_rate", "epochs", "batch_size", "adam_epsilon", "weight_decay", "warmup_ratio", "scheduler", "grad_accumulation", "max_grad_norm")


@dataclass
class CandidateInputs:
    """A candidate's tokenizer and its tokenized splits (from the shared cache)."""

    folder: Path
    tokenizer: Any
    tokenized: dict[str, Tokenized]
    weights_key: str
    max_length: int  # the tokens its inputs are cut at (FineTuner.max_length_of)


@dataclass
class Fitted:
    """A trained model and how its training went. Call :meth:`close` to free its memory."""

    model: Any
    inputs: CandidateInputs
    result: TrainResult
    trainable_parameters: int
    total_parameters: int
    used_frozen_cache: bool
    extras: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        """Write a Hugging Face folder (weights, config with labels, tokenizer)."""
        model = self.model
        if hasattr(model, "merge_and_unload"):  # LoRA: fold the adapters into plain weights
            model = model.merge_and_unload()
            self.model = model
        fold_target_units(model)  # a regression head trained in its targets' units: plain weights
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        self.inputs.tokenizer.save_pretrained(folder)

    def close(self) -> None:
        self.model = None
        release_memory()


def release_memory() -> None:
    """Free what a finished fit held, reference cycles included (and the GPU memory they pinned)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_tokenizer(candidate: Candidate, split_words: bool = False) -> Any:
    """The tokenizer of ``candidate``, with a pad token, for inputs given as words where ``split_words``; raises
    ModelUnavailable or TrialError."""
    from transformers import AutoTokenizer

    folder = model_dir(candidate)

    def load(**options: Any) -> Any:
        try:
            return AutoTokenizer.from_pretrained(folder, trust_remote_code=candidate.trust_remote_code, **options)
        except (OSError, ValueError, ImportError) as exc:  # missing or damaged files, code not trusted, a package it needs
            raise ModelUnavailable(f"cannot load the tokenizer from {folder}: {exc}") from None

    tokenizer = load()
    if split_words and getattr(tokenizer, "add_prefix_space", None) is False:
        # Byte-level BPE marks the start of a word by the space before it: without one, every word given alone but the
        # first would read as the middle of a word. Saved with the export, so its pipeline splits text the same way.
        tokenizer = load(add_prefix_space=True)
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):  # transformers builds an empty one where the files lack
        raise ModelUnavailable(f"cannot load the tokenizer from {folder}: it has no tokenizer files (tokenizer.json, or a "
                               "vocabulary), so every word would be unknown; save the tokenizer there with save_pretrained")
    if tokenizer.pad_token is None:  # decoders (GPT-2 style) ship none; batches and the classifier need one
        stand_in = tokenizer.eos_token or tokenizer.sep_token
        if stand_in is None:
            raise TrialError(f"the tokenizer of {candidate.name} has no pad, end-of-text or separator token to pad with; "
                             "save the tokenizer with a pad token")
        tokenizer.pad_token = stand_in  # saved with the export, so pipeline() pads the same way
    return tokenizer


def unavailable(candidates: Sequence[Candidate], tokenizer: Callable[[Candidate], Any] = load_tokenizer,
                say: Callable[..., None] = lambda message, **fields: None, task: Task | None = None) -> list[str]:
    """What keeps any of ``candidates`` from being trained, one line each (none: all can be): their files, config,
    depth, a model for ``task`` of their type and tokenizer, checked before a study's first trial so that no trial is
    spent on a model that cannot load. ``say`` hears of each hub model that is fetched (a download of minutes,
    otherwise without a line)."""
    problems = []
    for candidate in candidates:
        if candidate.hub is not None and not hub_cached(candidate):
            say(f"{candidate.name}: fetching {candidate.hub} from the hub (once: it stays in the Hugging Face cache)",
                event="prepare", candidate=candidate.name, step="download")
        try:
            check_files(candidate, task)
            tokenizer(candidate)
        except TrialError as exc:
            problems.append(f"{candidate.name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - whatever else its files raise (its own code, say) is named, not a traceback
            problems.append(f"{candidate.name}: {type(exc).__name__}: {exc}")
    return problems


class FineTuner:
    """Fine-tunes candidates on one study's data; caches tokenization and frozen-layer outputs."""

    def __init__(
        self,
        data: StudyData,
        *,
        cache_dir: Path,
        max_length: int,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        frozen_cache: bool = True,
        metric: str | None = None,
        direction: str | None = None,
        warn: Callable[[str], None] | None = None,
        info: Callable[..., None] | None = None,
    ) -> None:
        self.data = data
        self.task: Task = data.task
        self.metric = metric or self.task.default_metric
        self.direction = direction or metric_direction(self.metric)
        self.max_length = max_length
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        """The precision fits run in ('bf16', 'fp16' or 'fp32'): ``precision`` resolved for this device and task."""
        self.token_cache = TokenCache(cache_dir / "tokens")
        self.frozen_cache = frozen.FrozenOutputCache(cache_dir / "frozen") if frozen_cache else None
        self._inputs: dict[str, CandidateInputs] = {}
        self._tokenizers: dict[str, Any] = {}
        self._said_no_cache: set[tuple[str, str]] = set()
        self._said_cut: set[tuple[str, int]] = set()
        self._lengths: dict[str, int] = {}
        self.warn = warn or (lambda message: None)
        self.info = info or (lambda message, **fields: None)
        """Says what one-off work starts (tokenizing, the frozen layers' outputs), with an event's fields."""
        self.between_batches: BetweenBatches | None = None
        """Called after each batch of every pass a fit makes over the data (training, validation, the frozen layers'
        outputs): the runner's look at this worker's share of the CPU cores, so that a worker joining the machine in
        the middle of any of them is made room for within about a second."""
        if warning := precision_warning(self.precision, self.device):
            self.warn(warning)

    def inputs(self, candidate: Candidate) -> CandidateInputs:
        """Tokenizer and tokenized splits of ``candidate`` (tokenized once, then cached)."""
        if candidate.name not in self._inputs:
            folder = model_dir(candidate)
            tokenizer = self.tokenizer(candidate)
            key, length = tokenizer_fingerprint(folder, tokenizer), self.max_length_of(candidate)
            todo = {name: len(split) for name, split in self.data.splits.items() if not self.token_cache.has(split, self.task, key, length)}
            if todo:
                self.info(f"{candidate.name}: tokenizing {' and '.join(f'{rows:,} {name}' for name, rows in todo.items())} rows "
                          f"(max_length {length}; once, kept for every trial)", event="prepare", candidate=candidate.name,
                          step="tokenize", rows=todo)
            tokenized = {
                name: self.token_cache.tokenize(split, self.task, tokenizer, key, length)
                for name, split in self.data.splits.items()
            }
            self._inputs[candidate.name] = CandidateInputs(folder, tokenizer, tokenized, frozen.weights_fingerprint(folder), length)
            if (key, length) not in self._said_cut:  # candidates that share a tokenizer and length share their cut rows: said once
                self._said_cut.add((key, length))
                for name, split in tokenized.items():
                    self._warn_if_cut(candidate.name, name, split, length)
        return self._inputs[candidate.name]

    def max_length_of(self, candidate: Candidate) -> int:
        """The tokens ``candidate``'s inputs are cut at: data.max_length, or fewer where the model takes fewer
        (:func:`hpsearch.architectures.position_limit`; longer inputs would fail in every trial). Said once."""
        from hpsearch.architectures import input_length
        from hpsearch.spec._files import model_config

        if candidate.name not in self._lengths:
            length, cut_by = input_length(model_config(model_dir(candidate)), self.max_length)
            self._lengths[candidate.name] = length
            if cut_by is not None:
                self.warn(f"{candidate.name}: data.max_length is {self.max_length} but the model takes at most {length} tokens "
                          f"({cut_by} positions): its inputs are cut at {length}")
        return self._lengths[candidate.name]

    def tokenizer(self, candidate: Candidate) -> Any:
        """The tokenizer of ``candidate``, loaded once (:func:`load_tokenizer`)."""
        if candidate.name not in self._tokenizers:
            self._tokenizers[candidate.name] = load_tokenizer(candidate, self.task.split_words)
        return self._tokenizers[candidate.name]

    def _warn_if_cut(self, candidate: str, split: str, tokenized: Tokenized, max_length: int) -> None:
        """Texts that fill max_length were (almost always) cut there: the model never sees their ends.
        (Tasks that cut long inputs into windows lose nothing.)"""
        if tokenized.tokens.windows is not None:
            return
        cut = sum(1 for length in tokenized.lengths() if length >= max_length)
        if cut and max_length < self.max_length:
            self.warn(f"{cut} of {len(tokenized)} {split} rows fill the {max_length} tokens {candidate} takes and are cut there")
        elif cut:
            self.warn(f"{cut} of {len(tokenized)} {split} rows fill data.max_length={max_length} tokens of {candidate}'s "
                      f"tokenizer and are cut there; raise data.max_length if the ends of long texts matter")

    def fit(
        self,
        candidate: Candidate,
        params: dict[str, Any],
        *,
        train_rows: Sequence[int],
        eval_rows: Sequence[int],
        eval_split: str = "train",
        seed: int = 0,
        on_epoch: EpochCallback | None = None,
        keep_best: bool = True,
        train_split: str = "train",
        on_step: Any = None,
    ) -> Fitted:
        """Train on ``train_rows`` of the training split, evaluating ``eval_rows`` of ``eval_split`` each epoch."""
        inputs = self.inputs(candidate)
        scope = Scope.parse(str(params.get("scope", "full")))
        config = TrainConfig(seed=seed, precision=self.precision, **{k: params[k] for k in TRAIN_KEYS if k in params})
        model = load_model(
            inputs.folder, self.task, self.data.label_map,
            num_layers=candidate.num_layers, trust_remote_code=candidate.trust_remote_code, seed=seed,
            pad_token_id=inputs.tokenizer.pad_token_id, untie_shared=scope.kind == "freeze",
        )
        try:  # from here on an error frees the model before it goes up (a worker's next trial needs that memory)
            config = dataclasses.replace(config, loss_weight=self.task.start_head(model, self.data.splits[train_split], train_rows))
            self._start_head_at_shift(model, inputs, train_split, train_rows, config.batch_size)
            model = apply_scope(model, scope, params, candidate.lora_targets, self.task.peft_task_type).to(self.device)
            trainable, total = count_parameters(model)
            depth = self._cache_depth(candidate, model, scope, inputs, {train_split, eval_split})
            train_rows = inputs.tokenized[train_split].tokens.of(train_rows)  # examples -> their features
            if depth is None:
                batcher = self._token_batcher(inputs, train_split)
                evaluation = self._eval_set(self._token_batcher(inputs, eval_split), inputs, eval_split, eval_rows)
                result = train(
                    model, batcher, train_rows, evaluation, config, device=self.device, metric=self.metric,
                    direction=self.direction, on_epoch=on_epoch, frozen_modules=frozen_modules(model, scope), keep_best=keep_best,
                    on_step=on_step, between=self.between_batches,
                )
            else:
                batcher = self._hidden_batcher(model, inputs, train_split, depth, candidate.name)
                evaluation = self._eval_set(self._hidden_batcher(model, inputs, eval_split, depth, candidate.name), inputs, eval_split, eval_rows)
                with frozen.only_layers(model, depth, None, skip_embeddings=True):
                    result = train(
                        model, batcher, train_rows, evaluation, config, device=self.device, metric=self.metric,
                        direction=self.direction, on_epoch=on_epoch, keep_best=keep_best, on_step=on_step, between=self.between_batches,
                    )
        except torch.OutOfMemoryError as exc:
            del model
            release_memory()
            raise OutOfMemory(f"out of memory with batch_size={config.batch_size}: lower batch_size or max_length ({exc})") from None
        except BaseException:
            del model
            release_memory()
            raise
        return Fitted(model, inputs, result, trainable, total, depth is not None)

    def latency_ms(self, candidate: Candidate, split: str, rows: Sequence[int], repeats: int = 3, batch_size: int = 32) -> float:
        """Inference milliseconds per example of ``candidate`` as it is served: in fp32, as ``transformers.pipeline``
        runs the export (median of ``repeats`` passes over ``rows``).

        Measured on the pretrained model with a fresh head: the values of the weights, and the training
        scope (LoRA adapters are merged into the export), do not change the compute; the layer cut does.
        """
        import time

        fitted = self.fit(candidate, {"learning_rate": 1e-5, "epochs": 0, "scope": "full"}, train_rows=[], eval_rows=[], train_split=split)
        try:
            self.predict(fitted, split, rows[:8], batch_size, served=True)  # warm-up: first calls allocate
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                self.predict(fitted, split, rows, batch_size, served=True)
                timings.append((time.perf_counter() - started) * 1000 / max(len(rows), 1))
            return sorted(timings)[len(timings) // 2]
        finally:
            fitted.close()

    def score(self, fitted: Fitted, split: str, rows: Sequence[int] | None = None, batch_size: int = 32, served: bool = False) -> dict[str, float]:
        """Metrics of a fitted model on ``rows`` (default: all) of ``split``; ``served``: in fp32, as
        ``transformers.pipeline`` runs the export, rather than in the training precision."""
        evaluation = self._full_eval_set(fitted, split, rows)
        return evaluate(fitted.model, evaluation, self.device, None if served else autocast_dtype(self.device, self.precision), batch_size)

    def predict(self, fitted: Fitted, split: str, rows: Sequence[int] | None = None, batch_size: int = 32, served: bool = False) -> list[Any]:
        """The task's per-row outputs of a fitted model (see ``loop.predict_logits``; ``served`` as in :meth:`score`)."""
        evaluation = self._full_eval_set(fitted, split, rows)
        dtype = None if served else autocast_dtype(self.device, self.precision)
        logits, _ = predict_logits(fitted.model, evaluation, self.device, dtype, batch_size)
        return logits

    # -- helpers ---------------------------------------------------------------------------------

    def _start_head_at_shift(self, model: Any, inputs: CandidateInputs, split: str, rows: Sequence[int], batch_size: int,
                             sample: int = 256) -> None:
        """Where the task's output layer has a shift but no bias to hold it (a decoder's regression head, see
        :class:`~hpsearch.finetune.modeling.TargetUnitLinear`), put it in the layer's weights from what the
        pretrained model feeds the layer on up to ``sample`` of the training rows (spread over them), so the head
        starts at the targets' mean as a head with a bias does; else a decoder's epochs go to that offset (tiny
        decoders on targets 10 standard deviations from 0 ended 5 to 10 times as far off as predicting the mean)."""
        layer = output_layer(model)
        if not isinstance(layer, TargetUnitLinear) or not layer.unplaced_shift or not rows:
            return
        rows = list(rows)[:: max(1, len(rows) // sample)][:sample]
        captured: list[torch.Tensor] = []
        dtype = autocast_dtype(self.device, self.precision)
        model.to(self.device).eval()
        with without_layer(model, layer), torch.no_grad():  # the model's outputs are the layer's inputs, pooled as ever
            for _, batch in self._token_batcher(inputs, split).batches(inputs.tokenized[split].tokens.of(rows), batch_size):
                batch = {k: v.to(self.device) for k, v in batch.items() if k != "labels"}
                with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                    captured.append(model(**batch).logits.float().reshape(-1, layer.in_features).cpu())
        layer.start_at_shift(torch.cat(captured))

    def _full_eval_set(self, fitted: Fitted, split: str, rows: Sequence[int] | None) -> EvalSet:
        rows = list(range(len(self.data.splits[split]))) if rows is None else rows
        return self._eval_set(self._token_batcher(fitted.inputs, split), fitted.inputs, split, rows)

    def _eval_set(self, batcher: Any, inputs: CandidateInputs, split: str, rows: Sequence[int]) -> EvalSet:
        return EvalSet(batcher, rows, self.data.splits[split], self.data.label_map, self.task, inputs.tokenized[split].tokens,
                       self.between_batches)

    def _token_batcher(self, inputs: CandidateInputs, split: str) -> TokenBatcher:
        return TokenBatcher(inputs.tokenized[split].features, self.task.collator(inputs.tokenizer, self._pad_multiple(inputs)))

    def _hidden_batcher(self, model: Any, inputs: CandidateInputs, split: str, depth: int, candidate: str) -> HiddenBatcher:
        assert self.frozen_cache is not None
        tokenized = inputs.tokenized[split]

        def announce() -> None:
            self.info(f"{candidate}: computing the outputs of its {depth} frozen bottom layer(s) for {len(tokenized.features):,} {split} "
                      "inputs (once, kept for every fit with them frozen)", event="prepare", candidate=candidate, step="frozen_layers",
                      layers=depth, rows=len(tokenized.features))

        show = getattr(self.info, "step", None)  # the progress's display of long work, where it has one
        on_rows = (lambda done, total: show(done, total, f"{candidate}: frozen layers' outputs for {split}", unit="input")) if show else None
        hidden = self.frozen_cache.get(model, depth, self._token_batcher(inputs, split), inputs.weights_key, tokenized.key, self.device,
                                       autocast_dtype(self.device, self.precision), announce, self.between_batches, on_rows)
        return HiddenBatcher(hidden, tokenized.features, self.task.target_keys, self._pad_multiple(inputs))

    def _pad_multiple(self, inputs: CandidateInputs) -> int | None:
        """The multiple of tokens a candidate's batches are padded to (see :func:`~hpsearch.finetune.batching.pad_multiple`);
        None for a task whose loss spans the padding."""
        return None if self.task.loss_sees_padding else pad_multiple(inputs.max_length)

    def _cache_depth(self, candidate: Candidate, model: Any, scope: Scope, inputs: CandidateInputs, splits: set[str]) -> int | None:
        """How many bottom blocks' outputs come from the frozen-layer cache for a fit on ``splits`` (None: no cache for
        this fit)."""
        if self.frozen_cache is None or scope.kind not in ("freeze", "head"):
            return None
        depth = len(layout_of(model).block_list) if scope.kind == "head" else scope.frozen_layers
        kind, why = "model", frozen.cache_off(model)
        if why is None:
            kind, why = "memory", self._cache_too_big(model, inputs, splits, depth)
        if why is None:
            return depth
        if (candidate.name, kind) not in self._said_no_cache:  # once per candidate, not once per fold
            self._said_no_cache.add((candidate.name, kind))
            self.warn(f"frozen-layer cache off for {candidate.name}: {why}; its frozen layers run at every step (same result, slower)")
        return None

    def _cache_too_big(self, model: Any, inputs: CandidateInputs, splits: set[str], depth: int) -> str | None:
        """Why the cache of a fit's splits would not fit in memory (None: it fits, or is held already). The stored states
        grow with tokens times the model's width: 655,380 rows of about 30 tokens from a 384-wide model take 29 GiB."""
        assert self.frozen_cache is not None
        width = getattr(model.config, "hidden_size", None)
        dtype = autocast_dtype(self.device, self.precision)
        key = inputs.weights_key
        todo = [s for s in splits if not self.frozen_cache.held(key, inputs.tokenized[s].key, depth, dtype)]
        if not isinstance(width, int) or not todo:
            return None
        need = sum(frozen.stored_bytes(inputs.tokenized[s].lengths(), width) for s in todo)
        available = frozen.available_memory()
        if available is None or need <= available * frozen.MEMORY_SHARE:
            return None
        return (f"the outputs of its {depth} frozen bottom layer(s) would take {need / 2**30:.1f} GiB, more than "
                f"{frozen.MEMORY_SHARE:.0%} of the {available / 2**30:.1f} GiB of memory free (a smaller data.max_length or "
                "data.subsample makes them fit)")


def load_fitted(tuner: FineTuner, candidate: Candidate, folder: Path) -> Fitted:
    """A model saved by :meth:`Fitted.save`, ready for :meth:`FineTuner.score` and ``predict``."""
    model = tuner.task.model_class().from_pretrained(folder, trust_remote_code=candidate.trust_remote_code).to(tuner.device)
    trainable, total = count_parameters(model)
    return Fitted(model, tuner.inputs(candidate), TrainResult(), trainable, total, False)
