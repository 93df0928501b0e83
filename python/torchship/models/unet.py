"""Chapters 13 and 15: the nodule segmentation model, ``UNetWrapper`` around a jvanvugt-style ``UNet``.

``UNet`` follows jvanvugt/pytorch-unet (MIT) as the book adapts it: average
pooling between levels, conv blocks with optional padding and BatchNorm,
'upconv' (ConvTranspose2d) or 'upsample' (bilinear + 1x1 conv) up blocks that
concatenate a centre crop of the skip connection. ``UNetWrapper`` adds an input
BatchNorm2d (the model normalises its own input) and a Sigmoid (output in [0, 1]).

The MEAP configuration: 8 input channels (7 consecutive CT slices centred on
the target slice, HU / 1000, then the lung mask), depth 4, 2**3 = 8 filters first, padding, BatchNorm,
'upconv'; 121,905 parameters; [N, 8, H, W] -> [N, 1, H, W].

Chapter 15's fix: ``center_crop`` is a module-level TorchScript function that
takes the target tensor, so the crop offsets are computed from sizes at run
time. ``torch.jit.trace`` then records a call instead of baking in Python ints:
no TracerWarning, and the traced model works at other input sizes.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from torchship.models.luna import init_fan_out
from torchship.models.registry import TensorSpec, Weights, register_model


def _center_crop(layer: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The centre of ``layer`` with the height and width of ``target``."""
    _, _, layer_height, layer_width = layer.size()
    _, _, target_height, target_width = target.size()
    diff_y = (layer_height - target_height) // 2
    diff_x = (layer_width - target_width) // 2
    return layer[:, :, diff_y : (diff_y + target_height), diff_x : (diff_x + target_width)]


# The book's ``@torch.jit.script`` decorator, applied by hand to silence only torch 2.14's
# deprecation FutureWarning at import (TorchScript is still a format torchship ships).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
    center_crop = torch.jit.script(_center_crop)


class UNetConvBlock(nn.Module):
    """Conv3x3 - ReLU - [BatchNorm] twice; ``padding`` keeps the size, otherwise each conv trims 2."""

    def __init__(self, in_size: int, out_size: int, padding: bool, batch_norm: bool) -> None:
        super().__init__()
        block: list[nn.Module] = [nn.Conv2d(in_size, out_size, kernel_size=3, padding=int(padding)), nn.ReLU()]
        if batch_norm:
            block.append(nn.BatchNorm2d(out_size))
        block += [nn.Conv2d(out_size, out_size, kernel_size=3, padding=int(padding)), nn.ReLU()]
        if batch_norm:
            block.append(nn.BatchNorm2d(out_size))
        self.block = nn.Sequential(*block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNetUpBlock(nn.Module):
    """Upsample x2, concatenate the centre-cropped skip connection, conv block."""

    def __init__(self, in_size: int, out_size: int, up_mode: str, padding: bool, batch_norm: bool) -> None:
        super().__init__()
        if up_mode == "upconv":
            self.up: nn.Module = nn.ConvTranspose2d(in_size, out_size, kernel_size=2, stride=2)
        elif up_mode == "upsample":
            self.up = nn.Sequential(
                nn.Upsample(mode="bilinear", scale_factor=2, align_corners=False),
                nn.Conv2d(in_size, out_size, kernel_size=1),
            )
        else:
            raise ValueError(f"up_mode must be 'upconv' or 'upsample', not {up_mode!r}")
        self.conv_block = UNetConvBlock(in_size, out_size, padding, batch_norm)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        crop1 = center_crop(bridge, up)
        return self.conv_block(torch.cat([up, crop1], 1))


class UNet(nn.Module):
    """``depth`` levels with 2**(wf + i) filters; avg_pool2d(2) down, up blocks back, 1x1 conv to ``n_classes``."""

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        depth: int = 5,
        wf: int = 6,
        padding: bool = False,
        batch_norm: bool = False,
        up_mode: str = "upconv",
    ) -> None:
        super().__init__()
        if up_mode not in ("upconv", "upsample"):
            raise ValueError(f"up_mode must be 'upconv' or 'upsample', not {up_mode!r}")
        self.padding = padding
        self.depth = depth
        prev_channels = in_channels
        self.down_path = nn.ModuleList()
        for i in range(depth):
            self.down_path.append(UNetConvBlock(prev_channels, 2 ** (wf + i), padding, batch_norm))
            prev_channels = 2 ** (wf + i)
        self.up_path = nn.ModuleList()
        for i in reversed(range(depth - 1)):
            self.up_path.append(UNetUpBlock(prev_channels, 2 ** (wf + i), up_mode, padding, batch_norm))
            prev_channels = 2 ** (wf + i)
        self.last = nn.Conv2d(prev_channels, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks: list[torch.Tensor] = []
        for i, down in enumerate(self.down_path):
            x = down(x)
            if i != len(self.down_path) - 1:
                blocks.append(x)
                x = F.avg_pool2d(x, 2)
        for i, up in enumerate(self.up_path):
            x = up(x, blocks[-i - 1])
        return self.last(x)


class UNetWrapper(nn.Module):
    """Input BatchNorm2d -> UNet -> Sigmoid, with the book's Kaiming fan_out init (as ``LunaModel``)."""

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        depth: int = 5,
        wf: int = 6,
        padding: bool = False,
        batch_norm: bool = False,
        up_mode: str = "upconv",
    ) -> None:
        super().__init__()
        self.input_batchnorm = nn.BatchNorm2d(in_channels)
        self.unet = UNet(in_channels, n_classes, depth, wf, padding, batch_norm, up_mode)
        self.final = nn.Sigmoid()
        init_fan_out(self, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear))

    def forward(self, input_batch: torch.Tensor) -> torch.Tensor:
        return self.final(self.unet(self.input_batchnorm(input_batch)))


MEAP_SEGMENTATION_ARGS = {
    "in_channels": 8,
    "n_classes": 1,
    "depth": 4,
    "wf": 3,
    "padding": True,
    "batch_norm": True,
    "up_mode": "upconv",
}

register_model(
    "luna_segmentation",
    # Four levels halve H and W three times: other sizes come out cropped (eager) or fail (ONNX, .pt2).
    inputs=(TensorSpec("ct_slices", (-1, 8, -1, -1), multiple_of=(1, 1, 8, 8), min_shape=(1, 8, 8, 8)),),
    outputs=(TensorSpec("nodule_probability", (-1, 1, -1, -1)),),
    weights=[
        Weights(
            "luna_segmentation",
            preprocessing={
                "hu_clip": [-1000.0, 1000.0],
                "hu_divisor": 1000.0,
                "context_slices": 3,  # channels 0-6: slices target-3 .. target+3; channel 7: the lung mask (0/1)
                "normalize": "in_model",  # input BatchNorm2d
                "threshold": 0.5,  # a pixel is a nodule candidate above this
            },
            dataset="luna16",
        )
    ],
    description="Chapter 13 UNetWrapper(in_channels=8, n_classes=1, depth=4, wf=3, padding, batch_norm, upconv)",
    default_args=MEAP_SEGMENTATION_ARGS,
    example_shapes={"ct_slices": (1, 8, 64, 64)},  # the book serves 512x512 slices; small keeps checks fast
    max_batch_size=16,
)(UNetWrapper)
