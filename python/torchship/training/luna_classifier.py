"""Chapters 11, 12 and 14: ``torchship train luna-classifier``, the book's ``LunaTrainingApp``.

Trains ``LunaModel`` on candidate crops: nodule vs non-nodule (the published
reading of ``candidates.csv``; the early-access text says benign vs malignant),
or, with ``--task malignancy``, malignant vs benign nodules, usually fine-tuned
from a nodule classifier (``--finetune CKPT --finetune-depth N``: all weights
but the head are loaded, only the last N blocks train; chapter 14).

As the book: SGD (lr 0.001, momentum 0.99; 0.003 when fine-tuning), per-sample
``CrossEntropyLoss``, metrics from a ``[label, prob, loss]`` row per sample at
threshold 0.5 with the book's names (``loss/all|ben|mal``, ``correct/...``,
``pr/precision|recall|f1_score``; ``ben`` = negative, ``mal`` = positive
whatever the task), log lines ``E1 trn_mal 0.6931 loss, 50.0% correct (3 of 6)``,
TensorBoard scalars (x = training samples seen) and ``is_ben``/``is_mal``
histograms under ``runs/<tb-prefix>/<time>-{trn,val}_cls-<comment>``.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from torchship import models
from torchship.data.luna.cache import CropCache, CtSource
from torchship.data.luna.candidates import candidate_info_list
from torchship.data.luna.datasets import Augmentation, LunaDataset
from torchship.data.luna.layout import LunaLayout
from torchship.models.luna import LunaModel
from torchship.training.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from torchship.training.distributed import resolve_device
from torchship.training.luna_util import enumerate_with_estimate, tensorboard_writers, time_str
from torchship.training.metrics import BinaryCounts

log = logging.getLogger(__name__)

METRICS_LABEL_NDX, METRICS_PRED_NDX, METRICS_LOSS_NDX = 0, 1, 2
METRICS_SIZE = 3
THRESHOLD = 0.5
HISTOGRAM_BINS = [x / 50.0 for x in range(51)]
TASK_MODELS = {"nodule": "luna_classifier", "malignancy": "luna_malignancy"}  # registry names (same architecture)


@dataclass
class LunaClassifierConfig:
    data_dir: str
    task: str = "nodule"
    batch_size: int = 32
    epochs: int = 1
    num_workers: int = 0
    balanced: bool = False
    augmentation: Augmentation = field(default_factory=Augmentation)
    val_stride: int = 10
    epoch_size: int | None = None  # None: the book's (200,000 balanced, every candidate otherwise)
    learning_rate: float | None = None  # None: 0.001, or 0.003 when fine-tuning
    momentum: float = 0.99
    weight_decay: float = 0.0
    finetune: str | None = None
    finetune_depth: int = 1
    seed: int = 0
    device: str = "auto"
    cache_dir: str | None = None
    max_cts_in_memory: int = 1
    tb_dir: str | None = "runs"
    tb_prefix: str = "p2ch12"
    comment: str = "dlwpt"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch size and epochs must be at least 1, got {self.batch_size} and {self.epochs}")
        if self.task not in TASK_MODELS:
            raise ValueError(f"task must be one of {sorted(TASK_MODELS)}, not {self.task!r}")
        if self.finetune_depth < 1:
            raise ValueError(f"--finetune-depth must be at least 1, got {self.finetune_depth}")


def metrics_from_rows(metrics_t: torch.Tensor) -> tuple[dict[str, float], dict[str, int]]:
    """The book's ``logMetrics`` on a ``[3, N]`` tensor of label, positive probability and loss."""
    label, pred, loss = metrics_t[METRICS_LABEL_NDX], metrics_t[METRICS_PRED_NDX], metrics_t[METRICS_LOSS_NDX]
    neg_label = label <= THRESHOLD
    neg_pred = pred <= THRESHOLD
    pos_label, pos_pred = ~neg_label, ~neg_pred
    neg_count, pos_count = int(neg_label.sum()), int(pos_label.sum())
    neg_correct = int((neg_label & neg_pred).sum())
    pos_correct = int((pos_label & pos_pred).sum())
    counts = BinaryCounts.from_correct(pos_correct, pos_count, neg_correct, neg_count)

    def mean(mask: torch.Tensor) -> float:
        return float(loss[mask].mean()) if bool(mask.any()) else math.nan

    out = {
        "loss/all": float(loss.mean()) if loss.numel() else math.nan,
        "loss/ben": mean(neg_label),
        "loss/mal": mean(pos_label),
        "correct/all": 100.0 * counts.accuracy,
        "correct/ben": 100.0 * neg_correct / neg_count if neg_count else math.nan,
        "correct/mal": 100.0 * pos_correct / pos_count if pos_count else math.nan,
        "pr/precision": counts.precision,
        "pr/recall": counts.recall,
        "pr/f1_score": counts.f1,
    }
    return out, {"neg_correct": neg_correct, "neg_count": neg_count, "pos_correct": pos_correct, "pos_count": pos_count}


def format_metrics(epoch: int, split: str, m: dict[str, float], c: dict[str, int]) -> list[str]:
    """The book's three log lines per split."""
    return [
        f"E{epoch} {split:8} {m['loss/all']:.4f} loss, {m['correct/all']:-5.1f}% correct, "
        f"{m['pr/precision']:.4f} precision, {m['pr/recall']:.4f} recall, {m['pr/f1_score']:.4f} f1 score",
        f"E{epoch} {split + '_ben':8} {m['loss/ben']:.4f} loss, {m['correct/ben']:-5.1f}% correct "
        f"({c['neg_correct']} of {c['neg_count']})",
        f"E{epoch} {split + '_mal':8} {m['loss/mal']:.4f} loss, {m['correct/mal']:-5.1f}% correct "
        f"({c['pos_correct']} of {c['pos_count']})",
    ]


def finetune_model(model: LunaModel, checkpoint_path: str, depth: int) -> list[str]:
    """Chapter 14: load every block but the head from a trained classifier; train only the last ``depth``.

    Returns the names of the blocks left trainable.
    """
    ckpt = load_checkpoint(checkpoint_path)
    if models.get(ckpt["model"]).architecture != "luna_classifier":
        raise ValueError(f"--finetune {checkpoint_path} holds a {ckpt['model']!r}, not a LunaModel checkpoint")
    blocks = [name for name, sub in model.named_children() if any(True for _ in sub.parameters())]
    if depth > len(blocks):
        raise ValueError(f"--finetune-depth {depth} exceeds the model's {len(blocks)} blocks: {blocks}")
    head = blocks[-1]
    state = {k: v for k, v in ckpt["state_dict"].items() if k.split(".")[0] != head}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(k.split(".")[0] != head for k in missing):
        raise ValueError(f"{checkpoint_path} does not fit LunaModel: missing {missing}, unexpected {unexpected}")
    trainable = blocks[-depth:]
    for name, param in model.named_parameters():
        param.requires_grad_(name.split(".")[0] in trainable)
    return trainable


@dataclass
class LunaClassifierResult:
    model: LunaModel
    history: list[dict[str, Any]]  # per epoch: {"trn": metrics, "val": metrics, "val_counts": counts}
    checkpoint: Path | None
    seconds: float

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]["val"]


class LunaClassifierApp:
    def __init__(self, cfg: LunaClassifierConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.layout = LunaLayout(Path(cfg.data_dir))
        source = CtSource(self.layout, max_cts=cfg.max_cts_in_memory)
        self.crops = CropCache(source, Path(cfg.cache_dir) if cfg.cache_dir else None)
        rule = "chapter14" if self.layout.malignancy_csv is not None else "chapter12"
        if cfg.task == "malignancy" and rule != "chapter14":
            raise ValueError(f"--task malignancy needs {self.layout.data_dir}/annotations_with_malignancy.csv")
        candidates = candidate_info_list(self.layout, rule=rule)
        self.train_ds = LunaDataset(
            candidates,
            self.crops,
            val_stride=cfg.val_stride,
            is_val_set=False,
            ratio_int=int(cfg.balanced),
            augmentation=cfg.augmentation,
            task=cfg.task,
            epoch_size=cfg.epoch_size,
            seed=cfg.seed,
        )
        self.val_ds = LunaDataset(candidates, self.crops, val_stride=cfg.val_stride, is_val_set=True, task=cfg.task)
        torch.manual_seed(cfg.seed)
        self.model = LunaModel().to(self.device)
        self.trainable_blocks: list[str] | None = None
        if cfg.finetune:
            self.trainable_blocks = finetune_model(self.model, cfg.finetune, cfg.finetune_depth)
        lr = cfg.learning_rate if cfg.learning_rate is not None else (0.003 if cfg.finetune else 0.001)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.total_training_samples = 0

    def _loader(self, ds: LunaDataset) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def _batch_loss(self, batch: tuple, metrics_g: torch.Tensor, start: int) -> torch.Tensor:
        chunks, labels, _series, _center = batch
        chunks = chunks.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        logits, probability = self.model(chunks)
        loss = nn.functional.cross_entropy(logits, labels[:, 1], reduction="none")
        end = start + labels.size(0)
        metrics_g[METRICS_LABEL_NDX, start:end] = labels[:, 1].detach().float()
        metrics_g[METRICS_PRED_NDX, start:end] = probability[:, 1].detach().float()
        metrics_g[METRICS_LOSS_NDX, start:end] = loss.detach().float()
        return loss.mean()

    def train_epoch(self, epoch: int) -> torch.Tensor:
        self.model.train()
        if self.trainable_blocks is not None:  # frozen blocks keep their BatchNorm statistics
            for name, sub in self.model.named_children():
                if name not in self.trainable_blocks:
                    sub.eval()
        self.train_ds.shuffle_samples(epoch)
        dl = self._loader(self.train_ds)
        metrics_g = torch.zeros(METRICS_SIZE, len(self.train_ds), device=self.device)
        start = 0
        for _, batch in enumerate_with_estimate(dl, f"E{epoch} Training", start_ndx=dl.num_workers):
            self.optimizer.zero_grad()
            loss = self._batch_loss(batch, metrics_g, start)
            loss.backward()
            self.optimizer.step()
            start += batch[1].size(0)
        self.total_training_samples += len(self.train_ds)
        return metrics_g.cpu()

    @torch.no_grad()
    def validate(self, epoch: int) -> torch.Tensor:
        self.model.eval()
        dl = self._loader(self.val_ds)
        metrics_g = torch.zeros(METRICS_SIZE, len(self.val_ds), device=self.device)
        start = 0
        for _, batch in enumerate_with_estimate(dl, f"E{epoch} Validation", start_ndx=dl.num_workers):
            self._batch_loss(batch, metrics_g, start)
            start += batch[1].size(0)
        return metrics_g.cpu()

    def main(self, out: Path | None = None) -> LunaClassifierResult:
        cfg = self.cfg
        started = time.time()
        log.info(
            f"{cfg.task} classifier: {len(self.train_ds)} training samples per epoch "
            f"({len(self.train_ds.positive_list)} positive / {len(self.train_ds.negative_list)} negative candidates "
            f"in {len(self.train_ds.series)} series), {len(self.val_ds)} validation samples "
            f"({len(self.val_ds.positive_list)} positive, {len(self.val_ds.series)} series)"
        )
        writers = tensorboard_writers(cfg.tb_dir, cfg.tb_prefix, time_str(), "cls", cfg.comment)
        history: list[dict[str, Any]] = []
        best_f1 = -1.0
        saved: Path | None = None
        try:
            for epoch in range(1, cfg.epochs + 1):
                record: dict[str, Any] = {"epoch": epoch}
                for split, rows in (("trn", self.train_epoch(epoch)), ("val", self.validate(epoch))):
                    metrics, counts = metrics_from_rows(rows)
                    for line in format_metrics(epoch, split, metrics, counts):
                        log.info(line)
                    record[split], record[f"{split}_counts"] = metrics, counts
                    if split in writers:
                        self._log_tensorboard(writers[split], metrics, rows)
                history.append(record)
                f1 = record["val"]["pr/f1_score"]
                if out is not None:
                    saved = save_checkpoint(out, self.checkpoint(history, time.time() - started))
                    if not math.isnan(f1) and f1 > best_f1:
                        best_f1 = f1
                        save_checkpoint(out.with_suffix(".best" + out.suffix), self.checkpoint(history, 0.0))
        finally:
            for w in writers.values():
                w.close()
            self.crops.close()
        return LunaClassifierResult(self.model.cpu().eval(), history, saved, time.time() - started)

    def _log_tensorboard(self, writer: Any, metrics: dict[str, float], rows: torch.Tensor) -> None:
        step = self.total_training_samples
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)
        label, pred = rows[METRICS_LABEL_NDX], rows[METRICS_PRED_NDX]
        # "Perfect" predictions would dwarf the rest of the histogram.
        neg = pred[(label <= THRESHOLD) & (pred > 0.01)]
        pos = pred[(label > THRESHOLD) & (pred < 0.99)]
        if neg.numel():
            writer.add_histogram("is_ben", neg, step, bins=HISTOGRAM_BINS)
        if pos.numel():
            writer.add_histogram("is_mal", pos, step, bins=HISTOGRAM_BINS)

    def checkpoint(self, history: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
        last = history[-1]
        ckpt = make_checkpoint(
            TASK_MODELS[self.cfg.task],
            self.model,
            metrics={f"val_{k}": v for k, v in last["val"].items()},
            training={**asdict(self.cfg), "epochs_done": last["epoch"], "seconds": seconds},
        )
        ckpt["task"] = self.cfg.task
        return ckpt


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", required=True, help="a LUNA16 copy or a synth-luna folder (subset0..9, CSVs)")
    p.add_argument(
        "--task",
        choices=sorted(TASK_MODELS),
        default="nodule",
        help="nodule vs non-nodule (chapters 11-12) or malignant vs benign nodules (chapter 14)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default %(default)s)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs (default %(default)s)")
    p.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="DataLoader worker processes (the book's default is 8; default %(default)s)",
    )
    p.add_argument("--balanced", action="store_true", help="present positives and negatives 1:1 (ratio_int=1)")
    p.add_argument("--epoch-size", type=int, help="samples per training epoch (book: 200000 balanced, else all)")
    p.add_argument("--val-stride", type=int, default=10, help="every Nth series is validation (default %(default)s)")
    p.add_argument("--augmented", action="store_true", help="all of the augmentations below")
    for name, what in (
        ("flip", "mirror each axis with p=0.5"),
        ("offset", "shift by up to 10%% of the crop"),
        ("scale", "scale by up to 20%%"),
        ("rotate", "rotate in the X-Y plane"),
        ("noise", "add Gaussian noise, sigma 25 HU"),
    ):
        p.add_argument(f"--augment-{name}", action="store_true", help=f"augment: {what}")
    p.add_argument("--finetune", help="checkpoint of a trained classifier to start from (chapter 14)")
    p.add_argument(
        "--finetune-depth", type=int, default=1, help="blocks, from the head, to train (default %(default)s)"
    )
    p.add_argument("--lr", type=float, help="SGD learning rate (default 0.001, 0.003 when fine-tuning)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="(default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="weights, sample order and augmentation (default %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train (default: auto)")
    p.add_argument(
        "--cache-dir", default="data-unversioned/cache", help="on-disk crop cache ('' disables; default %(default)s)"
    )
    p.add_argument("--max-cts", type=int, default=1, help="CTs kept in memory (default %(default)s, the book's)")
    p.add_argument("--tb-dir", default="runs", help="TensorBoard root ('' disables; default %(default)s)")
    p.add_argument("--tb-prefix", default="p2ch12", help="data prefix for TensorBoard runs (default %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("checkpoints/luna_classifier.ckpt"),
        help="checkpoint, rewritten each epoch; the best validation F1 goes to *.best.ckpt",
    )
    p.add_argument("comment", nargs="?", default="dlwpt", help="suffix of the TensorBoard runs (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> LunaClassifierConfig:
    aug = Augmentation.book(
        args.augmented or args.augment_flip,
        args.augmented or args.augment_offset,
        args.augmented or args.augment_scale,
        args.augmented or args.augment_rotate,
        args.augmented or args.augment_noise,
    )
    return LunaClassifierConfig(
        data_dir=args.data_dir,
        task=args.task,
        batch_size=args.batch_size,
        epochs=args.epochs,
        num_workers=args.num_workers,
        balanced=args.balanced,
        augmentation=aug,
        val_stride=args.val_stride,
        epoch_size=args.epoch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        finetune=args.finetune,
        finetune_depth=args.finetune_depth,
        seed=args.seed,
        device=args.device,
        cache_dir=args.cache_dir or None,
        max_cts_in_memory=args.max_cts,
        tb_dir=args.tb_dir or None,
        tb_prefix=args.tb_prefix,
        comment=args.comment,
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    logging.getLogger().setLevel(logging.INFO)
    log.info(f"Starting {LunaClassifierApp.__name__}, {cfg}")
    result = LunaClassifierApp(cfg).main(out=args.out)
    print(f"luna-classifier: {cfg.epochs} epochs in {result.seconds:.1f} s; checkpoint: {result.checkpoint}")
    return 0
