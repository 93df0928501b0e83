"""The executable form of a model's ``preprocessing`` (from its checkpoint, carried into config.json).

Clients turn an image into the model's input tensor with exactly the steps the model was trained
with, read from the repository instead of re-declared by hand (the deployment bug chapter 15 warns of:
a server whose preprocessing drifts from training's). Keys, applied in this order:

    scale           multiply raw pixel values (digits: 1/16)
    resize          int (shorter side, as torchvision's Resize) or {"size": [H, W], "interpolation": ...}
    center_crop     int or [H, W]
    grey_to_rgb     repeat a single channel three times
    to_tensor       HWC uint8 PIL image -> CHW float in [0, 1]
    normalize       {"mean": [...], "std": [...]} per channel; "in_model" when a layer of the model does it

CT models (LunaModel, the U-Net) declare ``hu_clip`` instead: their input is Hounsfield units, not an image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

_INTERPOLATION = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR}


def _resize(spec: Any) -> Callable[[Any], Any]:
    if isinstance(spec, int):
        return lambda img: F.resize(img, spec, antialias=True)
    size = list(spec["size"])
    mode = _INTERPOLATION[spec.get("interpolation", "bilinear")]
    return lambda img: F.resize(img, size, interpolation=mode)


def image_transform(preprocessing: Mapping[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """A PIL image -> one CHW float32 tensor (no batch dimension), as the model expects it."""
    if "hu_clip" in preprocessing:
        raise ValueError(
            "this model takes CT data in Hounsfield units (preprocessing 'hu_clip'), not an image; send its input "
            "tensor instead"
        )
    steps: list[Callable[[Any], Any]] = []
    if "resize" in preprocessing:
        steps.append(_resize(preprocessing["resize"]))
    if "center_crop" in preprocessing:
        steps.append(lambda img: F.center_crop(img, preprocessing["center_crop"]))
    steps.append(F.pil_to_tensor)  # uint8 CHW, exact
    scale = preprocessing.get("scale")
    if scale is not None:
        steps.append(lambda t: t.to(torch.float32) * float(scale))
    else:
        steps.append(lambda t: t.to(torch.float32) / 255.0)  # to_tensor's [0, 1]
    if preprocessing.get("grey_to_rgb"):
        steps.append(lambda t: t.expand(3, -1, -1) if t.shape[0] == 1 else t)
    if isinstance(preprocessing.get("normalize"), Mapping):  # "in_model": the model's first layer does it
        mean, std = preprocessing["normalize"]["mean"], preprocessing["normalize"]["std"]
        steps.append(lambda t: F.normalize(t, mean, std))

    def transform(image: Image.Image) -> torch.Tensor:
        x: Any = image
        for step in steps:
            x = step(x)
        return x.contiguous()

    return transform


def load_image(path: str, preprocessing: Mapping[str, Any]) -> torch.Tensor:
    """An image file as a batch of one, preprocessed for the model."""
    with Image.open(path) as img:
        mode = "L" if preprocessing.get("grey_to_rgb") else "RGB"
        return image_transform(preprocessing)(img.convert(mode)).unsqueeze(0)
