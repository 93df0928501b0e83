"""Chapter 2: pretrained ImageNet classifiers from torchvision (ResNet-101, ResNet-18, ResNet-50, AlexNet).

The architectures are torchvision's, built with ``weights=None``: nothing is
ever downloaded. Pretrained weights come from a local file (training's
``--weights``) and load because the module *is* torchvision's, keys and all.
The 1000 class names ship beside this file (``imagenet_classes.txt``, copied
from torchvision's offline weight metadata, the book's ``imagenet_classes.txt``
role), so index 207 is "golden retriever" as in the book.

Preprocessing is the book's: Resize(256), CenterCrop(224), ToTensor, Normalize
with the ImageNet statistics. Current torchvision pools with AdaptiveAvgPool2d
(the book's printout shows AvgPool2d(7)); the input is declared 224x224 anyway.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from torch import nn

from torchship.models.registry import TensorSpec, Weights, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_PREPROCESSING: dict[str, Any] = {
    "resize": 256,
    "center_crop": 224,
    "to_tensor": True,
    "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
}


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in index order, read from the package (no network)."""
    text = resources.files("torchship.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    if len(labels) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(labels)} names, expected 1000")
    return labels


# torchvision is imported inside the constructors so that importing the registry stays cheap.
def resnet101(num_classes: int = 1000) -> nn.Module:
    """The book's chapter 2 classifier: 44.5 M parameters, fc = Linear(2048, 1000)."""
    from torchvision import models

    return models.resnet101(weights=None, num_classes=num_classes)


def resnet50(num_classes: int = 1000) -> nn.Module:
    """ResNet-50, a TorchHub entry point the book names."""
    from torchvision import models

    return models.resnet50(weights=None, num_classes=num_classes)


def resnet18(num_classes: int = 1000) -> nn.Module:
    """ResNet-18, the book's TorchHub example."""
    from torchvision import models

    return models.resnet18(weights=None, num_classes=num_classes)


def alexnet(num_classes: int = 1000) -> nn.Module:
    """AlexNet, the ILSVRC-2012 winner the book opens chapter 2 with."""
    from torchvision import models

    return models.alexnet(weights=None, num_classes=num_classes)


for _name, _constructor, _description in (
    ("resnet101", resnet101, "Chapter 2 ResNet-101 ImageNet classifier (torchvision, weights from a local file)"),
    ("resnet50", resnet50, "ResNet-50 ImageNet classifier (torchvision, weights from a local file)"),
    ("resnet18", resnet18, "ResNet-18 ImageNet classifier (torchvision, weights from a local file)"),
    ("alexnet", alexnet, "Chapter 2 AlexNet ImageNet classifier (torchvision, weights from a local file)"),
):
    register_model(
        _name,
        inputs=(TensorSpec("image", (-1, 3, 224, 224)),),
        outputs=(TensorSpec("logits", (-1, 1000)),),
        weights=[Weights(_name, labels=imagenet_labels(), preprocessing=IMAGENET_PREPROCESSING, dataset="imagenet-1k")],
        description=_description,
        max_batch_size=32,
    )(_constructor)
