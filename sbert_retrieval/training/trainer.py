"""The training loop for bi-encoders and cross-encoders.

One loop serves both (:class:`BiEncoderTrainer`, :class:`CrossEncoderTrainer`): AdamW with
weight decay (not on biases and LayerNorm weights), linear warm-up over ``warmup_ratio`` of the
steps then linear decay to 0, gradient clipping, mixed precision on CUDA (float16 autocast with a
gradient scaler, or bfloat16 autocast), evaluation on a dev set every ``eval_steps`` and at the
end, and checkpoints every ``save_steps``.

Determinism: Python's, NumPy's and torch's RNGs are seeded from ``seed``; each epoch's order is a
permutation drawn from a generator seeded by ``(seed, epoch)``, so the whole batch plan is known
up front. On CPU the same seed gives bit-identical weights; on CUDA, kernels may still differ
in the last bits between runs.

A checkpoint (``output_dir/checkpoint-STEP/``) holds the model (in its saving layout, loadable as
is), ``training_state.pt`` (optimizer, scheduler, gradient scaler, loss parameters, every RNG
state) and ``trainer_state.json`` (step, settings, data fingerprint, history). Resuming from it
continues exactly where the run was: a resumed run ends with the same weights as one that was
never interrupted. The final model is saved in ``output_dir`` itself, with
``training_report.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from sbert_retrieval.encoding.bi_encoder import BiEncoder, cpu_native_bf16, resolve_device
from sbert_retrieval.encoding.engine import EngineConfig
from sbert_retrieval.models import default_prefixes
from sbert_retrieval.reranking import CrossEncoderReranker
from sbert_retrieval.training.data import (
    Example,
    GroupExample,
    PairExample,
    TripletExample,
    examples_fingerprint,
)
from sbert_retrieval.training.losses import (
    BiEncoderLoss,
    CrossEncoderListwiseLoss,
    CrossEncoderLoss,
    MultipleNegativesRankingLoss,
    SoftmaxLoss,
    TripletLoss,
    make_bi_encoder_loss,
    make_cross_encoder_loss,
)
from sbert_retrieval.training.saving import save_bi_encoder, save_cross_encoder

__all__ = [
    "PRECISIONS",
    "BiEncoderTrainer",
    "CrossEncoderTrainer",
    "TrainingConfig",
    "TrainingResult",
    "latest_checkpoint",
    "set_seed",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "fp32", "float16", "fp16", "bfloat16", "bf16")
SAVE_DTYPES = ("float32", "float16", "bfloat16")
_CHECKPOINT_FORMAT = "sbert-retrieval/training-checkpoint"
_CHECKPOINT_VERSION = 1
# Settings a resumed run must share with the run it continues.
_RESUME_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "seed",
    "max_seq_length",
    "max_steps",
)

M = TypeVar("M")
EvaluatorFn = Callable[[Any], Mapping[str, float]]


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of a training run.

    Attributes:
        output_dir: Where checkpoints, the log and the final model go.
        epochs: Passes over the training examples (default 1).
        batch_size: Examples per optimizer step (default 32; MNRL: in-batch negatives).
        lr: Peak learning rate of AdamW (default 2e-5).
        warmup_ratio: Fraction of the steps with linear warm-up from 0 (default 0.1); linear
            decay to 0 follows.
        weight_decay: AdamW decoupled weight decay, not applied to biases and norms (0.01).
        max_grad_norm: Gradient clipping by global L2 norm; 0 disables (default 1.0).
        seed: Seeds weights of new heads, dropout and the data order (default 42).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``None``/``auto`` (CUDA when available).
        precision: ``auto`` (float16 autocast on CUDA; on CPU bfloat16 autocast where the
            CPU computes it natively, else float32), ``float32``, ``float16`` (CUDA only) or
            ``bfloat16``. Weights stay float32.
        max_seq_length: Tokens per text (bi-encoder) or per pair (cross-encoder); default:
            the model's own limit.
        eval_steps: Evaluate every N steps (0: only at the end; the end always evaluates).
        save_steps: Checkpoint every N steps (0: none).
        save_total_limit: Keep only the newest N checkpoints (``None``: keep all).
        max_steps: Stop after N steps (the schedule is planned for N); ``None``: all epochs.
        log_steps: Log the mean loss every N steps (0: never).
        save_dtype: Dtype of the final model's weights: ``float32``, ``float16``,
            ``bfloat16``. Checkpoints are always float32 so resuming is exact.
        show_progress: A tqdm bar over the steps.
        keep_best: Save the weights of the evaluation with the best dev score (the
            evaluator's ``main_metric``, higher is better) instead of the last step's; needs an
            evaluator, so evaluate every ``eval_steps``. The best weights wait in
            ``output_dir/best-STEP`` (float32) until the end, so a resumed run keeps them too.
        group_by_length: Batch examples of similar length together (within windows of 64
            batches of the shuffled order, batches then shuffled), so a batch pads little:
            what makes mixed sentence/paragraph data affordable on CPU. Default off.
    """

    output_dir: str | os.PathLike[str]
    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    device: str | None = None
    precision: str = "auto"
    max_seq_length: int | None = None
    eval_steps: int = 0
    save_steps: int = 0
    save_total_limit: int | None = None
    max_steps: int | None = None
    log_steps: int = 50
    save_dtype: str = "float32"
    show_progress: bool = False
    keep_best: bool = False
    group_by_length: bool = False

    def __post_init__(self) -> None:
        """Reject impossible settings with a message that says what is valid."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, value in (
            ("eval_steps", self.eval_steps),
            ("save_steps", self.save_steps),
            ("log_steps", self.log_steps),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables), got {value}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("weight_decay and max_grad_norm must be >= 0")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}"
            )
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(
                f"unknown save_dtype {self.save_dtype!r}; valid: {', '.join(SAVE_DTYPES)}"
            )
        for name, limit in (
            ("max_seq_length", self.max_seq_length),
            ("max_steps", self.max_steps),
            ("save_total_limit", self.save_total_limit),
        ):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {limit}")

    @property
    def output_path(self) -> Path:
        """``output_dir`` as a :class:`~pathlib.Path`. Thread safety: immutable."""
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``output_dir`` as a string). Thread safety: immutable."""
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


@dataclass(frozen=True)
class TrainingResult:
    """What a training run did.

    Attributes:
        output_dir: Where the final model is.
        steps: Optimizer steps taken in total (including those before a resume).
        total_steps: Steps planned.
        epochs: Epochs planned.
        examples: Training examples.
        seconds: Wall time of this call (not counting the run before a resume).
        main_metric: The evaluator's headline metric name, ``None`` without an evaluator.
        main_score: Its value for the saved weights.
        metrics: The evaluation of the saved weights (the last one; with ``keep_best``, the best).
        history: Every evaluation: ``{"step": N, "metrics": {...}}``.
        final_loss: Mean training loss over the last ``log_steps`` steps (or fewer).
        resumed_from: The checkpoint this run continued, if any.
        device: Where it ran.
        precision: ``float32``, ``float16`` or ``bfloat16``.
        selected_step: The step whose weights were saved (``steps`` unless ``keep_best`` chose
            an earlier evaluation).
    """

    output_dir: str
    steps: int
    total_steps: int
    epochs: int
    examples: int
    seconds: float
    main_metric: str | None
    main_score: float | None
    metrics: Mapping[str, float] = field(default_factory=dict)
    history: tuple[Mapping[str, Any], ...] = ()
    final_loss: float | None = None
    resumed_from: str | None = None
    device: str = "cpu"
    precision: str = "float32"
    selected_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON report. Thread safety: immutable."""
        return {
            "output": self.output_dir,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "epochs": self.epochs,
            "examples": self.examples,
            "seconds": round(self.seconds, 3),
            "dev_metric": self.main_metric,
            "dev_score": self.main_score,
            "dev": dict(self.metrics),
            "final_loss": self.final_loss,
            "resumed_from": self.resumed_from,
            "device": self.device,
            "precision": self.precision,
            "selected_step": self.selected_step if self.selected_step is not None else self.steps,
            "history": [dict(h) for h in self.history],
        }


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) global RNGs.

    Thread safety: changes process-wide state; call before starting other threads' work.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _rng_state() -> dict[str, Any]:
    np_state = cast(tuple[Any, ...], np.random.get_state())
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [
            str(np_state[0]),
            [int(x) for x in np_state[1]],
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for plain float32."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        # bfloat16 autocast on a CPU that computes it natively (~2.4x the float32 steps on
        # AVX512-BF16); emulated elsewhere, where it is several times slower than float32.
        return torch.bfloat16 if device.type == "cpu" and cpu_native_bf16() else None
    if precision in ("float32", "fp32"):
        return None
    if device.type == "cpu" and precision in ("bfloat16", "bf16"):
        return torch.bfloat16
    if device.type != "cuda":
        raise ValueError(
            f"precision {precision!r} (float16 autocast) runs on CUDA only; on {device} use"
            " precision 'float32', 'bfloat16' or 'auto'"
        )
    return torch.float16 if precision in ("float16", "fp16") else torch.bfloat16


def _checkpoint_step(path: Path) -> int | None:
    prefix = "checkpoint-"
    if path.is_dir() and path.name.startswith(prefix) and path.name[len(prefix) :].isdigit():
        return int(path.name[len(prefix) :])
    return None


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The ``checkpoint-STEP`` folder with the highest step in ``output_dir``, if any.

    Thread safety: reads the directory only.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = [(s, p) for p in root.iterdir() if (s := _checkpoint_step(p)) is not None]
    return max(found)[1] if found else None


class _Trainer(Generic[M]):
    """The loop shared by both trainers; subclasses supply the model, the loss and saving."""

    kind: ClassVar[str] = ""

    def __init__(
        self,
        examples: Sequence[Example],
        config: TrainingConfig,
        evaluator: EvaluatorFn | None,
    ) -> None:
        if not examples:
            raise ValueError("no training examples")
        self.examples = list(examples)
        self.config = config
        self.evaluator = evaluator
        self.device = resolve_device(config.device)
        self.autocast_dtype = _resolve_precision(config.precision, self.device)
        self.history: list[dict[str, Any]] = []
        self._no_duplicates = False
        self._best: tuple[int, float, dict[str, float]] | None = None
        if config.keep_best and not self.main_metric:
            raise ValueError(
                "keep_best needs an evaluator with a main_metric to compare evaluations by"
                " (e.g. StsEvaluator, RerankingEvaluator); pass evaluator=... or keep_best=False"
            )

    # -- subclass hooks ---------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        """The transformers model being trained. Thread safety: see :meth:`train`."""
        raise NotImplementedError

    @property
    def loss_module(self) -> nn.Module:
        """The loss, which may hold parameters (SoftmaxLoss). Thread safety: see :meth:`train`."""
        raise NotImplementedError

    @property
    def eval_target(self) -> M:
        """What the evaluator receives. Thread safety: see :meth:`train`."""
        raise NotImplementedError

    def _batch_loss(self, batch: Sequence[Example]) -> Tensor:
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str], *, dtype: str = "float32") -> Path:
        """Save the model being trained (see the subclasses). Thread safety: not while it trains."""
        raise NotImplementedError

    def _load_weights(self, path: Path) -> None:
        raise NotImplementedError

    # -- planning -------------------------------------------------------------------------
    def _texts(self, example: Example) -> tuple[str, ...]:
        if isinstance(example, PairExample):
            return (example.a, example.b)
        if isinstance(example, GroupExample):
            return (example.query, example.positive, *example.negatives)
        return (example.anchor, example.positive, example.negative)

    def _length(self, index: int) -> int:
        """An example's size in characters (what length-grouped batching sorts by)."""
        return sum(len(t) for t in self._texts(self.examples[index]))

    def _epoch_batches(self, order: list[int], epoch: int) -> list[list[int]]:
        size = self.config.batch_size
        streams: dict[type, list[int]] = {}
        for i in order:  # Pairs, triplets and groups never share a batch.
            streams.setdefault(type(self.examples[i]), []).append(i)
        batches: list[list[int]] = []
        for stream in streams.values():
            if not self._no_duplicates:
                if self.config.group_by_length:
                    window = size * 64
                    for s in range(0, len(stream), window):
                        part = sorted(stream[s : s + window], key=self._length)
                        batches.extend(part[b : b + size] for b in range(0, len(part), size))
                    continue
                batches.extend(stream[s : s + size] for s in range(0, len(stream), size))
                continue
            # No text twice in a batch: a duplicate would be a false in-batch negative (MNRL).
            remaining = stream
            while remaining:
                batch: list[int] = []
                seen: set[str] = set()
                rest: list[int] = []
                for position, i in enumerate(remaining):
                    if len(batch) == size:
                        rest.extend(remaining[position:])
                        break
                    texts = self._texts(self.examples[i])
                    if seen.isdisjoint(texts):
                        batch.append(i)
                        seen.update(texts)
                    else:
                        rest.append(i)
                batches.append(batch)
                remaining = rest
        if len(streams) > 1 or self.config.group_by_length:
            random.Random(f"{self.config.seed}\x1f{epoch}").shuffle(batches)
        return batches

    def plan(self) -> list[list[int]]:
        """Every step's example indices, all epochs, in training order (deterministic).

        Thread safety: pure function of the examples and the config.
        """
        batches: list[list[int]] = []
        for epoch in range(self.config.epochs):
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.examples), generator=generator).tolist()
            batches.extend(self._epoch_batches(order, epoch))
            if self.config.max_steps is not None and len(batches) >= self.config.max_steps:
                break
        if self.config.max_steps is not None:
            batches = batches[: self.config.max_steps]
        return batches

    # -- optimizer ------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        named = [*self.module.named_parameters(), *self.loss_module.named_parameters()]
        for name, parameter in named:
            if not parameter.requires_grad:
                continue
            lowered = name.lower()
            if lowered.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered:
                no_decay.append(parameter)
            else:
                decay.append(parameter)
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.config.lr)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Run the evaluator on the current weights (eval mode, then back to train mode).

        Returns:
            The metrics; ``{}`` without an evaluator.

        Thread safety: not while a training step runs.
        """
        if self.evaluator is None:
            return {}
        was_training = self.module.training
        self.module.eval()
        try:
            return {k: float(v) for k, v in self.evaluator(self.eval_target).items()}
        finally:
            self.module.train(was_training)

    @property
    def main_metric(self) -> str | None:
        """The evaluator's headline metric name. Thread safety: read-only."""
        if self.evaluator is None:
            return None
        return str(getattr(self.evaluator, "main_metric", "")) or None

    # -- checkpoints ----------------------------------------------------------------------
    def _state(self, step: int, total: int, fingerprint: str) -> dict[str, Any]:
        return {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "kind": self.kind,
            "step": step,
            "total_steps": total,
            "examples": len(self.examples),
            "data_fingerprint": fingerprint,
            "config": self.config.to_dict(),
            "history": self.history,
        }

    def _save_checkpoint(
        self,
        *,
        step: int,
        total: int,
        fingerprint: str,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler | None,
    ) -> Path:
        root = self.config.output_path

        def write_state(folder: Path) -> None:
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "loss": self.loss_module.state_dict(),
                    "rng": _rng_state(),
                },
                folder / "training_state.pt",
            )
            (folder / "trainer_state.json").write_text(
                json.dumps(self._state(step, total, fingerprint), indent=1), encoding="utf-8"
            )

        final = self._save_folder(f"checkpoint-{step}", write_state)
        limit = self.config.save_total_limit
        if limit is not None:
            found = sorted((s, p) for p in root.iterdir() if (s := _checkpoint_step(p)) is not None)
            for _, old in found[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _save_folder(self, name: str, write_extra: Callable[[Path], object]) -> Path:
        """Save the float32 model plus ``write_extra``'s files as ``output_dir/name``.

        Written under a temporary name and renamed, so ``name`` is never a half-written folder.
        """
        root = self.config.output_path
        final, tmp = root / name, root / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        self.save(tmp, dtype="float32")
        write_extra(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        return final

    def _check_resumable(self, state: Mapping[str, Any], total: int, fingerprint: str) -> None:
        if state.get("format") != _CHECKPOINT_FORMAT or state.get("kind") != self.kind:
            raise ValueError(
                f"not a {self.kind} training checkpoint (format {state.get('format')!r}, kind"
                f" {state.get('kind')!r})"
            )
        saved = state.get("config", {})
        mine = self.config.to_dict()
        problems = [
            f"{key}: checkpoint {saved.get(key)!r}, now {mine[key]!r}"
            for key in _RESUME_KEYS
            if saved.get(key) != mine[key]
        ]
        if state.get("data_fingerprint") != fingerprint:
            problems.append(
                f"training data: checkpoint has {state.get('examples')} examples with fingerprint"
                f" {state.get('data_fingerprint')}, now {len(self.examples)} with {fingerprint}"
            )
        if state.get("total_steps") != total:
            problems.append(f"total steps: checkpoint {state.get('total_steps')}, now {total}")
        if problems:
            raise ValueError(
                "cannot resume: the run differs from the checkpoint's: " + "; ".join(problems)
            )

    # -- the loop -------------------------------------------------------------------------
    def train(
        self,
        *,
        resume_from: str | os.PathLike[str] | None = None,
        on_step: Callable[[int, float], None] | None = None,
        on_evaluate: Callable[[int, Mapping[str, float]], None] | None = None,
    ) -> TrainingResult:
        """Train, evaluate, checkpoint, and save the final model to ``output_dir``.

        Args:
            resume_from: A ``checkpoint-STEP`` folder, or ``"latest"`` for the newest one in
                ``output_dir``; the run continues exactly from there.
            on_step: Called after each optimizer step with ``(step, loss)``.
            on_evaluate: Called after each evaluation with ``(step, metrics)``.

        Returns:
            The run's :class:`TrainingResult` (also written to ``training_report.json``).

        Raises:
            ValueError: The checkpoint does not match this run (settings, data) or is missing.

        Thread safety: one call at a time per trainer; the model must not be used elsewhere
        while it trains.
        """
        started = time.perf_counter()
        config = self.config
        root = config.output_path
        root.mkdir(parents=True, exist_ok=True)
        set_seed(config.seed)
        batches = self.plan()
        total = len(batches)
        fingerprint = examples_fingerprint(self.examples)
        self.module.to(self.device)
        self.loss_module.to(self.device)
        optimizer = self._optimizer()
        warmup = math.ceil(total * config.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(warmup, total))
        scaler = (
            torch.amp.GradScaler(self.device.type) if self.autocast_dtype == torch.float16 else None
        )
        start = 0
        resumed: Path | None = None
        self.history = []
        if resume_from is not None:
            resumed = self._resolve_checkpoint(resume_from)
            state = json.loads((resumed / "trainer_state.json").read_text(encoding="utf-8"))
            self._check_resumable(state, total, fingerprint)
            self._load_weights(resumed)
            saved = torch.load(resumed / "training_state.pt", map_location="cpu", weights_only=True)
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            if scaler is not None and saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            self.loss_module.load_state_dict(saved["loss"])
            _restore_rng(saved["rng"])
            self.history = [dict(h) for h in state.get("history", [])]
            start = int(state["step"])
            logger.info("resumed from %s at step %d of %d", resumed, start, total)
        self._best = self._restore_best(start) if config.keep_best else None

        log_file = root / "training_log.jsonl"
        # Train mode only while stepping: afterwards the encoder/reranker is used for inference.
        self.module.train()
        self.loss_module.train()
        try:
            parameters = [
                p for group in optimizer.param_groups for p in group["params"] if p.requires_grad
            ]
            recent: list[float] = []
            steps: Iterator[int] = iter(range(start, total))
            if config.show_progress:
                from tqdm.auto import tqdm

                steps = iter(tqdm(range(start, total), initial=start, total=total, desc="Training"))
            for index in steps:
                batch = [self.examples[i] for i in batches[index]]
                with self._autocast():
                    loss = self._batch_loss(batch)
                if scaler is not None:
                    scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()  # type: ignore[no-untyped-call]
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step = index + 1
                value = float(loss.detach())
                recent.append(value)
                del recent[: -max(config.log_steps, 1)]
                if on_step is not None:
                    on_step(step, value)
                if config.log_steps and step % config.log_steps == 0:
                    record = {"step": step, "loss": sum(recent) / len(recent)}
                    record["lr"] = float(scheduler.get_last_lr()[0])
                    logger.info("step %d/%d loss %.4f", step, total, record["loss"])
                    with log_file.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
                if step == total:
                    break
                if config.eval_steps and step % config.eval_steps == 0:
                    self._record_evaluation(step, log_file, on_evaluate)
                if config.save_steps and step % config.save_steps == 0:
                    self._save_checkpoint(
                        step=step,
                        total=total,
                        fingerprint=fingerprint,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        scaler=scaler,
                    )
        finally:
            self.module.eval()
            self.loss_module.eval()
        metrics = self._record_evaluation(total, log_file, on_evaluate)
        selected = total
        if self._best is not None and self._best[0] != total:
            selected, _, metrics = self._best
            self._load_weights(self._best_dir(selected))
            logger.info("keeping the weights of step %d (best %s)", selected, self.main_metric)
        self.save(root, dtype=config.save_dtype)
        for stale in root.glob("best-*"):
            shutil.rmtree(stale, ignore_errors=True)
        main = self.main_metric
        result = TrainingResult(
            output_dir=str(root),
            steps=total,
            total_steps=total,
            epochs=config.epochs,
            examples=len(self.examples),
            seconds=time.perf_counter() - started,
            main_metric=main,
            main_score=metrics.get(main) if main else None,
            metrics=metrics,
            history=tuple(self.history),
            final_loss=sum(recent) / len(recent) if recent else None,
            resumed_from=str(resumed) if resumed is not None else None,
            device=str(self.device),
            precision=str(self.autocast_dtype or torch.float32).removeprefix("torch."),
            selected_step=selected,
        )
        (root / "training_report.json").write_text(
            json.dumps(result.to_dict(), indent=1), encoding="utf-8"
        )
        return result

    def _record_evaluation(
        self,
        step: int,
        log_file: Path,
        on_evaluate: Callable[[int, Mapping[str, float]], None] | None,
    ) -> dict[str, float]:
        if self.evaluator is None:
            return {}
        metrics = self.evaluate()
        self.history.append({"step": step, "metrics": metrics})
        logger.info("step %d: %s", step, metrics)
        with log_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "eval": metrics}) + "\n")
        if self.config.keep_best:
            self._consider_best(step, metrics)
        if on_evaluate is not None:
            on_evaluate(step, metrics)
        return metrics

    # -- keep_best ------------------------------------------------------------------------
    def _best_dir(self, step: int) -> Path:
        return self.config.output_path / f"best-{step}"

    def _consider_best(self, step: int, metrics: Mapping[str, float]) -> None:
        name = self.main_metric
        if name is None or name not in metrics:
            raise ValueError(
                f"keep_best compares {name!r}, but the evaluator returned {sorted(metrics)}"
            )
        score = metrics[name]
        if self._best is not None and not score > self._best[1]:
            return
        record = {"step": step, "score": score, "metrics": dict(metrics)}
        target = self._save_folder(
            self._best_dir(step).name,
            lambda folder: (folder / "best.json").write_text(json.dumps(record), encoding="utf-8"),
        )
        # The new best is complete on disk before the old one goes, so a crash keeps one.
        for old in self.config.output_path.glob("best-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        self._best = (step, score, dict(metrics))

    def _restore_best(self, start: int) -> tuple[int, float, dict[str, float]] | None:
        """The best evaluation saved at or before ``start`` (a fresh run, ``start`` 0, has none).

        Bests saved after the resumed checkpoint are dropped: the resumed run evaluates those
        steps again.
        """
        found: list[tuple[float, int, dict[str, float]]] = []
        for folder in self.config.output_path.glob("best-*"):
            try:
                record = json.loads((folder / "best.json").read_text(encoding="utf-8"))
                step, score = int(record["step"]), float(record["score"])
                metrics = {str(k): float(v) for k, v in record["metrics"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                step = -1
            if 0 < step <= start and folder == self._best_dir(step):
                found.append((score, step, metrics))
            else:
                shutil.rmtree(folder, ignore_errors=True)
        if not found:
            return None
        score, step, metrics = max(found)
        for _, other_step, _ in found:
            if other_step != step:
                shutil.rmtree(self._best_dir(other_step), ignore_errors=True)
        return step, score, metrics

    def _resolve_checkpoint(self, resume_from: str | os.PathLike[str]) -> Path:
        if str(resume_from) == "latest":
            found = latest_checkpoint(self.config.output_path)
            if found is None:
                raise ValueError(
                    f"no checkpoint-STEP folder in {self.config.output_path} to resume from"
                )
            return found
        path = Path(resume_from)
        if (
            not (path / "trainer_state.json").is_file()
            or not (path / "training_state.pt").is_file()
        ):
            raise ValueError(
                f"{path} is not a training checkpoint (expected trainer_state.json and"
                " training_state.pt; pass a checkpoint-STEP folder or 'latest')"
            )
        return path


def _copy_weights(target: nn.Module, loaded: nn.Module) -> None:
    missing, unexpected = target.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint weights do not fit the model: missing {sorted(missing)[:5]},"
            f" unexpected {sorted(unexpected)[:5]}"
        )


def evaluation_engine(device: torch.device) -> EngineConfig | None:
    """The engine settings of a model being trained: bulk encoding stays on its own device.

    A ``cuda`` encoder otherwise fans bulk encodes (a dev-set evaluation) out to one worker
    process per visible GPU, and those workers load the weights from disk: the starting
    checkpoint, not the weights being trained. ``None`` (the default engine) off CUDA.
    """
    if device.type != "cuda":
        return None
    return EngineConfig(devices=(str(device),))


class BiEncoderTrainer(_Trainer[BiEncoder]):
    """Fine-tunes a sentence-transformers bi-encoder with an SBERT objective.

    The model is loaded as a :class:`~sbert_retrieval.encoding.BiEncoder` (float32 weights,
    its own pooling and normalization), so embeddings in training are exactly what the encoder
    produces at inference. The final model and checkpoints are saved in the sentence-transformers
    layout (:func:`~sbert_retrieval.training.saving.save_bi_encoder`).

    Args:
        model: Hub id or directory of the starting bi-encoder.
        examples: :class:`PairExample` and/or :class:`TripletExample`, as the loss needs:
            ``mnrl`` positive pairs or triplets (third text = hard negative); ``cosine`` pairs
            with scores in ``[0, 1]``; ``softmax`` pairs with class ids; ``triplet`` triplets.
        config: The run's settings.
        loss: A name from :data:`~sbert_retrieval.training.losses.BI_ENCODER_LOSSES` or a
            :class:`~sbert_retrieval.training.losses.BiEncoderLoss`.
        evaluator: Called with the :class:`BiEncoder` on dev data (e.g. :class:`StsEvaluator`).
        num_labels: Classes for ``softmax`` (default: the highest label + 1).
        query_prefix / passage_prefix: Prepended to the first text / the other texts (default:
            the model's ``query`` and ``passage``/``document`` prompts, else none).

    Thread safety: not thread-safe; one thread drives training.
    """

    kind = "bi-encoder"

    def __init__(
        self,
        model: str | os.PathLike[str],
        examples: Sequence[Example],
        config: TrainingConfig,
        *,
        loss: str | BiEncoderLoss = "mnrl",
        evaluator: EvaluatorFn | None = None,
        num_labels: int | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
    ) -> None:
        super().__init__(examples, config, evaluator)
        self.encoder = BiEncoder(
            model,
            device=str(self.device),
            dtype="float32",
            max_seq_length=config.max_seq_length,
            batch_size=config.batch_size,
            engine=evaluation_engine(self.device),
            # Evaluators encode with the weights being trained: never an exported copy.
            backend="torch",
        )
        self.query_prefix, self.passage_prefix = default_prefixes(
            self.encoder.prompts, query_prefix, passage_prefix
        )
        if isinstance(loss, str):
            if loss == "softmax" and num_labels is None:
                num_labels = max(2, 1 + max(int(getattr(e, "label", 0)) for e in self.examples))
            loss = make_bi_encoder_loss(
                loss, dimension=self.encoder.dimension, num_labels=num_labels, seed=config.seed
            )
        self.loss = loss
        self._no_duplicates = isinstance(loss, MultipleNegativesRankingLoss)
        self._check_examples()

    def _check_examples(self) -> None:
        loss = self.loss
        pairs = [e for e in self.examples if isinstance(e, PairExample)]
        triplets = len(self.examples) - len(pairs)
        name = type(loss).__name__
        if isinstance(loss, TripletLoss) and pairs:
            raise ValueError(
                f"{name} takes TripletExample only, got {len(pairs)} pairs; build triplets with"
                " make_triplets() or mined negatives (triplet_examples())"
            )
        if isinstance(loss, MultipleNegativesRankingLoss):
            negative = next((p for p in pairs if p.label <= 0), None)
            if negative is not None:
                raise ValueError(
                    f"{name} takes positive pairs only (found label {negative.label!r}); keep"
                    " positives with positive_pairs() or turn negatives into triplets"
                )
            return
        if not isinstance(loss, TripletLoss) and triplets:
            raise ValueError(f"{name} takes PairExample only, got {triplets} triplets")
        if isinstance(loss, SoftmaxLoss):
            bad = next(
                (
                    p
                    for p in pairs
                    if not isinstance(p.label, int) or not 0 <= p.label < loss.num_labels
                ),
                None,
            )
            if bad is not None:
                raise ValueError(
                    f"{name} needs integer labels in [0, {loss.num_labels}), got {bad.label!r}"
                )
        elif loss.needs_labels:
            bad = next((p for p in pairs if not 0 <= float(p.label) <= 1), None)
            if bad is not None:
                raise ValueError(f"{name} needs scores in [0, 1], got {bad.label!r}")

    @property
    def module(self) -> nn.Module:
        """The transformer being trained (``encoder.model``)."""
        model: nn.Module = self.encoder.model
        return model

    @property
    def loss_module(self) -> nn.Module:
        """The loss."""
        return self.loss

    @property
    def eval_target(self) -> BiEncoder:
        """The :class:`BiEncoder`, which evaluators encode with."""
        return self.encoder

    def embed(self, texts: Sequence[str], prefix: str = "") -> Tensor:
        """Pooled (and normalized, if the model is) embeddings with gradients.

        Returns:
            ``(len(texts), dim)`` float32 on the training device.

        Thread safety: not thread-safe (uses the model being trained).
        """
        # The encoder's own tokenizer and padding, then the one torch forward encoding runs.
        core = self.encoder.core
        input_ids, attention_mask = core.pad(self.encoder.tokenize(texts, prefix=prefix).input_ids)
        return core.embed_tensors(input_ids, attention_mask)

    def _batch_loss(self, batch: Sequence[Example]) -> Tensor:
        if isinstance(batch[0], PairExample):
            pairs = [e for e in batch if isinstance(e, PairExample)]
            columns = [[p.a for p in pairs], [p.b for p in pairs]]
            labels: Tensor | None = torch.tensor(
                [float(p.label) for p in pairs], dtype=torch.float32, device=self.device
            )
        else:
            triplets = [e for e in batch if isinstance(e, TripletExample)]
            columns = [
                [t.anchor for t in triplets],
                [t.positive for t in triplets],
                [t.negative for t in triplets],
            ]
            labels = None
        embeddings = [
            self.embed(texts, self.query_prefix if i == 0 else self.passage_prefix)
            for i, texts in enumerate(columns)
        ]
        return self.loss.compute(embeddings, labels)

    def save(self, path: str | os.PathLike[str], *, dtype: str = "float32") -> Path:
        """Save in the sentence-transformers layout (see :func:`save_bi_encoder`).

        Thread safety: not while a training step runs.
        """
        return save_bi_encoder(self.encoder, path, dtype=dtype)

    def _load_weights(self, path: Path) -> None:
        from transformers import AutoModel

        loaded = AutoModel.from_pretrained(str(path), dtype=torch.float32)
        _copy_weights(self.module, loaded)


class CrossEncoderTrainer(_Trainer[CrossEncoderReranker]):
    """Trains a one-label sequence-classification cross-encoder on (query, passage, label).

    The model is loaded as a :class:`~sbert_retrieval.reranking.CrossEncoderReranker` (float32,
    sigmoid activation), so evaluation scores exactly as the saved reranker will. Saved as a
    transformers checkpoint (:func:`~sbert_retrieval.training.saving.save_cross_encoder`).

    Args:
        model: Hub id or directory of a sequence-classification checkpoint with one label
            (e.g. from :func:`~sbert_retrieval.training.saving.init_cross_encoder_from_bi_encoder`).
        examples: :class:`PairExample` with labels in ``[0, 1]`` (``bce``: 1 relevant, 0 not,
            soft labels allowed; ``mse``: gold scores).
        config: The run's settings; ``max_seq_length`` counts both texts and special tokens.
        loss: ``bce``, ``mse`` or a
            :class:`~sbert_retrieval.training.losses.CrossEncoderLoss`.
        evaluator: Called with the reranker on dev data (e.g. :class:`RerankingEvaluator`).
        pos_weight: ``bce`` weight of positives (default 1).

    Thread safety: not thread-safe; one thread drives training.
    """

    kind = "cross-encoder"

    def __init__(
        self,
        model: str | os.PathLike[str],
        examples: Sequence[Example],
        config: TrainingConfig,
        *,
        loss: str | CrossEncoderLoss = "bce",
        evaluator: EvaluatorFn | None = None,
        pos_weight: float | None = None,
    ) -> None:
        super().__init__(examples, config, evaluator)
        self.reranker = CrossEncoderReranker(
            model,
            device=str(self.device),
            dtype="float32",
            max_length=config.max_seq_length,
            batch_size=config.batch_size,
            activation="sigmoid",
            backend="torch",  # evaluators score with the weights being trained
        )
        if self.reranker.num_labels != 1:
            raise ValueError(
                f"{model}: a cross-encoder for bce/mse needs 1 output label, it has"
                f" {self.reranker.num_labels}"
            )
        self.loss = (
            make_cross_encoder_loss(loss, pos_weight=pos_weight) if isinstance(loss, str) else loss
        )
        listwise = isinstance(self.loss, CrossEncoderListwiseLoss)
        bad = next(
            (
                e
                for e in self.examples
                if (
                    not isinstance(e, GroupExample)
                    if listwise
                    else not isinstance(e, PairExample) or not 0 <= float(e.label) <= 1
                )
            ),
            None,
        )
        if bad is not None:
            wanted = (
                "GroupExample(query, positive, negatives) for the listwise loss"
                if listwise
                else "PairExample(query, passage, label) with labels in [0, 1]"
            )
            raise ValueError(f"a cross-encoder trains on {wanted}; got {bad!r}")

    @property
    def module(self) -> nn.Module:
        """The sequence-classification model being trained."""
        model: nn.Module = self.reranker.model
        return model

    @property
    def loss_module(self) -> nn.Module:
        """The loss."""
        return self.loss

    @property
    def eval_target(self) -> CrossEncoderReranker:
        """The reranker, which evaluators score with."""
        return self.reranker

    def logits(self, pairs: Sequence[tuple[str, str]]) -> Tensor:
        """``(len(pairs), 1)`` float32 logits with gradients.

        Thread safety: not thread-safe (uses the model being trained).
        """
        # The reranker's own inputs (its Rust tokenizer, its truncation), so training and
        # reranking see the same tokens.
        logits: Tensor = self.reranker.model(**self.reranker.features(pairs)).logits
        return logits.float()

    def _batch_loss(self, batch: Sequence[Example]) -> Tensor:
        groups = [e for e in batch if isinstance(e, GroupExample)]
        if groups:
            # One forward over every pair of the batch, then a (groups, size) score matrix
            # padded with -inf where a group has fewer negatives; the positive is column 0.
            flat = [(g.query, t) for g in groups for t in (g.positive, *g.negatives)]
            scores = self.logits(flat).reshape(-1)
            size = max(1 + len(g.negatives) for g in groups)
            matrix = scores.new_full((len(groups), size), float("-inf"))
            start = 0
            for row, g in enumerate(groups):
                width = 1 + len(g.negatives)
                matrix[row, :width] = scores[start : start + width]
                start += width
            target = torch.zeros(len(groups), dtype=torch.long, device=self.device)
            return self.loss.compute(matrix, target)
        pairs = [e for e in batch if isinstance(e, PairExample)]
        labels = torch.tensor(
            [float(p.label) for p in pairs], dtype=torch.float32, device=self.device
        )
        return self.loss.compute(self.logits([(p.a, p.b) for p in pairs]), labels)

    def save(self, path: str | os.PathLike[str], *, dtype: str = "float32") -> Path:
        """Save as a transformers checkpoint (see :func:`save_cross_encoder`).

        Thread safety: not while a training step runs.
        """
        return save_cross_encoder(
            self.reranker.model,
            self.reranker.tokenizer,
            path,
            max_length=self.reranker.max_length,
            dtype=dtype,
        )

    def _load_weights(self, path: Path) -> None:
        from transformers import AutoModelForSequenceClassification

        loaded = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
        _copy_weights(self.module, loaded)
