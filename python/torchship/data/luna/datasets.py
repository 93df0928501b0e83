"""Chapters 10-12 and 14: the classification dataset of candidate crops.

- Split by *series* with ``val_stride`` (the book's ``list[::-val_stride]`` for
  validation, ``del list[::-val_stride]`` for training), so no scan feeds both;
  chapter 14 of the published edition moved to this after finding that the
  early per-candidate split let validation nodules leak into segmentation
  training.
- ``ratio_int`` balancing (chapter 12): index ``ndx`` is positive when
  ``ndx % (ratio_int + 1) == 0`` (positive ``ndx // (ratio_int + 1)``),
  otherwise negative ``ndx - 1 - ndx // (ratio_int + 1)``, both modulo their
  list's length; a balanced epoch has ``epoch_size`` samples (the book: 200,000).
- 3-D augmentation (chapter 12): a 4x4 affine (flip, offset, scale, rotation in
  the X-Y plane) applied with ``affine_grid`` / ``grid_sample`` (border
  padding), then Gaussian noise in HU.

A sample is the book's tuple: ``(chunk [1, 32, 48, 48] float32 HU,
label tensor([not positive, positive]) int64, series_uid, centre irc int64[3])``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from torchship.data.luna.cache import CropCache
from torchship.data.luna.candidates import CandidateInfoTuple

WIDTH_IRC = (32, 48, 48)
BALANCED_EPOCH_SIZE = 200_000  # the book's __len__ when balanced


def split_series(series: Sequence[str], val_stride: int, is_val_set: bool) -> list[str]:
    """The book's split over the sorted series list: every ``val_stride``-th from the end is validation."""
    ordered = sorted(set(series))
    if val_stride <= 0:
        if is_val_set:
            raise ValueError("a validation set needs val_stride > 0")
        return ordered
    if is_val_set:
        chosen = ordered[::-val_stride]
    else:
        chosen = list(ordered)
        del chosen[::-val_stride]
    if not chosen:
        raise ValueError(
            f"{len(ordered)} series leave no {'validation' if is_val_set else 'training'} series "
            f"at val_stride {val_stride}"
        )
    return sorted(chosen)


@dataclass(frozen=True)
class Augmentation:
    """Chapter 12's ``augmentation_dict``; None / False = that augmentation off."""

    flip: bool = False
    offset: float | None = None  # fraction of the crop, as affine_grid's [-1, 1] coordinates
    scale: float | None = None
    rotate: bool = False
    noise: float | None = None  # HU

    @property
    def active(self) -> bool:
        return bool(self.flip or self.offset or self.scale or self.rotate or self.noise)

    @staticmethod
    def book(flip: bool, offset: bool, scale: bool, rotate: bool, noise: bool) -> Augmentation:
        """The companion code's amounts: offset 0.1, scale 0.2, noise 25 HU."""
        return Augmentation(flip, 0.1 if offset else None, 0.2 if scale else None, rotate, 25.0 if noise else None)


def augment_chunk(chunk: torch.Tensor, aug: Augmentation, rng: random.Random) -> torch.Tensor:
    """``chunk`` [1, D, H, W] through a random affine and noise; returns the same shape."""
    transform = torch.eye(4)
    for i in range(3):
        if aug.flip and rng.random() > 0.5:
            transform[i, i] *= -1
        if aug.offset:
            transform[i, 3] = aug.offset * (rng.random() * 2 - 1)
        if aug.scale:
            transform[i, i] *= 1.0 + aug.scale * (rng.random() * 2 - 1)
    if aug.rotate:
        angle = rng.random() * math.pi * 2
        s, c = math.sin(angle), math.cos(angle)
        rotation = torch.tensor([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float32)
        transform = transform @ rotation
    batch = chunk.unsqueeze(0)
    grid = F.affine_grid(transform[:3].unsqueeze(0), list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, padding_mode="border", align_corners=False)[0]
    if aug.noise:
        gen = torch.Generator().manual_seed(rng.getrandbits(63))
        out = out + torch.randn(out.shape, generator=gen) * aug.noise
    return out


class LunaDataset(Dataset):
    """Crops around candidates, labelled by ``positive(candidate)``.

    ``task="nodule"``: every candidate, positive = nodule (chapters 11-12, published reading).
    ``task="malignancy"``: nodules only, positive = malignant (chapter 14).
    """

    def __init__(
        self,
        candidates: Sequence[CandidateInfoTuple],
        crops: CropCache,
        *,
        val_stride: int = 0,
        is_val_set: bool = False,
        series_uid: str | None = None,
        ratio_int: int = 0,
        augmentation: Augmentation | None = None,
        task: str = "nodule",
        epoch_size: int | None = None,
        seed: int = 0,
        width_irc: tuple[int, int, int] = WIDTH_IRC,
    ) -> None:
        if task not in ("nodule", "malignancy"):
            raise ValueError(f"task must be 'nodule' or 'malignancy', not {task!r}")
        if ratio_int < 0:
            raise ValueError(f"ratio_int cannot be negative, got {ratio_int}")
        pool = [c for c in candidates if c.is_nodule] if task == "malignancy" else list(candidates)
        all_series = [c.series_uid for c in candidates]  # every task splits the same series the same way
        series = [series_uid] if series_uid else split_series(all_series, val_stride, is_val_set)
        keep = set(series)
        self.series = series
        self.candidates = [c for c in pool if c.series_uid in keep]
        if not self.candidates:
            raise ValueError(f"no {task} candidates in the {len(series)} chosen series")
        self.task = task
        self.crops = crops
        self.ratio_int = ratio_int
        self.augmentation = augmentation if augmentation and augmentation.active else None
        self.width_irc = width_irc
        self.seed = seed
        self.epoch = 0
        self.positive_list = [c for c in self.candidates if self.is_positive(c)]
        self.negative_list = [c for c in self.candidates if not self.is_positive(c)]
        if ratio_int and not (self.positive_list and self.negative_list):
            raise ValueError(
                f"balancing needs both classes; the {task} set has {len(self.positive_list)} positive and "
                f"{len(self.negative_list)} negative candidates"
            )
        if epoch_size is None:
            epoch_size = BALANCED_EPOCH_SIZE if ratio_int else len(self.candidates)
        if epoch_size < 1:
            raise ValueError(f"epoch_size must be at least 1, got {epoch_size}")
        self.epoch_size = epoch_size
        self.shuffle_samples(0)

    def is_positive(self, c: CandidateInfoTuple) -> bool:
        return c.is_mal if self.task == "malignancy" else c.is_nodule

    def shuffle_samples(self, epoch: int) -> None:
        """Reorders the lists from (seed, epoch): the book shuffles at the top of each epoch."""
        self.epoch = epoch
        rng = random.Random(f"{self.seed}/{epoch}")
        for items in (self.candidates, self.positive_list, self.negative_list):
            items.sort()
            rng.shuffle(items)

    def __len__(self) -> int:
        return self.epoch_size

    def candidate(self, ndx: int) -> CandidateInfoTuple:
        if self.ratio_int:
            pos_ndx = ndx // (self.ratio_int + 1)
            if ndx % (self.ratio_int + 1):
                return self.negative_list[(ndx - 1 - pos_ndx) % len(self.negative_list)]
            return self.positive_list[pos_ndx % len(self.positive_list)]
        return self.candidates[ndx % len(self.candidates)]

    def __getitem__(self, ndx: int) -> tuple[torch.Tensor, torch.Tensor, str, torch.Tensor]:
        c = self.candidate(ndx)
        chunk, center_irc = self.crops.get(c.series_uid, c.center_xyz, self.width_irc)
        chunk_t = torch.from_numpy(chunk).to(torch.float32).unsqueeze(0)
        if self.augmentation is not None:
            chunk_t = augment_chunk(chunk_t, self.augmentation, random.Random(f"{self.seed}/{self.epoch}/{ndx}"))
        positive = self.is_positive(c)
        label = torch.tensor([not positive, positive], dtype=torch.long)
        return chunk_t, label, c.series_uid, torch.tensor(center_irc, dtype=torch.long)
