"""Chapter 11: the LUNA nodule candidate classifier, ``LunaModel``.

A 32x48x48 CT chunk (HU clipped to [-1000, 1000], crop centred on a candidate)
goes through a BatchNorm3d "tail" (the model normalises its own input), four
LunaBlocks (each halves every side: 32x48x48 -> 2x3x3, 64 channels = 1152) and a
Linear(1152, 2) head. ``forward`` returns ``(logits, probabilities)``: logits for
CrossEntropyLoss in training, softmax probabilities for serving.

Labels follow the published edition: ``luna_classifier`` tells nodules from
non-nodules (``candidates.csv`` ``class``; the early-access text read it as
malignancy), and ``luna_malignancy``, the same architecture fine-tuned in
chapter 14, tells malignant from benign nodules: its ``probabilities[:, 1]`` is
chapter 15's ``prob_malignant``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchship.models.registry import TensorSpec, Weights, register_model


class LunaBlock(nn.Module):
    """Two 3x3x3 convs with ReLU (5x5x5 receptive field), then MaxPool3d(2)."""

    def __init__(self, in_channels: int, conv_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, conv_channels, kernel_size=3, padding=1, bias=True)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(conv_channels, conv_channels, kernel_size=3, padding=1, bias=True)
        self.relu2 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(2, 2)

    def forward(self, input_batch: torch.Tensor) -> torch.Tensor:
        block_out = self.relu1(self.conv1(input_batch))
        block_out = self.relu2(self.conv2(block_out))
        return self.maxpool(block_out)


def init_fan_out(module: nn.Module, types: tuple[type[nn.Module], ...]) -> None:
    """The book's init for ``types``: Kaiming normal (fan_out, relu) weights; biases drawn as printed.

    The book calls ``nn.init.normal_(bias, -bound, bound)`` with bound = 1/sqrt(fan_out):
    a normal with mean -bound and std bound (probably meant as uniform). Kept as printed.
    """
    for m in module.modules():
        if type(m) in types:
            weight = m.weight.data  # type: ignore[union-attr]
            nn.init.kaiming_normal_(weight, a=0, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:  # type: ignore[union-attr]
                _, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
                bound = 1 / math.sqrt(fan_out)
                nn.init.normal_(m.bias, -bound, bound)  # type: ignore[union-attr,arg-type]


class LunaModel(nn.Module):
    """BatchNorm3d tail, four LunaBlocks (8, 16, 32, 64 channels), Linear(1152, 2) + Softmax head.

    The tail normalises ``in_channels`` (the book hard-codes 1, the same at the default).
    """

    def __init__(self, in_channels: int = 1, conv_channels: int = 8) -> None:
        super().__init__()
        self.tail_batchnorm = nn.BatchNorm3d(in_channels)
        self.block1 = LunaBlock(in_channels, conv_channels)
        self.block2 = LunaBlock(conv_channels, conv_channels * 2)
        self.block3 = LunaBlock(conv_channels * 2, conv_channels * 4)
        self.block4 = LunaBlock(conv_channels * 4, conv_channels * 8)
        self.head_linear = nn.Linear(2 * 3 * 3 * conv_channels * 8, 2)
        self.head_softmax = nn.Softmax(dim=1)
        init_fan_out(self, (nn.Linear, nn.Conv3d))

    def forward(self, input_batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        block_out = self.tail_batchnorm(input_batch)
        block_out = self.block1(block_out)
        block_out = self.block2(block_out)
        block_out = self.block3(block_out)
        block_out = self.block4(block_out)
        linear_output = self.head_linear(block_out.flatten(1))
        return linear_output, self.head_softmax(linear_output)


LUNA_CROP_PREPROCESSING = {
    "hu_clip": [-1000.0, 1000.0],
    "crop_irc": [32, 48, 48],  # index (slices), row, column around the candidate centre
    "normalize": "in_model",  # tail BatchNorm3d
}

register_model(
    "luna_classifier",
    inputs=(TensorSpec("ct_chunk", (-1, 1, 32, 48, 48)),),
    outputs=(TensorSpec("logits", (-1, 2)), TensorSpec("probabilities", (-1, 2))),
    weights=[
        Weights(
            "luna_classifier",
            labels=("non_nodule", "nodule"),
            preprocessing=LUNA_CROP_PREPROCESSING,
            dataset="luna16",
        ),
        Weights(
            "luna_malignancy",
            labels=("benign", "malignant"),
            preprocessing=LUNA_CROP_PREPROCESSING,
            dataset="luna16",
            description="Chapter 14: LunaModel fine-tuned from luna_classifier on malignant vs benign nodules",
        ),
    ],
    description="Chapter 11 LunaModel: 3D CNN nodule candidate classifier on 32x48x48 CT chunks",
    max_batch_size=256,  # the book trains at batch 256
)(LunaModel)
