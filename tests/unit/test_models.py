"""Run: .venv/bin/python -m pytest tests/unit/test_models.py

The model zoo: parameter counts as the book prints them (or as the catalog
derives them by arithmetic), output shapes, and what export relies on.
Heavy ImageNet and CycleGAN forwards run on the meta device (shapes only);
ResNet-18 at 224x224 and CycleGAN at 227x227 run for real, once each.
"""

from __future__ import annotations

import json
import warnings
from functools import cache

import pytest
import torch
from torch import nn

from torchship import models
from torchship.models import cifar, imagenet, luna, unet
from torchship.models.cyclegan import ResNetGenerator
from torchship.models.row_sum import RowSum

ZOO = {
    "cifar2_fc",
    "cifar2_fc_deep",
    "net",
    "net_width",
    "net_dropout",
    "net_batchnorm",
    "net_depth",
    "net_res",
    "net_res_deep",
    "digits_net",
    "digits_net_width",
    "digits_net_dropout",
    "digits_net_batchnorm",
    "digits_net_depth",
    "digits_net_res",
    "digits_net_res_deep",
    "resnet101",
    "resnet50",
    "resnet18",
    "alexnet",
    "cyclegan",
    "luna_classifier",
    "luna_segmentation",
    "row_sum",
}
# Too slow for a real CPU forward in a unit test; their example runs on the meta device.
META_ONLY = {"resnet101", "resnet50", "alexnet", "cyclegan"}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@cache
def built(name: str) -> nn.Module:
    """Each entry built once per session, real weights, in eval mode."""
    torch.manual_seed(0)
    return models.get(name).build().eval()


def meta_built(name: str) -> nn.Module:
    with torch.device("meta"):
        return models.get(name).build().eval()


def outputs_of(out: object) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)  # type: ignore[return-value]


def matches(spec_shape: tuple[int, ...], shape: torch.Size, batch: int) -> bool:
    return (
        len(spec_shape) == len(shape)
        and shape[0] == batch
        and all(s in (-1, d) for s, d in zip(spec_shape, shape, strict=True))
    )


# --- registry -------------------------------------------------------------------


def test_importing_the_package_registers_the_whole_zoo() -> None:
    missing = ZOO - set(models.names())
    assert not missing, missing


def test_unknown_model_error_lists_the_registered_names() -> None:
    with pytest.raises(KeyError) as e:
        models.get("resnet102")
    assert "resnet102" in str(e.value)
    for name in ("net_res_deep", "resnet101", "luna_segmentation"):
        assert name in str(e.value)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_entry_interface_is_complete_and_serialisable(name: str) -> None:
    entry = models.get(name)
    for spec in (*entry.inputs, *entry.outputs):
        assert spec.shape[0] == -1, f"{spec.name}: dim 0 is the batch"
        assert spec.dtype == "FP32"
    for spec in entry.inputs:
        assert all(d > 0 for d in entry.example_shape(spec)), f"{spec.name} needs an example shape"
    assert entry.torchscript in ("trace", "script")
    assert entry.max_batch_size >= 1
    if entry.labels is not None:
        assert len(entry.labels) == entry.outputs[0].shape[-1] == len(set(entry.labels))
    # config.json and the checkpoint carry these as JSON.
    json.dumps({"labels": entry.labels, "preprocessing": entry.preprocessing, "args": entry.default_args})


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_entry_builds_and_runs_its_example_input(name: str) -> None:
    entry = models.get(name)
    batch = 2  # a batch > 1 shows the batch dimension is not baked in
    if name in META_ONLY:
        model, device = meta_built(name), "meta"
    else:
        model, device = built(name), "cpu"
    xs = [torch.randn((batch, *entry.example_shape(s)[1:]), device=device) for s in entry.inputs]
    with torch.no_grad():
        out = outputs_of(model(*xs))
    assert len(out) == len(entry.outputs)
    for spec, y in zip(entry.outputs, out, strict=True):
        assert matches(spec.shape, y.shape, batch), f"{spec.name}: {tuple(y.shape)} vs spec {spec.shape}"
        assert y.dtype == torch.float32
        if device == "cpu":
            assert torch.isfinite(y).all()


# --- chapter 7 and 8: CIFAR-2 -----------------------------------------------------

BOOK_PARAMS = {
    # name: (total, per-parameter list where the book prints one)
    "cifar2_fc": (1574402, [1572864, 512, 1024, 2]),
    "cifar2_fc_deep": (3737474, [3145728, 1024, 524288, 512, 65536, 128, 256, 2]),
    "net": (18090, [432, 16, 1152, 8, 16384, 32, 64, 2]),
    "net_width": (38386, None),
    "net_dropout": (38386, None),
    "net_batchnorm": (38482, None),
    "net_depth": (16130, None),
    "net_res": (16130, None),
    "net_res_deep": (159330, None),
}


@pytest.mark.parametrize("name", sorted(BOOK_PARAMS))
def test_cifar_parameter_counts_are_the_books(name: str) -> None:
    total, per_param = BOOK_PARAMS[name]
    model = built(name)
    assert n_params(model) == total
    if per_param is not None:
        assert [p.numel() for p in model.parameters()] == per_param


@pytest.mark.parametrize("name", [n for n in sorted(BOOK_PARAMS) if not n.startswith("cifar2_fc")])
def test_digits_variant_is_the_same_cnn_with_ten_outputs(name: str) -> None:
    entry = models.get(f"digits_{name}")
    assert entry.constructor is models.get(name).constructor
    assert entry.labels == tuple("0123456789")
    # Only fc2 changes: Linear(32, 2) -> Linear(32, 10) adds 8 * (32 + 1) parameters.
    assert n_params(built(f"digits_{name}")) == BOOK_PARAMS[name][0] + 8 * 33


def test_net_res_deep_shared_blocks_reproduce_the_books_quirk() -> None:
    torch.manual_seed(0)
    shared = cifar.NetResDeep(n_chans1=32, n_blocks=10, share_weights=True).eval()
    distinct = cifar.NetResDeep(n_chans1=32, n_blocks=10).eval()
    # Arithmetic: conv1 896 + fc1 65,568 + fc2 66 = 66,530; one ResBlock = 9,216 conv + 64 BN = 9,280.
    assert n_params(shared) == 66530 + 9280 == 75810
    assert n_params(distinct) == 66530 + 10 * 9280 == 159330
    assert len({id(b) for b in shared.resblocks}) == 1
    assert len({id(b) for b in distinct.resblocks}) == 10
    block = distinct.resblocks[0]
    assert block.conv.bias is None
    assert torch.all(block.batch_norm.weight == 0.5) and torch.all(block.batch_norm.bias == 0)
    # The book's shared checkpoint has every resblocks.i key, so it loads into distinct blocks unchanged.
    assert distinct.load_state_dict(shared.state_dict()) is not None
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(distinct(x), shared(x))


def test_fc_models_flatten_the_image_inside_forward() -> None:
    model = built("cifar2_fc")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), nn.Sequential(*model)(x.view(4, -1)))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # the book's Sequential keys


def test_net_state_dict_keys_are_the_books() -> None:
    assert list(built("net").state_dict()) == [
        f"{m}.{p}" for m in ("conv1", "conv2", "fc1", "fc2") for p in ("weight", "bias")
    ]


def test_dropout_is_active_only_in_train_mode() -> None:
    model = cifar.NetDropout()
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        model.train()
        torch.manual_seed(1)
        a = model(x)
        b = model(x)
    assert not torch.equal(a, b)


def test_digits_to_images_upscales_repeats_and_normalises() -> None:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    pixels = torch.from_numpy(load_digits().data)
    images = cifar.digits_to_images(pixels)
    assert images.shape == (len(pixels), 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal(images[:, 0], images[:, 2])  # grey repeated into RGB
    first = images[7, 0]
    assert torch.equal(first[:4, :4], first[0, 0].expand(4, 4))  # each pixel is a 4x4 block
    assert abs(images.mean().item()) < 1e-3 and abs(images.std().item() - 1) < 1e-3
    entry = models.get("digits_net")
    assert entry.preprocessing["normalize"]["mean"] == [cifar.DIGITS_MEAN] * 3
    with torch.no_grad():
        assert built("digits_net")(images[:5]).shape == (5, 10)


def test_cifar_entries_carry_the_books_normalisation_and_labels() -> None:
    entry = models.get("net")
    assert entry.labels == ("airplane", "bird")
    assert entry.preprocessing["normalize"] == {"mean": [0.4915, 0.4823, 0.4468], "std": [0.2470, 0.2435, 0.2616]}
    assert entry.inputs[0].shape == (-1, 3, 32, 32)


# --- chapter 2: ImageNet and CycleGAN ----------------------------------------------


def test_resnet101_has_the_books_44_5_million_parameters() -> None:
    model = meta_built("resnet101")
    assert n_params(model) == 44549160  # "sports 44.5 million parameters"
    assert isinstance(model.fc, nn.Linear)
    assert (model.fc.in_features, model.fc.out_features) == (2048, 1000)


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("resnet101", "ResNet101_Weights"),
        ("resnet50", "ResNet50_Weights"),
        ("resnet18", "ResNet18_Weights"),
        ("alexnet", "AlexNet_Weights"),
    ],
)
def test_imagenet_models_match_torchvisions_pretrained_architectures(name: str, weights: str) -> None:
    from torchvision import models as tv

    meta = getattr(tv, weights).IMAGENET1K_V1.meta  # offline metadata of the pretrained file
    model = meta_built(name)
    assert n_params(model) == meta["num_params"]
    entry = models.get(name)
    assert entry.labels == tuple(meta["categories"])
    assert entry.inputs[0].shape == (-1, 3, 224, 224)
    assert entry.preprocessing == {
        "resize": 256,
        "center_crop": 224,
        "to_tensor": True,
        "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }


def test_imagenet_labels_ship_in_the_package() -> None:
    labels = imagenet.imagenet_labels()
    assert len(labels) == 1000
    assert labels[207] == "golden retriever"  # the book's top-1 for bobby.jpg
    assert labels[208] == "Labrador retriever"


def test_cyclegan_generator_has_11_378_179_parameters_and_no_norm_affine() -> None:
    model = meta_built("cyclegan")
    assert n_params(model) == 11378179
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3 + 9 * 2 + 2 and not any(m.affine for m in norms)
    assert next(iter(model.state_dict())) == "model.1.weight"  # horse2zebra_0.4.0.pth layout


def test_cyclegan_maps_227_to_228_in_tanh_range() -> None:
    torch.manual_seed(0)
    model = ResNetGenerator().eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 227, 227))
    assert out.shape == (1, 3, 228, 228)
    assert out.min() >= -1 and out.max() <= 1
    post = models.get("cyclegan").preprocessing["postprocess"]
    image = out * post["scale"] + post["shift"]  # the book's (out + 1) / 2
    torch.testing.assert_close(image, (out + 1) / 2)


@pytest.mark.parametrize(("side", "expected"), [(256, 256), (314, 316), (227, 228), (30, 32)])
def test_cyclegan_side_rule(side: int, expected: int) -> None:
    with torch.device("meta"):
        out = ResNetGenerator()(torch.empty(1, 3, side, side + 1))
    assert tuple(out.shape[2:]) == (expected, 4 * -(-(side + 1) // 4))


# --- chapter 11: LUNA classifier ------------------------------------------------------


def test_luna_model_has_222_220_parameters() -> None:
    model = built("luna_classifier")
    assert n_params(model) == 222220
    assert model.head_linear.in_features == 1152


def test_luna_model_returns_logits_and_probabilities_that_sum_to_one() -> None:
    model = built("luna_classifier")
    with torch.no_grad():
        logits, probabilities = model(torch.randn(3, 1, 32, 48, 48) * 500)
    assert logits.shape == probabilities.shape == (3, 2)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(probabilities, torch.softmax(logits, dim=1))
    entry = models.get("luna_classifier")
    assert [s.name for s in entry.outputs] == ["logits", "probabilities"]
    assert entry.labels == ("non_nodule", "nodule")  # the published edition's reading of candidates.csv
    assert models.get("luna_malignancy").labels == ("benign", "malignant")


def test_luna_init_is_the_books() -> None:
    torch.manual_seed(0)
    model = luna.LunaModel(conv_channels=16)
    w = model.block4.conv2.weight  # 128 channels: enough samples for the statistics
    fan_out = w.shape[0] * w[0, 0].numel()
    assert abs(w.std().item() - (2 / fan_out) ** 0.5) < 0.05 * (2 / fan_out) ** 0.5  # kaiming, fan_out, relu
    b = model.block4.conv2.bias
    assert b.mean().item() < 0  # normal_(bias, -bound, bound): mean -1/sqrt(fan_out), as printed


# --- chapters 13 and 15: UNet segmentation ------------------------------------------------


def test_unet_wrapper_meap_config_has_121_905_parameters() -> None:
    assert n_params(built("luna_segmentation")) == 121905
    assert models.get("luna_segmentation").default_args == unet.MEAP_SEGMENTATION_ARGS


def test_unet_output_is_a_probability_map_of_the_input_size() -> None:
    with torch.no_grad():
        out = built("luna_segmentation")(torch.randn(2, 8, 64, 64) * 3)
    assert out.shape == (2, 1, 64, 64)
    assert out.min() >= 0 and out.max() <= 1


def test_unet_upsample_mode_and_unpadded_shapes() -> None:
    model = unet.UNetWrapper(in_channels=8, n_classes=1, depth=3, wf=2, padding=False, up_mode="upsample").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 8, 44, 44))
    # Unpadded 3x3 convs trim 2 each: 44 -> 40, pool 20 -> 16, pool 8 -> 4; up 8 -> 4; up 8 -> 4 (skips cropped).
    assert out.shape == (1, 1, 4, 4)
    with pytest.raises(ValueError, match="up_mode"):
        unet.UNet(up_mode="nearest")


def test_tracing_the_unet_emits_no_tracer_warning_and_stays_size_generic() -> None:
    model = unet.UNetWrapper(**unet.MEAP_SEGMENTATION_ARGS).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, torch.randn(1, 8, 64, 64))
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert tracer == [], [str(w.message) for w in tracer]
    assert "prim::CallFunction" in str(getattr(traced.unet.up_path, "0").graph)  # the scripted crop, kept as code
    # 60 is not a multiple of 8, so the skips really get cropped, at offsets the trace must compute.
    x = torch.randn(2, 8, 60, 60)
    with torch.no_grad():
        expected = model(x)
        got = traced(x)
    assert expected.shape == (2, 1, 56, 56)
    torch.testing.assert_close(got, expected)


def test_center_crop_is_a_script_function() -> None:
    assert isinstance(unet.center_crop, torch.jit.ScriptFunction)
    layer = torch.arange(2 * 6 * 7, dtype=torch.float32).reshape(1, 2, 6, 7)
    out = unet.center_crop(layer, torch.empty(1, 5, 2, 3))
    torch.testing.assert_close(out, layer[:, :, 2:4, 2:5])


# --- chapter 15: myfn --------------------------------------------------------------------


def test_row_sum_script_keeps_the_loop_that_trace_unrolls() -> None:
    scripted = torch.jit.script(RowSum())
    traced = torch.jit.trace(RowSum(), torch.randn(1, 5, 5))
    assert "prim::Loop" in str(scripted.graph)
    assert "prim::Loop" not in str(traced.graph)
    x = torch.randn(2, 7, 5)
    torch.testing.assert_close(scripted(x), x.sum(dim=1))
    assert not torch.allclose(traced(x), x.sum(dim=1))  # the trace baked in 5 rows
    assert models.get("row_sum").torchscript == "script"
