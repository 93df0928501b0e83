"""A model's declared image ``preprocessing`` (from its checkpoint, carried into config.json), parsed once.

Export makes the declaration into a TorchScript graph saved beside the model (``preprocess.pt``, built by
``torchship.export.image_graphs``; contract and verification in docs/images.md): the server's image route
and ``Runtime.infer_image`` run that graph, so no client re-declares the steps (the deployment bug chapter
15 warns of). ``ImageSteps`` (its docstring lists the keys) is the one reading of the dict, for the graph
and for the PIL path below: the training path, which the graph is verified against.

CT models (LunaModel, the U-Net) declare ``hu_clip`` instead: their input is Hounsfield units, not an image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # Pillow comes with the extras that read images, not with the core
    from PIL import Image

# The steps this reading knows; the other keys describe, or are read by export.
IMAGE_KEYS = frozenset({"resize", "center_crop", "to_tensor", "scale", "grey_to_rgb", "normalize"})
_OTHER_KEYS = frozenset({"source", "scores", "postprocess"})
# Keys only an image's declaration holds ("scale" and "normalize" also describe tensors).
_PIXEL_KEYS = frozenset({"resize", "center_crop", "to_tensor", "grey_to_rgb"})
INTERPOLATIONS = ("bilinear", "nearest")
SCORES = ("logits", "probabilities")


def declares_image(preprocessing: Mapping[str, Any]) -> bool:
    """Whether the model takes images: pixel steps, and no CT ones."""
    return "hu_clip" not in preprocessing and bool(_PIXEL_KEYS & set(preprocessing))


@dataclass(frozen=True)
class Postprocess:
    """An image-to-image model's output -> an image: ``output * scale + shift``, clamped to
    ``output_range``, which maps to 0..255."""

    scale: float = 1.0
    shift: float = 0.0
    output_range: tuple[float, float] = (0.0, 1.0)


def _pair(value: Any, key: str) -> tuple[int, int]:
    size = [value] if isinstance(value, int) else list(value)
    if len(size) == 1:
        size *= 2
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"preprocessing {key!r} must be a positive int or [H, W], not {value!r}")
    return size[0], size[1]


@dataclass(frozen=True)
class ImageSteps:
    """The parsed declaration. Keys of the dict, applied in this order whatever the dict's order:

        resize       int: the shorter side (torchvision's Resize(int)); or {"size": int | [H, W],
                     "interpolation": "bilinear" (antialiased; default) | "nearest" (PIL's NEAREST)}
        center_crop  int or [H, W]; zero-padded first where the image is smaller (torchvision's)
        to_tensor    uint8 HWC -> CHW float in [0, 1] (values / 255); always done, the key documents it
        scale        multiply the raw uint8 values instead of / 255 (digits: 1/16 of their 0..16)
        grey_to_rgb  the model was trained on one grey channel (PIL's "L") repeated three times
        normalize    {"mean": [...], "std": [...]} per channel; "in_model" when a layer of the model does it
        scores       what a classifier's output holds: "logits" (default) or "probabilities"
        postprocess  image-to-image models: {"scale", "shift", "output_range"} (``Postprocess``)
        source       a description, for people

    Resize and crop work on uint8 pixels; the float steps follow (``to_model_input``).
    """

    resize: tuple[int, ...] = ()  # (S,): the shorter side; (H, W)
    interpolation: str = "bilinear"
    center_crop: tuple[int, int] | None = None
    scale: float | None = None  # None: / 255
    grey_to_rgb: bool = False
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    scores: str = "logits"
    postprocess: Postprocess | None = None

    @staticmethod
    def parse(preprocessing: Mapping[str, Any]) -> ImageSteps:
        """Raises ValueError naming the key for anything this reading does not know: an image step
        ignored would make the graph and the training path drift apart silently."""
        p = dict(preprocessing)
        if "hu_clip" in p:
            raise ValueError(
                "this model takes CT data in Hounsfield units (preprocessing 'hu_clip'), not an image; send its "
                "input tensor instead"
            )
        unknown = set(p) - IMAGE_KEYS - _OTHER_KEYS
        if unknown:
            raise ValueError(
                f"preprocessing key(s) {sorted(unknown)} are not image steps this version knows "
                f"({', '.join(sorted(IMAGE_KEYS | _OTHER_KEYS))})"
            )
        resize: tuple[int, ...] = ()
        interpolation = "bilinear"
        spec = p.get("resize")
        if spec is not None:
            if isinstance(spec, Mapping):
                interpolation = spec.get("interpolation", "bilinear")
                spec = spec["size"]
            if interpolation not in INTERPOLATIONS:
                raise ValueError(f"resize interpolation {interpolation!r}: choose from {', '.join(INTERPOLATIONS)}")
            resize = (spec,) if isinstance(spec, int) else tuple(spec)
            if len(resize) not in (1, 2) or not all(isinstance(s, int) and s > 0 for s in resize):
                raise ValueError(f"preprocessing 'resize' must be a positive int or [H, W], not {spec!r}")
        norm = p.get("normalize")
        mean: tuple[float, ...] = ()
        std: tuple[float, ...] = ()
        if isinstance(norm, Mapping):
            mean, std = tuple(float(m) for m in norm["mean"]), tuple(float(s) for s in norm["std"])
            if len(mean) != len(std) or not mean:
                raise ValueError(f"normalize: {len(mean)} means for {len(std)} standard deviations")
        elif norm not in (None, "in_model"):
            raise ValueError(f"normalize must be {{'mean': [...], 'std': [...]}} or 'in_model', not {norm!r}")
        scores = p.get("scores", "logits")
        if scores not in SCORES:
            raise ValueError(f"preprocessing 'scores' must be one of {SCORES}, not {scores!r}")
        post = p.get("postprocess")
        return ImageSteps(
            resize=resize,
            interpolation=interpolation,
            center_crop=_pair(p["center_crop"], "center_crop") if "center_crop" in p else None,
            scale=float(p["scale"]) if p.get("scale") is not None else None,
            grey_to_rgb=bool(p.get("grey_to_rgb")),
            mean=mean,
            std=std,
            scores=scores,
            postprocess=Postprocess(
                float(post.get("scale", 1.0)),
                float(post.get("shift", 0.0)),
                _range(post.get("output_range", (0.0, 1.0))),
            )
            if post
            else None,
        )

    def fixed_size(self) -> tuple[int, int] | None:
        """The (H, W) every image becomes, or None where it follows the image's."""
        if self.center_crop:
            return self.center_crop
        return (self.resize[0], self.resize[1]) if len(self.resize) == 2 else None


def _range(value: Any) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not hi > lo:
        raise ValueError(f"postprocess output_range must be [low, high] with high > low, not {value!r}")
    return lo, hi


def to_model_input(
    pixels: torch.Tensor, scale: float | None, grey_to_rgb: bool, mean: list[float], std: list[float]
) -> torch.Tensor:
    """Resampled uint8 ``[C, H, W]`` -> the model's float32 input item: one function for the PIL path and,
    compiled into it, the exported graph."""
    x = pixels.to(torch.float32)
    x = x * scale if scale is not None else x / 255.0  # to_tensor's [0, 1]
    if grey_to_rgb and x.size(0) == 1:
        x = x.expand(3, -1, -1)
    if len(mean) > 0:  # as torchvision's normalize: subtract, then divide
        m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        x = (x - m) / s
    return x.contiguous()


def pil_pixels(image: Image.Image, steps: ImageSteps) -> torch.Tensor:
    """The training path's resize and crop, on PIL: uint8 ``[C, H, W]``. A grey model's image is made
    "L" first (from RGB, as the graph does); any other mode but "L" becomes RGB as PIL's convert makes it."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F  # here: importing torchship.export stays light

    if steps.grey_to_rgb and image.mode != "L":
        image = image.convert("RGB").convert("L")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    if steps.resize:
        mode = InterpolationMode.NEAREST if steps.interpolation == "nearest" else InterpolationMode.BILINEAR
        image = F.resize(image, list(steps.resize), interpolation=mode, antialias=True)
    if steps.center_crop:
        image = F.center_crop(image, list(steps.center_crop))
    return F.pil_to_tensor(image)  # uint8 CHW, exact


def image_transform(preprocessing: Mapping[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """A PIL image -> one CHW float32 tensor (no batch dimension), as the model expects it."""
    steps = ImageSteps.parse(preprocessing)
    mean, std = list(steps.mean), list(steps.std)

    def transform(image: Image.Image) -> torch.Tensor:
        return to_model_input(pil_pixels(image, steps), steps.scale, steps.grey_to_rgb, mean, std)

    return transform
