"""A model's declared image preprocessing as TorchScript graphs beside its artifacts (docs/images.md).

``preprocess.pt`` takes one decoded uint8 ``[H, W, 3]`` RGB image and returns one float32 item of the
model's input; ``postprocess.pt`` turns one item of an image-to-image model's output into a uint8
``[H, W, 3]`` image. Both are made from the declaration ``torchship.preprocess.ImageSteps`` parses, so the
C++ runtime, the server and ``Runtime.infer_image`` run the training path's steps without re-declaring
them. ``write`` builds, verifies and saves them; a graph refused or outside its bounds is not written and
the manifest says why (the model still exports: it serves tensors as before).
"""

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as nnf

from torchship import tolerance
from torchship.export.formats import torchscript_deprecation_noted
from torchship.models.registry import TensorSpec
from torchship.preprocess import ImageSteps, declares_image, pil_pixels, to_model_input
from torchship.training.checkpoint import sha256

if TYPE_CHECKING:  # Pillow comes with the export extra: a core install still registers `torchship export`
    from PIL import Image

log = logging.getLogger("torchship.export")

PREPROCESS_FILE = "preprocess.pt"
POSTPROCESS_FILE = "postprocess.pt"


# --- the graphs (TorchScript: every helper below is compiled into them) ----------------------------------


def pil_grey(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 ``[3, H, W]`` -> ``[1, H, W]``: PIL's ``convert("L")``, ITU-R 601-2 luma in 16-bit fixed point
    (its Convert.c), exact on every colour."""
    c = rgb.to(torch.int32)
    grey = (c[0] * 19595 + c[1] * 38470 + c[2] * 7471 + 0x8000) >> 16
    return grey.to(torch.uint8).unsqueeze(0)


def resize_uint8(x: torch.Tensor, size: list[int], mode: str) -> torch.Tensor:
    """uint8 ``[C, H, W]`` resized as torchvision's ``v2.functional.resize(antialias=True)`` does on uint8."""
    h, w = x.size(1), x.size(2)
    if len(size) == 1:  # the shorter side; the longer truncated, as torchvision's
        if w <= h:
            new_w, new_h = size[0], int(size[0] * h / w)
        else:
            new_h, new_w = size[0], int(size[0] * w / h)
    else:
        new_h, new_w = size[0], size[1]
    if new_h == h and new_w == w:
        return x
    batch = x.unsqueeze(0)
    if mode != "bilinear":  # nearest-exact: uint8 on any device
        return nnf.interpolate(batch, size=[new_h, new_w], mode=mode)[0]
    if x.device.type == "cpu":  # torch's uint8 kernel (fixed point, rounded), as v2 takes on CPU
        return nnf.interpolate(batch, size=[new_h, new_w], mode="bilinear", align_corners=False, antialias=True)[0]
    # Elsewhere v2 resizes in float and rounds back: within one level of the CPU kernel.
    y = nnf.interpolate(batch.float(), size=[new_h, new_w], mode="bilinear", align_corners=False, antialias=True)
    return y.round().clamp(0, 255).to(torch.uint8)[0]


def center_crop(x: torch.Tensor, crop: list[int]) -> torch.Tensor:
    """torchvision's center_crop: zero padding where the image is smaller, then the crop whose top-left
    corner is round((size - crop) / 2), Python's round (half to even) done in integers."""
    ch, cw = crop[0], crop[1]
    h, w = x.size(1), x.size(2)
    if ch > h or cw > w:
        left, top = max(cw - w, 0) // 2, max(ch - h, 0) // 2
        right, bottom = max(cw - w + 1, 0) // 2, max(ch - h + 1, 0) // 2
        x = nnf.pad(x, [left, right, top, bottom], value=0.0)
        h, w = x.size(1), x.size(2)
    dh, dw = h - ch, w - cw
    top = dh // 2 + (1 if dh % 2 == 1 and (dh // 2) % 2 == 1 else 0)
    left = dw // 2 + (1 if dw % 2 == 1 and (dw // 2) % 2 == 1 else 0)
    return x[:, top : top + ch, left : left + cw]


class Preprocess(torch.nn.Module):
    """``forward(image uint8 [H, W, 3] RGB) -> float32 [C, H', W']``; ``pixels`` stops before the float steps
    (what verification compares with PIL)."""

    # Declared here, evaluated (no postponed annotations in this module): TorchScript cannot infer an
    # element type from an empty list.
    resize: list[int]
    crop: list[int]
    mean: list[float]
    std: list[float]
    scale: float | None
    shape: list[int]
    min_shape: list[int]
    multiple_of: list[int]

    def __init__(self, steps: ImageSteps, model: str, spec: TensorSpec) -> None:
        super().__init__()
        self.model = model
        self.grey = steps.grey_to_rgb or spec.shape[1] == 1
        self.resize = list(steps.resize)
        # "nearest" is PIL's NEAREST (the training path's), which torch calls nearest-exact.
        self.mode = "nearest-exact" if steps.interpolation == "nearest" else "bilinear"
        self.crop = list(steps.center_crop or ())
        self.scale = steps.scale
        self.grey_to_rgb = steps.grey_to_rgb
        self.mean = list(steps.mean)
        self.std = list(steps.std)
        self.shape = list(spec.shape[1:])  # -1: any
        self.min_shape = list(spec.min_shape[1:]) if spec.min_shape else [1, 1, 1]
        self.multiple_of = list(spec.multiple_of[1:]) if spec.multiple_of else [1, 1, 1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = to_model_input(self.pixels(image), self.scale, self.grey_to_rgb, self.mean, self.std)
        for i in range(3):
            have = x.size(i)
            wrong = self.shape[i] != -1 and have != self.shape[i]
            if wrong or have < self.min_shape[i] or have % self.multiple_of[i] != 0:
                raise ValueError(
                    f"preprocess: a {image.size(0)}x{image.size(1)} image became {list(x.shape)} but model "
                    f"'{self.model}' takes {self.shape} (minimum {self.min_shape}, multiple of {self.multiple_of})"
                )
        return x

    @torch.jit.export
    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.dim() != 3 or image.size(2) != 3:
            raise ValueError(
                f"preprocess: expected one decoded image, uint8 [H, W, 3] RGB; got {image.dtype} {list(image.shape)}"
            )
        if image.size(0) < 1 or image.size(1) < 1:
            raise ValueError(f"preprocess: an empty image ({list(image.shape)})")
        x = image.permute(2, 0, 1)  # CHW view, the layout torchvision's pil_to_tensor gives
        if self.grey:
            x = pil_grey(x)
        if len(self.resize) > 0:
            x = resize_uint8(x, self.resize, self.mode)
        if len(self.crop) > 0:
            x = center_crop(x, self.crop)
        return x


class Postprocess(torch.nn.Module):
    """``forward(output float [C, H, W]) -> uint8 [H, W, 3]``: ``output * scale + shift`` clamped to
    ``[lo, hi]``, mapped to 0..255 and rounded to nearest (the book's ToPILImage truncates)."""

    def __init__(self, scale: float, shift: float, lo: float, hi: float) -> None:
        super().__init__()
        self.scale, self.shift, self.lo, self.hi = scale, shift, lo, hi

    def forward(self, output: torch.Tensor) -> torch.Tensor:
        if output.dim() != 3 or (output.size(0) != 3 and output.size(0) != 1) or not output.is_floating_point():
            raise ValueError(
                f"postprocess: expected one float output item [3 or 1, H, W]; got {output.dtype} {list(output.shape)}"
            )
        v = (output.to(torch.float32) * self.scale + self.shift).nan_to_num(nan=self.lo).clamp(self.lo, self.hi)
        v = ((v - self.lo) / (self.hi - self.lo) * 255.0).round()
        if v.size(0) == 1:
            v = v.expand(3, -1, -1)
        return v.to(torch.uint8).permute(1, 2, 0).contiguous()


# --- what is refused before building --------------------------------------------------------------------


def _refusal(steps: ImageSteps, model: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str | None:
    """Why no graph can serve this model, or None."""
    if len(inputs) != 1:
        return f"the model has {len(inputs)} inputs; an image route feeds exactly one"
    spec = inputs[0]
    if spec.dtype != "FP32" or len(spec.shape) != 4:
        return f"its input {spec.name!r} is {spec.dtype} {list(spec.shape)}, not FP32 [batch, C, H, W]"
    channels, height, width = spec.shape[1:]
    made = 3 if steps.grey_to_rgb or channels != 1 else 1
    if channels != made:
        return f"its input {spec.name!r} has {channels} channels; the preprocessing makes {made}"
    if steps.mean and len(steps.mean) != channels:
        return f"normalize declares {len(steps.mean)} channels; the model takes {channels}"
    fixed = steps.fixed_size()
    if (height, width) != (-1, -1) and fixed != (height, width):
        if fixed is None:
            return (
                f"the model takes {channels}x{height}x{width} images but its preprocessing declares no resize or "
                f"center_crop to that size, so only {height}x{width} images would fit; declare e.g. "
                f'"resize": {min(height, width)}, "center_crop": [{height}, {width}]'
            )
        return f"the preprocessing makes {fixed[0]}x{fixed[1]} images; the model takes {channels}x{height}x{width}"
    if steps.postprocess is not None:
        out = outputs[0]
        if len(out.shape) != 4 or out.shape[1] not in (1, 3):
            return f"postprocess is declared but output {out.name!r} is {list(out.shape)}, not [batch, 3 or 1, H, W]"
    return None


def _answer(outputs: Sequence[TensorSpec], labels: Sequence[str] | None, steps: ImageSteps) -> dict[str, Any]:
    """``output`` and ``scores``: the first output with one score per label, for a classifier."""
    if labels:
        for s in outputs:
            if len(s.shape) == 2 and s.shape[1] == len(labels):
                return {"output": s.name, "scores": steps.scores}
    return {"output": outputs[0].name, "scores": None}


# --- verification ---------------------------------------------------------------------------------------


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth gradients and noise: resampling has edges and ramps to work on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 256], -1)
    return np.clip(ramps + rng.integers(-40, 40, ramps.shape), 0, 255).astype(np.uint8)


@functools.cache  # read and made once per process; callers do not change them
def verification_images() -> tuple[tuple[str, "Image.Image"], ...]:
    """Real photos where scikit-learn is installed, odd sizes, and grey and RGBA sources made RGB: PIL
    images in RGB, as the native decoder hands them over (docs/images.md)."""
    from PIL import Image

    images: list[tuple[str, Image.Image]] = []
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for path, pixels in zip(bunch.filenames, bunch.images, strict=True):
            images.append((Path(path).name, Image.fromarray(pixels, "RGB")))
    except ImportError:
        log.info("scikit-learn is not installed: image graphs are verified on generated images only")
    for h, w in ((1, 1), (3, 1000), (257, 300)):
        images.append((f"generated {h}x{w}", Image.fromarray(_photo(h, w, seed=h * w), "RGB")))
    images.append(("grey 61x47 -> RGB", Image.fromarray(_photo(61, 47, seed=7)[..., 0], "L").convert("RGB")))
    rgba = np.concatenate([_photo(50, 70, seed=8), _photo(50, 70, seed=9)[..., :1]], -1)
    images.append(("RGBA 50x70 -> RGB", Image.fromarray(rgba, "RGBA").convert("RGB")))
    return tuple(images)


def torchvision_reference(image: "Image.Image", steps: ImageSteps) -> torch.Tensor:
    """The same steps in torchvision's v2 tensor transforms, on the uint8 tensor (antialias on); a grey
    image's conversion is PIL's (v2's rgb_to_grayscale rounds other weights)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as v2

    x = v2.pil_to_tensor(image)
    if steps.resize:
        mode = InterpolationMode.NEAREST_EXACT if steps.interpolation == "nearest" else InterpolationMode.BILINEAR
        x = v2.resize(x, list(steps.resize), interpolation=mode, antialias=True)
    if steps.center_crop:
        x = v2.center_crop(x, list(steps.center_crop))
    x = v2.to_dtype(x, torch.float32, scale=True) if steps.scale is None else x.to(torch.float32) * steps.scale
    if steps.grey_to_rgb:
        x = x.repeat(3, 1, 1)
    if steps.mean:
        x = v2.normalize(x, list(steps.mean), list(steps.std))
    return x


@dataclass(frozen=True)
class ImageCheck:
    image: str
    shape: list[int]
    torchvision_max_abs: float  # on the model input
    pil_max_levels: int  # uint8 pixels before the float steps
    pil_max_abs: float  # on the model input, for scale


def check_preprocess(graph: torch.jit.ScriptModule, steps: ImageSteps) -> list[ImageCheck]:
    rows = []
    for label, image in verification_images():
        rgb = torch.from_numpy(np.asarray(image).copy())
        got = graph(rgb)
        image = image.convert("L") if graph.grey else image  # PIL's grey, for the references
        want = torchvision_reference(image, steps)
        if got.shape != want.shape:
            raise AssertionError(f"{label}: the graph made {list(got.shape)}, torchvision {list(want.shape)}")
        pil = pil_pixels(image, steps)
        pixels = graph.pixels(rgb)
        if pixels.shape != pil.shape:
            raise AssertionError(f"{label}: the graph's pixels are {list(pixels.shape)}, PIL's {list(pil.shape)}")
        pil_input = to_model_input(pil, steps.scale, steps.grey_to_rgb, list(steps.mean), list(steps.std))
        rows.append(
            ImageCheck(
                f"{label} ({image.height}x{image.width})",
                list(got.shape),
                float((got - want).abs().max()),
                int((pixels.int() - pil.int()).abs().max()),
                float((got - pil_input).abs().max()),
            )
        )
    return rows


def check_postprocess(graph: torch.jit.ScriptModule, post: Any, channels: int) -> dict[str, Any]:
    """Against the formula in float64 (exact) and the book's ToPILImage (truncating: one level below)."""
    from torchvision.transforms import functional as v1

    g = torch.Generator().manual_seed(0)
    lo, hi = post.output_range
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    # Beyond the range on both sides, so clamping is exercised.
    out = ((torch.rand(channels, 37, 53, generator=g) * 2.4 - 1.2) * half - post.shift) / post.scale + centre
    got = graph(out)
    v = (out.double() * post.scale + post.shift).clamp(lo, hi)
    want = ((v - lo) / (hi - lo) * 255).round().to(torch.uint8).permute(1, 2, 0).expand(-1, -1, 3)
    book = torch.from_numpy(np.asarray(v1.to_pil_image(((v - lo) / (hi - lo)).float()).convert("RGB")).copy())
    return {
        "shape": list(out.shape),
        "formula_max_levels": int((got.int() - want.int()).abs().max()),
        "book_to_pil_image_max_levels": int((got.int() - book.int()).abs().max()),
        "bound_levels": tolerance.PREPROCESS_PIL_LEVELS,
    }


# --- build, verify, save --------------------------------------------------------------------------------


# (declaration, input spec) -> the rows and one output. The graph's values are a function of these alone (the
# model's name is only in its messages), so a declaration verified once in this process (the test suite
# exports the zoo's 21 image models, some dozens of times) keeps its seven-image verification; each new
# file is still run and must give the same output, bit for bit.
_VERIFIED: dict[tuple[Any, ...], tuple[list[ImageCheck], torch.Tensor]] = {}


def _checked(graph: torch.jit.ScriptModule, steps: ImageSteps, spec: TensorSpec) -> list[ImageCheck]:
    _, probe = verification_images()[-1]  # small, and RGBA's conversion
    rgb = torch.from_numpy(np.asarray(probe).copy())
    if (steps, spec) in _VERIFIED:
        rows, expected = _VERIFIED[(steps, spec)]
        if torch.equal(graph(rgb), expected):
            return rows
    rows = check_preprocess(graph, steps)
    _VERIFIED[(steps, spec)] = (rows, graph(rgb))
    return rows


@dataclass(frozen=True)
class ImageGraphs:
    record: dict[str, Any] | None  # config.json's "image"
    manifest: dict[str, Any] | None  # manifest.json's "image"; None: the model declares no image preprocessing


def _save(module: torch.nn.Module, path: Path) -> torch.jit.ScriptModule:
    """Scripted, saved and loaded back: what is verified is the file."""
    with torchscript_deprecation_noted():
        torch.jit.save(torch.jit.script(module), str(path))
        return torch.jit.load(str(path), map_location="cpu")


def _artifact(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}


def write(
    directory: Path,
    model: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    labels: Sequence[str] | None,
    preprocessing: Mapping[str, Any] | None,
) -> ImageGraphs:
    """Builds the graphs for a model whose ``preprocessing`` declares an image, verifies them and saves them
    in ``directory`` (the version being staged). Refusals and failed verification leave nothing behind."""
    if not declares_image(preprocessing or {}):
        return ImageGraphs(None, None)
    started = time.perf_counter()
    try:
        steps = ImageSteps.parse(preprocessing or {})
    except (ValueError, KeyError, TypeError) as e:
        return _without(model, f"its preprocessing cannot be read: {e}")
    why_not = _refusal(steps, model, inputs, outputs)
    if why_not:
        return _without(model, why_not)

    pre_path = directory / PREPROCESS_FILE
    graph = _save(Preprocess(steps, model, inputs[0]), pre_path)
    try:
        rows = _checked(graph, steps, inputs[0])
    except Exception as e:  # a shape the model cannot take, a graph error: no graph, the reason recorded
        pre_path.unlink()
        return _without(model, f"verification failed: {type(e).__name__}: {e}")
    worst_tv = max(r.torchvision_max_abs for r in rows)
    worst_levels = max(r.pil_max_levels for r in rows)
    verification: dict[str, Any] = {
        "torchvision_v2": {"max_abs": worst_tv, "bound": tolerance.PREPROCESS_TOL},
        "pil": {
            "max_levels": worst_levels,
            "bound_levels": tolerance.PREPROCESS_PIL_LEVELS,
            "max_abs_on_input": max(r.pil_max_abs for r in rows),
        },
        "images": [r.__dict__ for r in rows],
    }
    ok = worst_tv <= tolerance.PREPROCESS_TOL and worst_levels <= tolerance.PREPROCESS_PIL_LEVELS
    files = {"preprocess": _artifact(pre_path)}
    post_path = directory / POSTPROCESS_FILE
    if ok and steps.postprocess is not None:
        p = steps.postprocess
        post = _save(Postprocess(p.scale, p.shift, *p.output_range), post_path)
        verification["postprocess"] = check_postprocess(post, p, outputs[0].shape[1])
        ok = (
            verification["postprocess"]["formula_max_levels"] == 0
            and verification["postprocess"]["book_to_pil_image_max_levels"] <= tolerance.PREPROCESS_PIL_LEVELS
        )
        files["postprocess"] = _artifact(post_path)
    if not ok:
        for path in (pre_path, post_path):
            path.unlink(missing_ok=True)
        log.warning(
            "%s: image graphs outside their bounds, not written: v2 max abs %.2g (bound %g), PIL max %d level(s)%s",
            model,
            worst_tv,
            tolerance.PREPROCESS_TOL,
            worst_levels,
            f", postprocess {verification['postprocess']}" if "postprocess" in verification else "",
        )
        return ImageGraphs(None, {"files": None, "why_not": "verification failed", "verification": verification})
    record = {
        "preprocess": PREPROCESS_FILE,
        "postprocess": POSTPROCESS_FILE if "postprocess" in files else None,
        "input": inputs[0].name,
        **_answer(outputs, labels, steps),
    }
    seconds = round(time.perf_counter() - started, 3)
    log.info(
        "%s: image graphs in %.1f s (%d images; v2 max abs %.2g, PIL max %d level(s))",
        model,
        seconds,
        len(rows),
        worst_tv,
        worst_levels,
    )
    return ImageGraphs(record, {"files": files, "verification": verification, "seconds": seconds})


def _without(model: str, why_not: str) -> ImageGraphs:
    log.warning("%s: no image graph: %s", model, why_not)
    return ImageGraphs(None, {"files": None, "why_not": why_not})
