"""Chapter 13: ``torchship train luna-segmentation``, the book's segmentation training app.

``UNetWrapper`` (the registered ``luna_segmentation``: 8 input channels, depth 4,
wf 3, padding, BatchNorm, upconv) trained on random 64x64 crops around nodules
(published edition) with Adam (lr 0.001) and the Dice loss plus 8 times the
false-negative Dice term (the Dice of the prediction restricted to the label:
missing nodule pixels costs 8x more than flagging extra ones). Validation on the
whole slices of validation series that hold nodule voxels; per-sample
TP / FN / FP pixel counts at 0.5 give ``percent_all/tp|fn|fp`` (of label pixels)
and ``pr/precision|recall|f1_score``. The model with the best score is saved
beside the last one: the early-access score
``1 - loss/mal + f1 - recall * 0.01 - loss/all * 0.0001`` with ``loss/mal`` the
false-negative Dice over the nodule label (the published edition scores by
recall alone). Validation images (CT, true positives green, false positives and
negatives red) go to TensorBoard.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from torchship.data.luna.cache import CtSource
from torchship.data.luna.candidates import candidate_info_list
from torchship.data.luna.datasets import split_series
from torchship.data.luna.layout import LunaLayout
from torchship.data.luna.segmentation import (
    CONTEXT_SLICES,
    Luna2dSegmentationDataset,
    SegmentationCts,
    TrainingLuna2dSegmentationDataset,
)
from torchship.models.unet import MEAP_SEGMENTATION_ARGS, UNetWrapper
from torchship.training.checkpoint import make_checkpoint, save_checkpoint
from torchship.training.distributed import resolve_device
from torchship.training.luna_util import enumerate_with_estimate, tensorboard_writers, time_str

log = logging.getLogger(__name__)

METRICS_LOSS_NDX, METRICS_TP_NDX, METRICS_FN_NDX, METRICS_FP_NDX, METRICS_FN_LOSS_NDX = range(5)
METRICS_SIZE = 5
FN_LOSS_WEIGHT = 8.0
THRESHOLD = 0.5


def dice_loss(prediction: torch.Tensor, label: torch.Tensor, epsilon: float = 1.0) -> torch.Tensor:
    """Per-sample soft Dice loss, ``1 - (2 sum(p l) + eps) / (sum p + sum l + eps)`` (chapter 13)."""
    dice_label = label.flatten(1).sum(dim=1)
    dice_prediction = prediction.flatten(1).sum(dim=1)
    dice_correct = (prediction * label).flatten(1).sum(dim=1)
    return 1 - (2 * dice_correct + epsilon) / (dice_prediction + dice_label + epsilon)


def segmentation_metrics(metrics_t: torch.Tensor) -> dict[str, float]:
    """The book's ``logMetrics`` for segmentation from per-sample rows, plus its score."""
    sums = metrics_t.sum(dim=1)
    tp, fn, fp = float(sums[METRICS_TP_NDX]), float(sums[METRICS_FN_NDX]), float(sums[METRICS_FP_NDX])
    label_count = tp + fn
    precision = tp / ((tp + fp) or 1)
    recall = tp / ((tp + fn) or 1)
    out = {
        "loss/all": float(metrics_t[METRICS_LOSS_NDX].mean()),
        "loss/mal": float(metrics_t[METRICS_FN_LOSS_NDX].mean()),
        "percent_all/tp": tp / (label_count or 1) * 100,
        "percent_all/fn": fn / (label_count or 1) * 100,
        "percent_all/fp": fp / (label_count or 1) * 100,
        "pr/precision": precision,
        "pr/recall": recall,
        "pr/f1_score": 2 * precision * recall / ((precision + recall) or 1),
    }
    out["score"] = 1 - out["loss/mal"] + out["pr/f1_score"] - out["pr/recall"] * 0.01 - out["loss/all"] * 0.0001
    return out


def format_metrics(epoch: int, split: str, m: dict[str, float]) -> list[str]:
    return [
        f"E{epoch} {split:8} {m['loss/all']:.4f} loss, {m['pr/precision']:.4f} precision, "
        f"{m['pr/recall']:.4f} recall, {m['pr/f1_score']:.4f} f1 score",
        f"E{epoch} {split + '_all':8} {m['loss/all']:.4f} loss, {m['percent_all/tp']:-5.1f}% tp, "
        f"{m['percent_all/fn']:-5.1f}% fn, {m['percent_all/fp']:-9.1f}% fp",
    ]


@dataclass(frozen=True)
class SegmentationAugmentation:
    """The published edition's batch augmentation: flip, offset 0.03, scale 0.2, rotate, noise 25 HU."""

    flip: bool = False
    offset: float | None = None
    scale: float | None = None
    rotate: bool = False
    noise: float | None = None

    @property
    def active(self) -> bool:
        return bool(self.flip or self.offset or self.scale or self.rotate or self.noise)

    def __call__(
        self, inputs: torch.Tensor, label: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = inputs.shape[0]
        transform = torch.eye(3).expand(n, 3, 3).clone()
        for i in range(2):
            if self.flip:
                transform[:, i, i] *= torch.where(torch.rand(n, generator=gen) > 0.5, -1.0, 1.0)
            if self.offset:
                transform[:, i, 2] = self.offset * (torch.rand(n, generator=gen) * 2 - 1)
            if self.scale:
                transform[:, i, i] *= 1.0 + self.scale * (torch.rand(n, generator=gen) * 2 - 1)
        if self.rotate:
            angle = torch.rand(n, generator=gen) * 2 * math.pi
            c, s = torch.cos(angle), torch.sin(angle)
            rotation = torch.zeros(n, 3, 3)
            rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = c, -s, s, c
            rotation[:, 2, 2] = 1
            transform = transform @ rotation
        grid = F.affine_grid(transform[:, :2], list(inputs.shape), align_corners=False)
        out = F.grid_sample(inputs, grid, padding_mode="border", align_corners=False)
        out_label = F.grid_sample(label, grid, padding_mode="border", align_corners=False) > 0.5
        if self.noise:  # HU / 1000 units on the CT channels, not on the lung mask
            out[:, :-1] += torch.randn(out[:, :-1].shape, generator=gen) * self.noise / 1000.0
        return out, out_label.to(label.dtype)


@dataclass
class LunaSegmentationConfig:
    data_dir: str
    batch_size: int = 16
    epochs: int = 1
    epoch_size: int = 300_000
    num_workers: int = 0
    augmentation: SegmentationAugmentation = SegmentationAugmentation()
    val_stride: int = 10
    val_cadence: int = 5  # validate after epoch 1 and every val_cadence-th (published edition)
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "auto"
    max_cts_in_memory: int = 1
    tb_dir: str | None = "runs"
    tb_prefix: str = "p2ch13"
    comment: str = "none"
    images: int = 6  # slices per validation series logged to TensorBoard (first 2 series)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1 or self.epoch_size < 1 or self.val_cadence < 1:
            raise ValueError("batch size, epochs, epoch size and validation cadence must be at least 1")


@dataclass
class LunaSegmentationResult:
    model: UNetWrapper
    history: list[dict[str, Any]]
    checkpoint: Path | None
    best_score: float
    seconds: float


class LunaSegmentationApp:
    def __init__(self, cfg: LunaSegmentationConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        layout = LunaLayout(Path(cfg.data_dir))
        rule = "chapter14" if layout.malignancy_csv is not None else "chapter12"
        nodules = [c for c in candidate_info_list(layout, rule=rule) if c.is_nodule and c.has_annotation]
        all_series = sorted(layout.series_paths)
        self.train_series = split_series(all_series, cfg.val_stride, is_val_set=False)
        self.val_series = split_series(all_series, cfg.val_stride, is_val_set=True)
        self.cts = SegmentationCts(CtSource(layout, max_cts=cfg.max_cts_in_memory), nodules, cfg.max_cts_in_memory)
        train_nodules = [n for n in nodules if n.series_uid in set(self.train_series)]
        self.train_ds = TrainingLuna2dSegmentationDataset(self.cts, train_nodules, cfg.epoch_size, seed=cfg.seed)
        self.val_ds = Luna2dSegmentationDataset(self.cts, self.val_series, full_ct=False)
        if len(self.val_ds) == 0:
            raise ValueError(
                f"the {len(self.val_series)} validation series (every {cfg.val_stride}th) hold no annotated nodule; "
                "use more series or another --val-stride"
            )
        torch.manual_seed(cfg.seed)
        self.model = UNetWrapper(**MEAP_SEGMENTATION_ARGS).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.total_training_samples = 0

    def _loader(self, ds: Any) -> DataLoader:
        return DataLoader(
            ds, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda"
        )

    def _batch_loss(self, batch: tuple, metrics_g: torch.Tensor, start: int, augment: bool) -> torch.Tensor:
        inputs, label = batch[0], batch[1]
        if augment and self.cfg.augmentation.active:
            inputs, label = self.cfg.augmentation(inputs, label, self.generator)
        inputs, label = inputs.to(self.device, non_blocking=True), label.to(self.device, non_blocking=True)
        prediction = self.model(inputs)
        loss = dice_loss(prediction, label)
        fn_loss = dice_loss(prediction * label, label)
        with torch.no_grad():
            end = start + label.size(0)
            bool_pred = (prediction[:, 0:1] > THRESHOLD).to(torch.float32)
            metrics_g[METRICS_LOSS_NDX, start:end] = loss
            metrics_g[METRICS_FN_LOSS_NDX, start:end] = fn_loss
            metrics_g[METRICS_TP_NDX, start:end] = (bool_pred * label).sum(dim=[1, 2, 3])
            metrics_g[METRICS_FN_NDX, start:end] = ((1 - bool_pred) * label).sum(dim=[1, 2, 3])
            metrics_g[METRICS_FP_NDX, start:end] = (bool_pred * (1 - label)).sum(dim=[1, 2, 3])
        return loss.mean() + fn_loss.mean() * FN_LOSS_WEIGHT

    def train_epoch(self, epoch: int) -> torch.Tensor:
        self.model.train()
        self.train_ds.shuffle_samples(epoch)
        dl = self._loader(self.train_ds)
        metrics_g = torch.zeros(METRICS_SIZE, len(self.train_ds), device=self.device)
        start = 0
        for _, batch in enumerate_with_estimate(dl, f"E{epoch} Training", start_ndx=dl.num_workers):
            self.optimizer.zero_grad()
            loss = self._batch_loss(batch, metrics_g, start, augment=True)
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
            self._batch_loss(batch, metrics_g, start, augment=False)
            start += batch[1].size(0)
        return metrics_g.cpu()

    @torch.no_grad()
    def log_images(self, writer: Any) -> None:
        """CT in grey, true positives green, false positives and false negatives red (chapter 13)."""
        self.model.eval()
        for series_ndx, uid in enumerate(self.val_series[:2]):
            sct = self.cts.get(uid)
            depth = sct.ct.hu_a.shape[0]
            for slice_ndx in [i * (depth - 1) // max(self.cfg.images - 1, 1) for i in range(self.cfg.images)]:
                inputs = torch.from_numpy(sct.input_slices(slice_ndx)).unsqueeze(0).to(self.device)
                prediction = (self.model(inputs)[0, 0] > THRESHOLD).cpu().numpy()
                label = sct.positive_mask[slice_ndx]
                ct_slice = (inputs[0, CONTEXT_SLICES].cpu().numpy() + 1) / 2
                image = np.repeat(ct_slice[:, :, None], 3, axis=2)
                image[:, :, 0] += prediction & ~label
                image[:, :, 0] += ~prediction & label
                image[:, :, 1] += (~prediction & label) * 0.5
                image[:, :, 1] += prediction & label
                image *= 0.5
                image.clip(0, 1, image)
                tag = f"val/{series_ndx}_prediction_{slice_ndx}"
                writer.add_image(tag, image, self.total_training_samples, dataformats="HWC")

    def main(self, out: Path | None = None) -> LunaSegmentationResult:
        cfg = self.cfg
        started = time.time()
        log.info(
            f"segmentation: {len(self.train_ds)} training crops per epoch around {len(self.train_ds.nodules)} nodules "
            f"in {len(self.train_series)} series; {len(self.val_ds)} validation slices of {len(self.val_series)} series"
        )
        writers = tensorboard_writers(cfg.tb_dir, cfg.tb_prefix, time_str(), "seg", cfg.comment)
        history: list[dict[str, Any]] = []
        best_score = -math.inf
        saved: Path | None = None
        try:
            for epoch in range(1, cfg.epochs + 1):
                record: dict[str, Any] = {"epoch": epoch}
                splits = [("trn", self.train_epoch(epoch))]
                if epoch == 1 or epoch % cfg.val_cadence == 0 or epoch == cfg.epochs:
                    splits.append(("val", self.validate(epoch)))
                for split, rows in splits:
                    metrics = segmentation_metrics(rows)
                    for line in format_metrics(epoch, split, metrics):
                        log.info(line)
                    record[split] = metrics
                    if split in writers:
                        for key, value in metrics.items():
                            writers[split].add_scalar(key, value, self.total_training_samples)
                if "val" in writers and "val" in record:
                    self.log_images(writers["val"])
                history.append(record)
                if out is not None:
                    saved = save_checkpoint(out, self.checkpoint(history))
                    score = record.get("val", {}).get("score", -math.inf)
                    if score > best_score:
                        best_score = score
                        save_checkpoint(out.with_suffix(".best" + out.suffix), self.checkpoint(history))
                elif "val" in record:
                    best_score = max(best_score, record["val"]["score"])
        finally:
            for w in writers.values():
                w.close()
        return LunaSegmentationResult(self.model.cpu().eval(), history, saved, best_score, time.time() - started)

    def checkpoint(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        val = next((h["val"] for h in reversed(history) if "val" in h), {})
        return make_checkpoint(
            "luna_segmentation",
            self.model,
            model_args=dict(MEAP_SEGMENTATION_ARGS),
            metrics={f"val_{k}": v for k, v in val.items()},
            training={**asdict(self.cfg), "epochs_done": history[-1]["epoch"], "val_series": self.val_series},
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", required=True, help="a LUNA16 copy or a synth-luna folder (subset0..9, CSVs)")
    p.add_argument("--batch-size", type=int, default=16, help="(default %(default)s)")
    p.add_argument("--epochs", type=int, default=1, help="(default %(default)s)")
    p.add_argument("--epoch-size", type=int, default=300_000, help="training crops per epoch (default %(default)s)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default %(default)s)")
    p.add_argument("--val-stride", type=int, default=10, help="every Nth series is validation (default %(default)s)")
    p.add_argument(
        "--val-cadence", type=int, default=5, help="validate after epoch 1 and every Nth (default %(default)s)"
    )
    p.add_argument("--augmented", action="store_true", help="all of the augmentations below")
    for name in ("flip", "offset", "scale", "rotate", "noise"):
        p.add_argument(f"--augment-{name}", action="store_true", help=f"augment: {name}")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train (default: auto)")
    p.add_argument("--max-cts", type=int, default=1, help="CTs kept in memory (default %(default)s)")
    p.add_argument("--tb-dir", default="runs", help="TensorBoard root ('' disables; default %(default)s)")
    p.add_argument("--tb-prefix", default="p2ch13", help="(default %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("checkpoints/luna_segmentation.ckpt"),
        help="checkpoint, rewritten each epoch; the best score goes to *.best.ckpt",
    )
    p.add_argument("comment", nargs="?", default="none", help="suffix of the TensorBoard runs (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    a = args
    aug = SegmentationAugmentation(
        flip=a.augmented or a.augment_flip,
        offset=0.03 if a.augmented or a.augment_offset else None,
        scale=0.2 if a.augmented or a.augment_scale else None,
        rotate=a.augmented or a.augment_rotate,
        noise=25.0 if a.augmented or a.augment_noise else None,
    )
    cfg = LunaSegmentationConfig(
        data_dir=a.data_dir,
        batch_size=a.batch_size,
        epochs=a.epochs,
        epoch_size=a.epoch_size,
        num_workers=a.num_workers,
        augmentation=aug,
        val_stride=a.val_stride,
        val_cadence=a.val_cadence,
        learning_rate=a.lr,
        seed=a.seed,
        device=a.device,
        max_cts_in_memory=a.max_cts,
        tb_dir=a.tb_dir or None,
        tb_prefix=a.tb_prefix,
        comment=a.comment,
    )
    logging.getLogger().setLevel(logging.INFO)
    result = LunaSegmentationApp(cfg).main(out=a.out)
    print(
        f"luna-segmentation: {cfg.epochs} epochs in {result.seconds:.1f} s; best score {result.best_score:.4f}; "
        f"checkpoint: {result.checkpoint}"
    )
    return 0
