"""torchvision architectures as a user brings them: random init (nothing can be downloaded), made
non-degenerate the way docs/tolerance.md says, at small input sizes so the matrix runs on a CPU.

Random init alone is not enough to verify anything: BatchNorm's default running
statistics (mean 0, variance 1) shrink or blow up activations block after block
(EfficientNet-B0's logits ~1e-14) and ViT's head is zero-initialised (logits
exactly 0). ``non_degenerate`` calibrates BatchNorm on random batches and
re-initialises all-zero weights, so outputs depend on inputs at order 0.1-10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import detection, segmentation

from torchship.export.detection import PaddedDetections

IMAGE = (3, 32, 32)  # CNNs accept any size; small keeps the matrix fast


@dataclass(frozen=True)
class Arch:
    name: str
    family: str
    build: Callable[[], nn.Module]
    image: tuple[int, int, int] = IMAGE
    torchscript: str = "trace"
    max_batch_size: int = 3  # verified at batch 1 and 3
    slow: bool = False  # default run: a few per family; the rest with -m slow
    formats: tuple[str, ...] = ("torchscript",)
    variants: tuple[str, ...] = ()  # compiled .pt2 variants (docs/variants.md)
    export_kwargs: dict[str, Any] = field(default_factory=dict)


def _classifier(builder: Callable[..., nn.Module], **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: builder(weights=None, num_classes=10, **kwargs)


def _detector() -> nn.Module:
    det = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=5,
        min_size=128,
        max_size=128,
        box_detections_per_img=10,
        box_score_thresh=0.0,
    )
    return PaddedDetections(det, max_detections=10)


def _detector_calibration(model: nn.Module, x: torch.Tensor) -> None:
    det = model.detector  # type: ignore[attr-defined]
    det.backbone(det.transform(list(x))[0].tensors)


ARCHS = [
    Arch("resnet18", "ResNet", _classifier(torchvision.models.resnet18)),
    Arch("mobilenet_v3_small", "MobileNet", _classifier(torchvision.models.mobilenet_v3_small)),
    Arch(
        "vit",
        "Vision Transformer",
        lambda: torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
        ),
    ),
    Arch(
        "swin",
        "Swin Transformer (shifted windows)",
        lambda: torchvision.models.SwinTransformer(
            patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=10
        ),
        torchscript="script",  # tracing freezes its padding and shift decisions (TracerWarnings in torchvision)
    ),
    Arch(
        "lraspp_mobilenet",
        "LR-ASPP segmentation (dict output)",
        lambda: segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3),
    ),
    Arch(
        "deeplabv3_mobilenet",
        "DeepLabV3 segmentation (dict output with an auxiliary head)",
        lambda: segmentation.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=3, aux_loss=True
        ),
        slow=True,
    ),
    Arch(
        "efficientnet_b0",
        "EfficientNet",
        _classifier(torchvision.models.efficientnet_b0),
        image=(3, 64, 64),  # at 32x32 its last stages see 1x1 maps: calibrated logits reach ~1e2-1e5, ill-conditioned
        slow=True,
        formats=("torchscript", "onnx"),
    ),
    Arch("densenet121", "DenseNet", _classifier(torchvision.models.densenet121), slow=True),
    Arch(
        "convnext_tiny",
        "ConvNeXt",
        _classifier(torchvision.models.convnext_tiny),
        slow=True,
        formats=("torchscript", "pt2"),
        variants=("bf16-cl", "fp32-cl"),
    ),
    Arch("regnet_y_400mf", "RegNet", _classifier(torchvision.models.regnet_y_400mf), slow=True),
    Arch("shufflenet_v2_x0_5", "ShuffleNet", _classifier(torchvision.models.shufflenet_v2_x0_5), slow=True),
    Arch(
        "squeezenet1_1",
        "SqueezeNet",
        _classifier(torchvision.models.squeezenet1_1),
        slow=True,
        formats=("torchscript", "onnx", "pt2"),
        variants=("bf16-cl", "bf16"),
    ),
    Arch(
        "fasterrcnn_mobilenet",
        "Faster R-CNN detection (torchvision::nms, padded)",
        _detector,
        image=(3, 128, 128),
        torchscript="script",  # the way torchvision's detectors export; tracing freezes the number of boxes
        slow=True,
    ),
]
BY_NAME = {a.name: a for a in ARCHS}


def non_degenerate(model: nn.Module, arch: Arch, seed: int = 0, batches: int = 3, batch_size: int = 8) -> nn.Module:
    """``model`` with BatchNorm statistics calibrated on random batches and all-zero weights re-initialised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        weight = getattr(m, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2 and not weight.detach().any():
            with torch.no_grad():
                weight.normal_(0.0, 0.02, generator=g)  # ViT's head: zeros would make every logit 0
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batches
        m.train()
    with torch.no_grad():
        for _ in range(batches):
            x = torch.randn(batch_size, *arch.image, generator=g)  # the distribution verification draws from
            if isinstance(model, PaddedDetections):
                _detector_calibration(model, x)
            else:
                model(x)
    return model.eval()


def build(arch: Arch, seed: int = 0) -> nn.Module:
    """The architecture, seeded, made non-degenerate, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = arch.build()
    return non_degenerate(model, arch, seed)
