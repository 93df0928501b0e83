"""The image classification loop of chapters 7, 8, 11 and 12, shared by every image recipe.

One loop for every model and data set, alone or under ``torchrun``:

- seeded: the same seed gives the same weights, and every epoch reseeds from
  (seed, epoch), so a run resumed from a checkpoint continues exactly as an
  uninterrupted one would;
- metrics from counts (chapter 12): loss, accuracy, precision, recall, F1,
  summed over processes before they are computed;
- TensorBoard scalars as chapter 11 writes them (one run folder per split,
  keys ``loss/all``, ``correct/all``, ``pr/...``, x axis = training samples seen);
- a tqdm bar with the ETA of the whole run;
- a checkpoint after every epoch, written by rank 0 only, that ``--resume``
  continues from (weights, optimizer state, epoch, samples seen).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from torchship import models
from torchship.data.images import ClassificationData, ImageSplit
from torchship.training import distributed
from torchship.training.checkpoint import load_checkpoint, make_checkpoint, resume_state, save_checkpoint
from torchship.training.metrics import classification_metrics, confusion_matrix
from torchship.training.weights import load_weights

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger(__name__)

OptimizerName = Literal["sgd", "adam"]
EVAL_BATCH = 512


@dataclass
class ClassifierConfig:
    """Everything that decides the outcome of a run; stored in the checkpoint as ``training``."""

    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 64  # per process; under torchrun the global batch is N times this (as DataParallel's)
    learning_rate: float = 1e-2
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: OptimizerName = "sgd"
    seed: int = 0
    device: str = "auto"
    weights: str | None = None
    partial_weights: bool = False
    resume: str | None = None
    tensorboard_dir: str | None = "runs"
    run_name: str = "classifier"
    comment: str = ""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch size must be at least 1, got {self.epochs} and {self.batch_size}")
        if self.learning_rate < 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("learning rate, momentum and weight decay cannot be negative")


@dataclass
class ClassifierResult:
    model: nn.Module  # trained, on the CPU, in eval mode
    metrics: dict[str, float | None]  # the last epoch's train_*/val_* values; None = undefined (0/0)
    history: list[dict[str, float | None]]
    epochs_done: int
    seconds: float
    checkpoint: Path | None


class _Writer(Protocol):
    def add_scalar(self, tag: str, value: float, step: int) -> None: ...
    def close(self) -> None: ...


def epoch_seed(seed: int, epoch: int) -> int:
    """The global RNG seed for one epoch (dropout masks and the like); independent of where a run resumed."""
    return seed * 1_000_003 + epoch


def _optimizer(cfg: ClassifierConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use sgd or adam")


def _input_shape(model_name: str, split: ImageSplit) -> tuple[int, ...]:
    """The model's declared per-sample input shape: chapter 7's fully connected nets take ``[N, 3072]``."""
    shape = tuple(models.get(model_name).inputs[0].shape[1:])
    if -1 in shape:
        return tuple(split.images.shape[1:])
    if math.prod(shape) != math.prod(split.images.shape[1:]):
        raise ValueError(
            f"model {model_name} takes inputs of shape {list(shape)}, "
            f"but the data set's images are {list(split.images.shape[1:])}"
        )
    return shape


def _writers(cfg: ClassifierConfig, ctx: distributed.Context) -> dict[str, _Writer]:
    if not cfg.tensorboard_dir or not ctx.is_main:
        return {}
    from torch.utils.tensorboard import SummaryWriter

    stamp = datetime.now().strftime("%Y-%m-%d_%H.%M.%S")
    suffix = f"-{cfg.comment}" if cfg.comment else ""
    base = Path(cfg.tensorboard_dir) / cfg.run_name
    return {split: SummaryWriter(log_dir=str(base / f"{stamp}-{split}_cls{suffix}")) for split in ("trn", "val")}


def _format(epoch: int, split: str, m: dict[str, float]) -> str:
    return (
        f"E{epoch} {split:<4} {m['loss/all']:.4f} loss, {m['correct/all']:5.1f}% correct, "
        f"{m['pr/precision']:.4f} prc, {m['pr/recall']:.4f} rcl, {m['pr/f1_score']:.4f} f1"
    )


def _summary(metrics: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """The checkpoint's flat ``metrics``: accuracies as fractions (the book's "Accuracy 0.794000").

    An undefined value (precision when nothing was predicted positive) is stored
    as None, not nan: export copies these into JSON, where NaN is not valid.
    """
    out: dict[str, float | None] = {}
    for split in ("train", "val"):
        m = metrics[split]
        values = {
            "loss": m["loss/all"],
            "accuracy": m["correct/all"] / 100.0,
            "precision": m["pr/precision"],
            "recall": m["pr/recall"],
            "f1": m["pr/f1_score"],
        }
        out.update({f"{split}_{k}": None if math.isnan(v) else v for k, v in values.items()})
    return out


class _Loop:
    """One run's state: the model, its optimizer, the data on the device, the counters."""

    def __init__(self, cfg: ClassifierConfig, data: ClassificationData, ctx: distributed.Context) -> None:
        self.cfg, self.data, self.ctx = cfg, data, ctx
        self.classes = list(data.classes)
        torch.manual_seed(cfg.seed)
        self.model = models.get(cfg.model).build(**cfg.model_args)
        self.weights_skipped: list[str] = []
        if cfg.weights:
            self.weights_skipped = load_weights(self.model, cfg.weights, cfg.partial_weights)
        self.start_epoch, self.samples_seen = 0, 0
        self.history: list[dict[str, float | None]] = []
        optimizer_state = self._resume() if cfg.resume else None
        self.model.to(ctx.device)
        self.optimizer = _optimizer(cfg, self.model.parameters())
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.net: nn.Module = self.model
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        shape = _input_shape(cfg.model, data.train)
        self.x_train = data.train.images.reshape(-1, *shape).to(ctx.device)
        self.y_train = data.train.labels.to(ctx.device)
        # Each process validates every world_size-th sample; counts are summed, so nothing is seen twice.
        self.x_val = data.val.images[ctx.rank :: ctx.world_size].reshape(-1, *shape).to(ctx.device)
        self.y_val = data.val.labels[ctx.rank :: ctx.world_size].to(ctx.device)
        self.sampler: DistributedSampler[int] = DistributedSampler(
            data.train, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed
        )
        self.loss_fn = nn.CrossEntropyLoss()

    def _resume(self) -> dict[str, Any]:
        cfg = self.cfg
        ckpt = load_checkpoint(cfg.resume or "")
        state = resume_state(ckpt, cfg.resume or "")
        if ckpt["model"] != cfg.model or ckpt["model_args"] != cfg.model_args:
            raise ValueError(
                f"--resume {cfg.resume} holds {ckpt['model']} {ckpt['model_args']}, "
                f"but this run trains {cfg.model} {cfg.model_args}"
            )
        if state["epoch"] >= cfg.epochs:
            raise ValueError(
                f"--resume {cfg.resume} has already trained {state['epoch']} epochs; "
                f"pass --epochs larger than {state['epoch']} to continue"
            )
        self.model.load_state_dict(ckpt["state_dict"])
        self.start_epoch, self.samples_seen = int(state["epoch"]), int(state["samples_seen"])
        self.history = list(ckpt.get("history") or [])
        return state["optimizer"]

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.sampler) / self.cfg.batch_size)

    def train_epoch(self, epoch: int, bar: tqdm) -> dict[str, float]:
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch))
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.int64, device=self.ctx.device)
        self.net.train()
        n = len(self.classes)
        matrix = torch.zeros(n, n, dtype=torch.int64, device=self.ctx.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            images, labels = self.x_train[idx], self.y_train[idx]
            logits = self.net(images)
            loss = self.loss_fn(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach().to(torch.float64) * len(idx)
                matrix += confusion_matrix(logits.argmax(dim=1), labels, n)
            bar.update(1)
        self.samples_seen += len(order) * self.ctx.world_size
        distributed.broadcast_buffers(self.model, self.ctx)  # validate and save with one set of BatchNorm stats
        return self._reduce(loss_sum, matrix)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        n = len(self.classes)
        matrix = torch.zeros(n, n, dtype=torch.int64, device=self.ctx.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        for start in range(0, len(self.y_val), EVAL_BATCH):
            images, labels = self.x_val[start : start + EVAL_BATCH], self.y_val[start : start + EVAL_BATCH]
            logits = self.model(images)
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").to(torch.float64)
            matrix += confusion_matrix(logits.argmax(dim=1), labels, n)
        return self._reduce(loss_sum, matrix)

    def _reduce(self, loss_sum: torch.Tensor, matrix: torch.Tensor) -> dict[str, float]:
        distributed.all_reduce_sum(loss_sum, self.ctx)
        distributed.all_reduce_sum(matrix, self.ctx)
        total = int(matrix.sum())
        loss = float(loss_sum) / total if total else float("nan")
        return classification_metrics(matrix.cpu(), self.classes, loss)

    def checkpoint(self, metrics: dict[str, float | None], epoch: int, seconds: float) -> dict[str, Any]:
        training = {
            **asdict(self.cfg),
            "data": self.data.description,
            "world_size": self.ctx.world_size,
            "device": str(self.ctx.device),
            "weights_skipped": self.weights_skipped,
            "seconds": round(seconds, 3),
        }
        resume = {"epoch": epoch, "optimizer": self.optimizer.state_dict(), "samples_seen": self.samples_seen}
        return make_checkpoint(
            self.cfg.model, self.model, self.cfg.model_args, metrics, training, resume=resume, history=self.history
        )


def train_classifier(
    cfg: ClassifierConfig, data: ClassificationData, out: str | Path | None = None, progress: bool = True
) -> ClassifierResult:
    """Trains ``cfg.model`` on ``data``; rank 0 writes ``out`` after every epoch when it is given."""
    ctx = distributed.setup(cfg.device)
    try:
        return _run(cfg, data, Path(out) if out else None, progress, ctx)
    finally:
        distributed.teardown(ctx)


def _run(
    cfg: ClassifierConfig, data: ClassificationData, out: Path | None, progress: bool, ctx: distributed.Context
) -> ClassifierResult:
    if ctx.device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    began = time.perf_counter()
    loop = _Loop(cfg, data, ctx)
    writers = _writers(cfg, ctx)
    show = progress and ctx.is_main
    total = (cfg.epochs - loop.start_epoch) * loop.steps_per_epoch
    from tqdm import tqdm  # the train extra: torchship's core imports without it

    bar = tqdm(total=total, desc=cfg.run_name, unit="batch", disable=not show, dynamic_ncols=True)
    say = bar.write if show else log.info
    if ctx.is_main:
        say(
            f"{cfg.run_name}: {len(data.train)} training / {len(data.val)} validation samples, "
            f"{ctx.world_size} process(es) on {ctx.device}, epochs {loop.start_epoch + 1}..{cfg.epochs}"
        )
    summary: dict[str, float | None] = {}
    try:
        for epoch in range(loop.start_epoch + 1, cfg.epochs + 1):
            trn = loop.train_epoch(epoch, bar)
            val = loop.evaluate()
            summary = _summary({"train": trn, "val": val})
            loop.history.append({"epoch": float(epoch), "samples_seen": float(loop.samples_seen), **summary})
            for split, values in (("trn", trn), ("val", val)):
                if split in writers:
                    for key, value in values.items():
                        writers[split].add_scalar(key, value, loop.samples_seen)
            bar.set_postfix(epoch=epoch, loss=f"{trn['loss/all']:.4f}", val_acc=f"{val['correct/all']:.1f}%")
            if ctx.is_main:
                say(_format(epoch, "trn", trn))
                say(_format(epoch, "val", val))
            if out is not None and ctx.is_main:
                save_checkpoint(out, loop.checkpoint(summary, epoch, time.perf_counter() - began))
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    distributed.check_replicas_equal(loop.model, ctx)
    distributed.barrier(ctx)  # nobody leaves before rank 0 has written the last checkpoint
    model = loop.model.cpu().eval()
    return ClassifierResult(
        model=model,
        metrics=summary,
        history=loop.history,
        epochs_done=cfg.epochs,
        seconds=time.perf_counter() - began,
        checkpoint=out if ctx.is_main else None,
    )
