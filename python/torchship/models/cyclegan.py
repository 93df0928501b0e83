"""Chapter 2 (and 15): the CycleGAN horse -> zebra generator, ``ResNetGenerator``.

The layer list is the book's (and the C++ API listing's), in one ``nn.Sequential``
called ``model`` so the book's ``horse2zebra_0.4.0.pth`` state_dict keys match.
InstanceNorm2d has ``affine=False`` (no parameters), so 11,378,179 parameters.

Input: RGB in [0, 1] (Resize(256) + ToTensor, no Normalize), any H and W.
Output: Tanh, in [-1, 1]; the book post-processes with ``(out + 1) / 2`` to get
an image in [0, 1] (recorded as ``preprocessing["postprocess"]``). Two stride-2
convolutions and two x2 transposed convolutions map each side n to
4 * ceil(n / 4): 256 -> 256, 227 -> 228.
"""

from __future__ import annotations

import torch
from torch import nn

from torchship.models.registry import TensorSpec, Weights, register_model


class ResNetBlock(nn.Module):
    """Two reflection-padded 3x3 convs with InstanceNorm, ReLU between, plus the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            nn.InstanceNorm2d(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResNetGenerator(nn.Module):
    """7x7 stem, two stride-2 downsamplings, ``n_blocks`` ResNetBlocks, two x2 upsamplings, 7x7 head and Tanh."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9) -> None:
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        super().__init__()
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.ngf = ngf
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=True),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=True),
                nn.InstanceNorm2d(ngf * mult * 2),
                nn.ReLU(True),
            ]
        mult = 2**n_downsampling
        layers += [ResNetBlock(ngf * mult) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=True
                ),
                nn.InstanceNorm2d(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)


register_model(
    "cyclegan",
    # Two stride-2 convolutions: 4 pixels become 1 at the bottleneck, where instance norm and reflection
    # padding fail. (Sizes not divisible by 4 come back rounded up, alike in every runtime.)
    inputs=(TensorSpec("image", (-1, 3, -1, -1), min_shape=(1, 3, 5, 5)),),
    outputs=(TensorSpec("generated", (-1, 3, -1, -1)),),
    weights=[
        Weights(
            "cyclegan",
            preprocessing={
                "resize": 256,
                "to_tensor": True,  # input in [0, 1]; no Normalize
                # output in [-1, 1] (Tanh); the image is (out + 1) / 2 = out * scale + shift
                "postprocess": {"scale": 0.5, "shift": 0.5, "output_range": [0.0, 1.0]},
            },
            dataset="horse2zebra",
        )
    ],
    description="Chapter 2 CycleGAN horse->zebra ResNetGenerator(ngf=64, n_blocks=9)",
    example_shapes={"image": (1, 3, 256, 256)},
    max_batch_size=8,
)(ResNetGenerator)
