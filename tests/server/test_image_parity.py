"""Run: .venv/bin/python -m pytest tests/server/test_image_parity.py -q

Preprocessing parity through the C++ runtime and the server, for one model of every zoo family that declares
image preprocessing (issue 15's Done-when; docs/images.md): ImageNet (resnet18), CIFAR-2 (net), digits
(digits_net) and CycleGAN (shrunk: the full model's preprocessing). On odd-sized images,

- ``Runtime.model(m)._native.preprocess_pixels`` (the core's ImagePipeline running the exported
  preprocess.pt) equals torchvision's v2 tensor transforms on the uint8 tensor (antialias on) within 1e-5;
  the references are the book's steps written out here as v2 Compose, not read from the declared dict;
- the server's image route answers what eager PyTorch answers on those pixels: a classifier's top-k
  (softmax of the logits, within 1e-5), CycleGAN's picture (within one level: float differences between
  runtimes may flip a rounding).

tests/unit/test_image_graphs.py checks every zoo model's graph in Python's TorchScript and the PIL bound.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as v2f

from torchship import models
from torchship.models.cifar import CIFAR10_MEAN, CIFAR10_STD, DIGITS_MEAN, DIGITS_PIXEL_MAX, DIGITS_STD
from torchship.models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from torchship.server_process import ServerProcess
from torchship.training.checkpoint import build_model

TOL = 1e-5  # preprocessed inputs vs torchvision, and probabilities vs eager (tolerance.PREPROCESS_TOL)


def _digits(image: Image.Image) -> torch.Tensor:
    """The digits variant as its training data reads: PIL's grey, nearest 32x32, pixel / 16, three channels."""
    grey = v2f.pil_to_tensor(image.convert("L"))  # v2's own grey rounds other weights than PIL's
    x = v2f.resize(grey, [32, 32], interpolation=v2.InterpolationMode.NEAREST_EXACT)  # PIL's NEAREST
    x = x.to(torch.float32) / DIGITS_PIXEL_MAX
    return v2f.normalize(x.repeat(3, 1, 1), [DIGITS_MEAN] * 3, [DIGITS_STD] * 3)


def _v2(*steps: v2.Transform) -> Callable[[Image.Image], torch.Tensor]:
    compose = v2.Compose(list(steps))
    return lambda image: compose(v2f.pil_to_tensor(image))


# The book's steps per family, on the uint8 [3, H, W] tensor: chapter 2 (ImageNet, CycleGAN), chapter 7 (CIFAR-2).
REFERENCES: dict[str, Callable[[Image.Image], torch.Tensor]] = {
    "resnet18": _v2(
        v2.Resize(256, antialias=True),
        v2.CenterCrop(224),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ),
    "net": _v2(
        v2.Resize(32, antialias=True),
        v2.CenterCrop(32),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ),
    "digits_net": _digits,
    "cyclegan": _v2(v2.Resize(256, antialias=True), v2.ToDtype(torch.float32, scale=True)),
}
TOP_K = {"resnet18": 5, "net": 2, "digits_net": 5}


def _noise(height: int, width: int, seed: int) -> Image.Image:
    """Ramps and noise: resampling has edges to work on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x * y) % 256], -1)
    return Image.fromarray(np.clip(ramps + rng.integers(-30, 30, ramps.shape), 0, 255).astype(np.uint8), "RGB")


def _images() -> dict[str, Image.Image]:
    """Odd sizes, up- and downscaled by every family; one is a real photo (scikit-learn's china.jpg, cropped)."""
    from sklearn.datasets import load_sample_image

    china = load_sample_image("china.jpg")[13:414, 21:554]  # 401x533
    return {
        "47x61": _noise(47, 61, seed=1),
        "257x300": _noise(257, 300, seed=2),
        "131x97": _noise(131, 97, seed=3),
        "china 401x533": Image.fromarray(np.ascontiguousarray(china), "RGB"),
    }


IMAGES = _images()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")  # lossless: the server decodes exactly these pixels
    return out.getvalue()


@pytest.fixture(scope="module")
def eager(image_checkpoints: dict[str, dict[str, Any]]) -> dict[str, torch.nn.Module]:
    return {name: build_model(checkpoint) for name, checkpoint in image_checkpoints.items()}


@pytest.fixture(scope="module")
def server(image_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    s = ServerProcess(image_repository, "--device", "cpu", log_path=log).start()
    yield s
    assert s.stop() == 0, s.log()


def test_the_c_plus_plus_runtime_preprocesses_as_torchvision_v2(image_repository: Path) -> None:
    from torchship.runtime import Runtime

    with Runtime(image_repository, device="cpu", warmup=False) as rt:
        for name, reference in REFERENCES.items():
            native = rt.model(name)._native
            for label, image in IMAGES.items():
                pixels = torch.from_numpy(np.asarray(image).copy())  # uint8 [H, W, 3]
                got = native.preprocess_pixels(pixels)
                want = reference(image).unsqueeze(0)
                assert got.shape == want.shape, (name, label, list(got.shape), list(want.shape))
                worst = float((got - want).abs().max())
                assert worst <= TOL, f"{name} on {label}: max abs {worst:.2e} from torchvision v2"
                # The native decoder hands the same pixels to the same graph: bit for bit.
                assert torch.equal(native.preprocess_image(_png(image)), got), (name, label)


@pytest.mark.parametrize("name", list(TOP_K))
def test_served_top_k_is_eagers_on_the_same_pixels(
    server: ServerProcess, eager: dict[str, torch.nn.Module], name: str
) -> None:
    k = TOP_K[name]
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        for label, image in IMAGES.items():
            r = client.post(f"/v2/models/{name}/image?top_k={k}", content=_png(image))
            assert r.status_code == 200, r.text
            served = r.json()["top_k"]
            with torch.no_grad():
                logits = eager[name](REFERENCES[name](image).unsqueeze(0))
            probabilities = torch.softmax(logits.double(), dim=1)[0]
            labels = models.get(name).labels or ()
            assert len(served) == k
            for c in served:
                p = float(probabilities[c["index"]])
                assert abs(c["probability"] - p) < TOL, (name, label, c, p)
                assert c["label"] == labels[c["index"]]
            # The served classes are a top-k of eager's: near-ties (within TOL) may come in either order.
            want = probabilities.sort(descending=True).values[:k]
            got = torch.tensor([c["probability"] for c in served], dtype=torch.float64)
            assert (got - want).abs().max() < TOL, (name, label, got, want)


def test_served_cyclegan_picture_is_eagers_on_the_same_pixels(
    server: ServerProcess, eager: dict[str, torch.nn.Module]
) -> None:
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        for label, image in IMAGES.items():
            r = client.put("/v2/models/cyclegan/image", content=_png(image), headers={"Accept": "image/png"})
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
            got = torch.from_numpy(np.array(Image.open(io.BytesIO(r.content)).convert("RGB"))).int()
            with torch.no_grad():
                out = eager["cyclegan"](REFERENCES["cyclegan"](image).unsqueeze(0))[0]
            # The book's (out + 1) / 2 in [0, 1] as uint8, rounded to nearest (docs/images.md, postprocess.pt).
            want = torch.round((out * 0.5 + 0.5).clamp(0, 1) * 255).permute(1, 2, 0).int()
            assert got.shape == want.shape, (label, list(got.shape), list(want.shape))
            assert (got - want).abs().max() <= 1, label
            assert (got != want).float().mean() < 0.01, label  # a flipped rounding is rare
