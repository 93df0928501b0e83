"""Run: .venv/bin/python -m pytest tests/unit/test_image_graphs.py -q

Preprocessing inside the artifact (docs/images.md): every zoo model that declares image preprocessing gets a
``preprocess.pt`` equal to torchvision's v2 tensor transforms (uint8, antialias on) within 1e-5 and within
one uint8 level of the PIL training path; CycleGAN's ``postprocess.pt`` against the book's ToPILImage.
No torchship._C: these run the saved graphs in Python's TorchScript, as the C++ runtime loads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as v2f

from torchship import models, tolerance
from torchship.export import image_graphs
from torchship.export.importer import _read_preprocessing, import_artifact
from torchship.export.pipeline import export
from torchship.models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from torchship.models.registry import TensorSpec
from torchship.preprocess import ImageSteps, declares_image, image_transform

IMAGE_MODELS = [n for n in models.list_models() if declares_image(models.get(n).preprocessing)]


def _graph(tmp_path: Path, preprocessing: dict, spec: TensorSpec, name: str = "m") -> torch.jit.ScriptModule:
    path = tmp_path / f"{name}.pt"
    return image_graphs._save(image_graphs.Preprocess(ImageSteps.parse(preprocessing), name, spec), path)


def _rgb(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy())


def _china() -> Image.Image:
    return dict(image_graphs.verification_images())["china.jpg"]


def test_the_zoos_image_models_are_the_ones_expected() -> None:
    """A model that stops declaring an image (or a new one) shows here, not as a silently missing graph."""
    families = {n.split("_")[0] for n in IMAGE_MODELS}
    assert families == {"alexnet", "cifar2", "cyclegan", "digits", "net", "resnet101", "resnet18", "resnet50"}
    assert len(IMAGE_MODELS) == 21
    assert not any(declares_image(models.get(n).preprocessing) for n in ("luna_classifier", "thermometer_mlp"))


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_zoo_image_model_gets_a_verified_graph(name: str, tmp_path: Path) -> None:
    entry = models.get(name)
    graphs = image_graphs.write(tmp_path, name, entry.inputs, entry.outputs, entry.labels, entry.preprocessing)
    assert graphs.record is not None, graphs.manifest
    verification = graphs.manifest["verification"]
    assert verification["torchvision_v2"]["max_abs"] <= tolerance.PREPROCESS_TOL
    assert verification["pil"]["max_levels"] <= tolerance.PREPROCESS_PIL_LEVELS
    assert len(verification["images"]) >= 7  # two photos, three odd sizes, grey, RGBA
    classifier = entry.labels is not None
    assert graphs.record == {
        "preprocess": "preprocess.pt",
        "postprocess": "postprocess.pt" if name == "cyclegan" else None,
        "input": "image",
        "output": entry.outputs[0].name,
        "scores": "logits" if classifier else None,
    }
    graph = torch.jit.load(str(tmp_path / "preprocess.pt"))
    item = graph(_rgb(_china()))
    shape = list(entry.inputs[0].shape[1:])
    assert item.dtype == torch.float32 and item.is_contiguous()
    assert [d if s == -1 else s for s, d in zip(shape, item.shape, strict=True)] == list(item.shape)


def test_imagenet_graph_equals_a_torchvision_v2_compose_and_pil_within_one_level(tmp_path: Path) -> None:
    """An independent reference: the book's chapter 2 steps written as v2 transforms, not from the dict."""
    graph = _graph(tmp_path, models.get("resnet18").preprocessing, models.get("resnet18").inputs[0])
    book = v2.Compose(
        [
            v2.Resize(256, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    pil = image_transform(models.get("resnet18").preprocessing)
    worst_levels = 0.0
    for label, image in image_graphs.verification_images():
        got = graph(_rgb(image))
        want = book(v2f.pil_to_tensor(image))
        assert (got - want).abs().max() <= 1e-5, label
        # One uint8 level after Normalize is 1/255/std.
        levels = ((got - pil(image)) * torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255).abs().max().item()
        worst_levels = max(worst_levels, levels)
    assert 0.5 < worst_levels <= 1.0 + 1e-3  # PIL and torch resample in different fixed point: one level


def test_a_fixed_size_model_without_a_resize_gets_no_graph_and_is_told_what_to_declare(tmp_path: Path) -> None:
    spec = (TensorSpec("image", (-1, 3, 32, 32)),)
    old_cifar = {"to_tensor": True, "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    graphs = image_graphs.write(tmp_path, "old_net", spec, (TensorSpec("logits", (-1, 2)),), ("a", "b"), old_cifar)
    assert graphs.record is None and not (tmp_path / "preprocess.pt").exists()
    assert "declares no resize or center_crop to that size" in graphs.manifest["why_not"]
    assert '"resize": 32, "center_crop": [32, 32]' in graphs.manifest["why_not"]


def test_cifar_declares_a_resize_that_is_a_no_op_on_its_training_data() -> None:
    """CIFAR's 32x32 images come out of the PIL path unchanged by the resize and crop added for photos."""
    preprocessing = models.get("net").preprocessing
    assert (preprocessing["resize"], preprocessing["center_crop"]) == (32, 32)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    without = {k: v for k, v in preprocessing.items() if k not in ("resize", "center_crop")}
    assert torch.equal(image_transform(preprocessing)(image), image_transform(without)(image))


def test_ct_and_tensor_models_get_no_image_record(tmp_path: Path) -> None:
    for name in ("luna_classifier", "luna_segmentation", "thermometer_linear", "row_sum"):
        entry = models.get(name)
        graphs = image_graphs.write(tmp_path, name, entry.inputs, entry.outputs, entry.labels, entry.preprocessing)
        assert graphs == image_graphs.ImageGraphs(None, None)
    assert list(tmp_path.iterdir()) == []


def test_a_graph_outside_its_bound_is_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification can fail: a bound of zero refuses ImageNet's 7e-7 float rounding."""
    monkeypatch.setattr(tolerance, "PREPROCESS_TOL", 0.0)
    entry = models.get("resnet18")
    graphs = image_graphs.write(tmp_path, "resnet18", entry.inputs, entry.outputs, entry.labels, entry.preprocessing)
    assert graphs.record is None and graphs.manifest["why_not"] == "verification failed"
    assert graphs.manifest["verification"]["torchvision_v2"]["max_abs"] > 0
    assert list(tmp_path.iterdir()) == []


def test_grey_models_convert_exactly_as_pil_does_on_every_colour() -> None:
    r, g = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    colours = np.stack([np.repeat(r[None], 256, 0), np.repeat(g[None], 256, 0), np.broadcast_to(
        np.arange(256, dtype=np.uint8)[:, None, None], (256, 256, 256))], -1).reshape(4096, 4096, 3)  # fmt: skip
    want = torch.from_numpy(np.asarray(Image.fromarray(colours, "RGB").convert("L")).copy())
    got = torch.jit.script(image_graphs.pil_grey)(torch.from_numpy(colours).permute(2, 0, 1))
    assert torch.equal(got[0], want)


@pytest.mark.parametrize("size", [(1, 1), (2, 9), (41, 31), (42, 33), (45, 35), (224, 224), (300, 257), (7, 400)])
def test_center_crop_and_resize_match_torchvision_at_odd_sizes(size: tuple[int, int], tmp_path: Path) -> None:
    """Padding where the image is smaller, and round-half-to-even anchors (Python's round) in integers."""
    x = torch.from_numpy(np.random.default_rng(size[0] * size[1]).integers(0, 256, (3, *size), dtype=np.uint8))
    crop = torch.jit.script(image_graphs.center_crop)
    resize = torch.jit.script(image_graphs.resize_uint8)
    for target in ([40, 30], [3, 3], [224, 224]):
        assert torch.equal(crop(x, target), v2f.center_crop(x, target)), target
    for target in ([256], [37], [64, 48]):
        assert torch.equal(resize(x, target, "bilinear"), v2f.resize(x, target, antialias=True)), target
        want = v2f.resize(x, target, interpolation=v2.InterpolationMode.NEAREST_EXACT)
        assert torch.equal(resize(x, target, "nearest-exact"), want), target


def test_digits_graph_reads_a_digit_as_training_did(tmp_path: Path) -> None:
    """An 8x8 grey image of raw 0..16 values, sent as RGB (the decoder's form), becomes training's tensor."""
    from sklearn.datasets import load_digits

    from torchship.models.cifar import digits_to_images

    entry = models.get("digits_net")
    graph = _graph(tmp_path, entry.preprocessing, entry.inputs[0])
    pixels = torch.from_numpy(load_digits().images[:4]).to(torch.float32)
    for i, want in enumerate(digits_to_images(pixels)):
        grey = Image.fromarray(pixels[i].numpy().astype(np.uint8), "L")
        assert torch.equal(graph(_rgb(grey)), want)


def test_the_graph_refuses_what_is_not_an_image_with_a_message(tmp_path: Path) -> None:
    spec = TensorSpec("x", (-1, 3, -1, -1), min_shape=(1, 3, 8, 8), multiple_of=(1, 1, 4, 4))
    graph = _graph(tmp_path, {"to_tensor": True}, spec, name="multiples")
    with pytest.raises(torch.jit.Error, match=r"preprocess: expected one decoded image, uint8 \[H, W, 3\] RGB"):
        graph(torch.zeros(8, 8, 3))
    with pytest.raises(torch.jit.Error, match=r"preprocess: expected one decoded image"):
        graph(torch.zeros(8, 8, 4, dtype=torch.uint8))
    with pytest.raises(torch.jit.Error, match=r"preprocess: an empty image \(\[0, 5, 3\]\)"):
        graph(torch.zeros(0, 5, 3, dtype=torch.uint8))
    with pytest.raises(torch.jit.Error, match=r"a 5x9 image became \[3, 5, 9\] but model 'multiples' takes"):
        graph(torch.zeros(5, 9, 3, dtype=torch.uint8))
    assert graph(torch.zeros(8, 12, 3, dtype=torch.uint8)).shape == (3, 8, 12)


def test_cyclegan_postprocess_is_the_books_image_within_one_level(tmp_path: Path) -> None:
    """(out + 1) / 2 then ToPILImage, as chapter 2 does; the graph rounds where ToPILImage truncates."""
    from torchvision.transforms import functional as v1

    steps = ImageSteps.parse(models.get("cyclegan").preprocessing)
    post = image_graphs._save(image_graphs.Postprocess(0.5, 0.5, 0.0, 1.0), tmp_path / "post.pt")
    out = torch.tanh(torch.randn(3, 61, 83, generator=torch.Generator().manual_seed(1)) * 2)
    out[0, 0, :3] = torch.tensor([-5.0, 5.0, float("nan")])  # clamped, and NaN made the range's low end
    image = post(out)
    assert image.dtype == torch.uint8 and image.shape == (61, 83, 3) and image.is_contiguous()
    assert image[0, 0, 0].item() == 0 and image[0, 1, 0].item() == 255 and image[0, 2, 0].item() == 0
    book = torch.from_numpy(np.asarray(v1.to_pil_image(((out + 1) / 2).nan_to_num(0.0).clamp(0, 1))).copy())
    diff = image.int() - book.int()
    assert diff.min() >= 0 and diff.max() <= 1  # rounding is at most one level above truncation
    assert image_graphs.check_postprocess(post, steps.postprocess, 3)["formula_max_levels"] == 0
    with pytest.raises(torch.jit.Error, match=r"postprocess: expected one float output item"):
        post(torch.zeros(2, 4, 4))


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(image).mean((2, 3)))


_OWN = {"resize": 20, "center_crop": 16, "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}


def test_a_users_own_model_gets_its_graph_from_exports_preprocessing(tmp_path: Path) -> None:
    result = export(
        _Tiny(),
        torch.rand(1, 3, 16, 16),
        name="own",
        repository=tmp_path,
        max_batch_size=4,
        formats=["torchscript"],
        labels=["cat", "dog", "eel"],
        preprocessing={**_OWN, "scores": "probabilities"},
    )
    config = json.loads((tmp_path / "own" / "config.json").read_text())
    assert config["image"] == {
        "preprocess": "preprocess.pt",
        "postprocess": None,
        "input": "image",
        "output": "output",
        "scores": "probabilities",
    }
    assert (result.directory / config["image"]["preprocess"]).is_file()
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["image"]["files"]["preprocess"]["sha256"]
    model = torch.jit.load(str(result.directory / "model.pt"))
    graph = torch.jit.load(str(result.directory / "preprocess.pt"))
    batch = torch.stack([graph(_rgb(image)) for _, image in image_graphs.verification_images()])
    assert model(batch).shape == (len(batch), 3)


def test_an_imported_file_gets_its_graph_from_preprocessing_and_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchship.export import importer

    monkeypatch.setattr(importer, "_native", lambda *a, **k: [])  # Runtime-free: the graph is what is tested
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.trace(_Tiny().eval(), torch.rand(2, 3, 16, 16)), str(path))
    (tmp_path / "pre.json").write_text(json.dumps(_OWN))
    directory, _, _ = import_artifact(
        path,
        tmp_path / "repo",
        name="tiny",
        inputs={"image": ((1, 3, 16, 16), "")},
        labels=["cat", "dog", "eel"],
        preprocessing=_read_preprocessing(str(tmp_path / "pre.json")),
    )
    config = json.loads((directory.parent / "config.json").read_text())
    assert config["preprocessing"] == _OWN
    assert config["image"]["preprocess"] == "preprocess.pt" and config["image"]["scores"] == "logits"
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "model.pt", "preprocess.pt"]
    assert _read_preprocessing('{"resize": 8}') == {"resize": 8}
    with pytest.raises(ValueError, match="expected a JSON object"):
        _read_preprocessing("[1, 2]")
    with pytest.raises(ValueError, match="neither a JSON object nor a file"):
        _read_preprocessing(str(tmp_path / "missing.json"))


def test_the_declaration_is_read_strictly() -> None:
    with pytest.raises(ValueError, match=r"not image steps this version knows"):
        ImageSteps.parse({"resize": 32, "colour_jitter": 0.1})
    with pytest.raises(ValueError, match=r"interpolation 'bicubic'"):
        ImageSteps.parse({"resize": {"size": 32, "interpolation": "bicubic"}})
    with pytest.raises(ValueError, match=r"Hounsfield units"):
        ImageSteps.parse(models.get("luna_classifier").preprocessing)
    with pytest.raises(ValueError, match=r"'scores' must be one of"):
        ImageSteps.parse({"to_tensor": True, "scores": "logprobs"})
    steps = ImageSteps.parse({"normalize": "in_model", "resize": {"size": [20, 30]}, "center_crop": 8})
    assert (steps.resize, steps.center_crop, steps.mean, steps.fixed_size()) == ((20, 30), (8, 8), (), (8, 8))
