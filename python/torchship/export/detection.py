"""Detection models as batched models: fixed-size padded detections plus a count.

A torchvision detector takes a list of images and returns one dict per image
whose sizes depend on what it found: a server cannot batch that, and export
refuses it (``torchship.export.outputs``). ``PaddedDetections`` wraps it:

    images  (B, 3, H, W) float  ->  boxes  (B, K, 4) float   x1, y1, x2, y2 in input pixels
                                    scores (B, K)    float   best first
                                    labels (B, K)    int64
                                    count  (B,)      int64   rows of boxes/scores/labels that are real

Rows at and after ``count`` are zero. K is ``max_detections``; set the
detector's own limit (``box_detections_per_img`` / ``detections_per_img``) to
the same value so none is cut. The wrapper is scriptable, the way torchvision's
detectors export: ``export(PaddedDetections(det, 20), x, torchscript="script", ...)``.
Compare detections as sets, not by position: ``torchship.tolerance.compare_detections``.
"""

from __future__ import annotations

import torch
from torch import nn


class PaddedDetections(nn.Module):
    def __init__(self, detector: nn.Module, max_detections: int = 100) -> None:
        super().__init__()
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, not {max_detections}")
        self.detector = detector
        self.max_detections = max_detections

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.detector(list(images.unbind(0)))
        # Scripted torchvision detectors return (losses, detections); eager ones the detections alone.
        if torch.jit.is_scripting():  # noqa: SIM108  TorchScript skips the other branch of an if statement only
            detections = out[1]
        else:
            detections = out
        batch, k = images.shape[0], self.max_detections
        boxes = images.new_zeros((batch, k, 4))
        scores = images.new_zeros((batch, k))
        labels = torch.zeros((batch, k), dtype=torch.int64, device=images.device)
        count = torch.zeros((batch,), dtype=torch.int64, device=images.device)
        for i, d in enumerate(detections):
            n = min(int(d["scores"].shape[0]), k)
            boxes[i, :n] = d["boxes"][:n]
            scores[i, :n] = d["scores"][:n]
            labels[i, :n] = d["labels"][:n]
            count[i] = n
        return {"boxes": boxes, "scores": scores, "labels": labels, "count": count}
