"""Run: .venv/bin/pytest tests/unit/test_export.py

Exports a representative set of the zoo once per module (the thermometer models,
the chapter 8 CNN ``net``, ResNet-18, a small CycleGAN generator, LunaModel, the
UNet and chapter 15's ``myfn``) and checks what landed in the repository:
manifests, config.json, and the artifacts' parity with eager PyTorch through
``torchship.tolerance``. AOTInductor compiles are slow, so .pt2 is built for the
two small models only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from torchship import models, tolerance
from torchship.export import (
    RANDOM_INIT,
    ExportError,
    ExportResult,
    export_checkpoint,
    export_registry_model,
    formats,
)
from torchship.export.source import weights_digest
from torchship.training.checkpoint import build_model, load_checkpoint, sha256

# name -> how the module's repository exports it
PLAN: dict[str, dict[str, Any]] = {
    "thermometer_mlp": {"formats_": ["torchscript", "onnx"]},
    "net": {"formats_": ["torchscript", "onnx", "pt2"]},
    "resnet18": {"formats_": ["torchscript", "onnx"], "max_batch_size": 4},
    "cyclegan": {
        "formats_": ["torchscript", "onnx"],
        "model_args": {"ngf": 8, "n_blocks": 2},
        "max_batch_size": 4,
        "example_shapes": {"image": (1, 3, 64, 64)},
        "verify_shapes": {"image": [(1, 3, 227, 227)]},
    },
    "luna_classifier": {"formats_": ["torchscript", "onnx"], "max_batch_size": 8},
    "luna_segmentation": {"formats_": ["torchscript", "onnx"], "max_batch_size": 4},
    "row_sum": {"formats_": ["torchscript", "onnx"], "max_batch_size": 16},
}
ALL = ["thermometer_linear", *PLAN]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export_repo") / "model_repository"  # created by the first export


@pytest.fixture(scope="module")
def exports(repo: Path, thermometer_checkpoint: Path) -> dict[str, ExportResult]:
    """Every model of the plan, exported once (the trained thermometer from its checkpoint, the rest random-init)."""
    out = {"thermometer_linear": export_checkpoint(thermometer_checkpoint, repo)}
    for name, kwargs in PLAN.items():
        out[name] = export_registry_model(name, repo, **kwargs)
    return out


def _manifest(result: ExportResult) -> dict[str, Any]:
    return json.loads((result.directory / "manifest.json").read_text())


def _config(repo: Path, name: str) -> dict[str, Any]:
    return json.loads((repo / name / "config.json").read_text())


def _eager(result: ExportResult) -> torch.nn.Module:
    """The reference rebuilt from the registry, with the weights the manifest names."""
    m = _manifest(result)
    from torchship.export.source import random_init_checkpoint

    if m["source_checkpoint"]["path"]:
        ckpt = load_checkpoint(m["source_checkpoint"]["path"])
    else:
        ckpt = random_init_checkpoint(m["registry_model"], m["model_args"], m["source_checkpoint"]["init_seed"])
    assert weights_digest(ckpt["state_dict"]) == m["weights_sha256"]
    return build_model(ckpt)


def _load(result: ExportResult, fmt: str) -> formats.Runner:
    return formats.LOADERS[fmt](result.directory / formats.artifact_name(fmt), "cpu")


def _check(result: ExportResult, fmt: str, x: list[torch.Tensor]) -> None:
    with torch.no_grad():
        expected = formats.as_tuple(_eager(result)(*x))
    got = _load(result, fmt)(*x)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        tolerance.assert_close(g, e, tolerance.tolerance(fmt), f"{result.model} {fmt} batch {x[0].shape[0]}")


@pytest.mark.parametrize("name", ALL)
def test_manifest_records_source_versions_settings_and_verification(
    name: str, exports: dict[str, ExportResult], repo: Path, thermometer_checkpoint: Path
) -> None:
    result = exports[name]
    m = _manifest(result)
    plan = PLAN.get(name, {"formats_": ["torchscript", "onnx", "pt2"]})
    assert (m["model"], m["version"], m["registry_model"]) == (name, 1, name)
    assert result.directory == repo / name / "1"
    if name == "thermometer_linear":
        assert m["source_checkpoint"] == {"path": str(thermometer_checkpoint), "sha256": sha256(thermometer_checkpoint)}
        assert m["weights"].startswith(f"checkpoint {thermometer_checkpoint.name} (sha256 ")
        assert m["metrics"], "the trained checkpoint's metrics travel into the manifest"
    else:
        assert m["source_checkpoint"] == {"path": None, "sha256": "random-init", "init_seed": 0}
        assert m["weights"] == RANDOM_INIT
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])
    assert m["versions"]["torch"] == str(torch.__version__)

    export = m["export"]
    assert export["formats"] == plan["formats_"] and export["devices"] == ["cpu"]
    max_batch = plan.get("max_batch_size", models.get(name).max_batch_size)
    assert export["max_batch_size"] == max_batch
    first_input = models.get(name).inputs[0].name
    assert export["dynamic_shapes"][first_input]["0"] == f"batch [1, {max_batch}]"
    assert export["torchscript"]["method"] == models.get(name).torchscript
    if "onnx" in plan["formats_"]:
        assert export["onnx"]["dynamo"] is True and export["onnx"]["opset"] == formats.ONNX_OPSET
    if "pt2" in plan["formats_"]:
        assert export["pt2"]["dynamic_ranges"][first_input]["0"] == [1, max_batch]

    files = {a["file"] for a in m["artifacts"]}
    assert files == {formats.artifact_name(f) for f in plan["formats_"]}
    for a in m["artifacts"]:
        assert a["sha256"] == sha256(result.directory / a["file"])
    rows = m["verification"]
    assert rows and all(r["ok"] for r in rows)
    assert {r["format"] for r in rows} == set(plan["formats_"])
    assert {1, 3, max_batch} <= {r["batch_size"] for r in rows}
    assert all(r["max_abs"] <= r["bound"] for r in rows)
    assert not list(repo.glob(".*")), "no staging directory is left behind"


@pytest.mark.parametrize("name", ALL)
def test_config_is_what_the_cpp_runtime_parses(name: str, exports: dict[str, ExportResult], repo: Path) -> None:
    entry, config = models.get(name), _config(repo, name)
    max_batch = PLAN.get(name, {}).get("max_batch_size", entry.max_batch_size)
    assert config["name"] == name and config["platform"] == "torchship" and config["max_batch_size"] == max_batch
    assert [i["name"] for i in config["inputs"]] == [s.name for s in entry.inputs]
    assert [o["name"] for o in config["outputs"]] == [s.name for s in entry.outputs]
    for spec in config["inputs"] + config["outputs"]:
        assert spec["shape"][0] == -1 and all(d == -1 or d > 0 for d in spec["shape"])
    for spec in config["inputs"]:
        assert len(spec["example_shape"]) == len(spec["shape"]) and spec["example_shape"][0] == 1
    assert config["dynamic_batching"]["max_queue_size"] >= 1 and config["instance_group"]["count"] == 1
    assert config["warmup"]["batch_sizes"] == sorted({1, max_batch})
    assert config["weights"] == exports[name].weights
    assert config["labels"] == (list(entry.labels) if entry.labels else None)


def test_the_native_runtime_loads_every_exported_model(exports: dict[str, ExportResult], repo: Path) -> None:
    """config.json is a contract with cpp/src/model_config.cpp: the C++ runtime must accept all of them."""
    pytest.importorskip("torchship._C")
    from torchship import runtime

    with runtime.Runtime(repo, device="cpu", format="torchscript") as rt:
        loaded = {m.name for m in rt.models()}
        assert loaded == set(ALL)
        x = torch.randn(2, 1, 32, 48, 48)
        logits, probs = rt.model("luna_classifier").infer(x)
        with torch.no_grad():
            eager_logits, eager_probs = _eager(exports["luna_classifier"])(x)
        tolerance.assert_close(logits, eager_logits, tolerance.tolerance("native-torchscript"), "luna logits")
        tolerance.assert_close(probs, eager_probs, tolerance.tolerance("native-torchscript"), "luna probabilities")
        image = torch.rand(1, 3, 227, 227)
        assert rt.model("cyclegan").infer(image).shape == (1, 3, 228, 228)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "pt2"])
def test_dynamic_batch_serves_batch_sizes_it_was_not_traced_with(fmt: str, exports: dict[str, ExportResult]) -> None:
    result = exports["net"]  # traced at batch 2, verified at 1, 3 and 256
    for batch in (5, 256):
        _check(result, fmt, [torch.randn(batch, 3, 32, 32)])


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "pt2"])
def test_trained_thermometer_matches_eager_in_every_format(fmt: str, exports: dict[str, ExportResult]) -> None:
    t_u = torch.tensor([[35.7], [55.9], [58.2], [81.9], [56.3], [48.9], [33.9], [21.8], [48.4], [60.4], [68.4]])
    _check(exports["thermometer_linear"], fmt, [t_u])


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_cyclegan_dynamic_hw_keeps_the_books_227_to_228(fmt: str, exports: dict[str, ExportResult]) -> None:
    """Traced at 64x64; H and W are dynamic, and 4 * ceil(n / 4) holds at the book's size."""
    result = exports["cyclegan"]
    assert result.rows and {r.sample_shape for r in result.rows} == {"3x64x64", "3x227x227"}
    x = [torch.rand(1, 3, 227, 227)]
    (out,) = _load(result, fmt)(*x)
    assert out.shape == (1, 3, 228, 228)
    _check(result, fmt, x)
    _check(result, fmt, [torch.rand(5, 3, 100, 60)])  # another batch, non-square


def test_luna_model_has_two_named_outputs(exports: dict[str, ExportResult]) -> None:
    import onnxruntime as ort

    result = exports["luna_classifier"]
    session = ort.InferenceSession(str(result.directory / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    x = [torch.randn(5, 1, 32, 48, 48)]
    for fmt in ("torchscript", "onnx"):
        logits, probs = _load(result, fmt)(*x)
        assert logits.shape == probs.shape == (5, 2)
        tolerance.assert_close(probs.sum(dim=1), torch.ones(5), 1e-6, "probabilities sum to 1")
        _check(result, fmt, x)


def test_unet_traces_without_warnings_and_serves_other_sizes(exports: dict[str, ExportResult]) -> None:
    """Chapter 15's fix: center_crop is scripted, so the traced UNet computes crops at run time."""
    result = exports["luna_segmentation"]
    assert _manifest(result)["export"]["torchscript"]["tracer_warnings_inside_torch"] == []
    assert {r.sample_shape for r in result.rows} == {"8x64x64", "8x128x128"}  # dynamic H/W doubled by default
    for fmt in ("torchscript", "onnx"):
        _check(result, fmt, [torch.randn(2, 8, 96, 96)])


def test_unet_size_rules_travel_to_the_runtime(exports: dict[str, ExportResult], repo: Path) -> None:
    """The U-Net halves H and W three times: config.json says so, and the C++ runtime refuses other sizes by name
    (eager would crop 36 to 32 silently, ONNX would fail) while legal sizes still match eager."""
    from torchship.runtime import Runtime

    config = json.loads((repo / "luna_segmentation" / "config.json").read_text())
    assert config["inputs"][0]["multiple_of"] == [1, 1, 8, 8]
    assert config["inputs"][0]["min_shape"] == [1, 8, 8, 8]
    with Runtime(repo, models=["luna_segmentation"], device="cpu") as rt:
        model = rt.model("luna_segmentation")
        with pytest.raises(ValueError, match=r"dimension 2 is 36 .* takes multiples of 8"):
            model.infer(torch.randn(1, 8, 36, 40))
        x = torch.randn(2, 8, 40, 24)
        with torch.no_grad():
            expected = _eager(exports["luna_segmentation"])(x)
        tolerance.assert_close(model.infer(x), expected, tolerance.tolerance("torchscript"), "luna 40x24")


def test_export_refuses_shapes_the_spec_forbids(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"1x8x60x60 for 'ct_slices': dimension 2 is 60, not a multiple of 8"):
        export_registry_model(
            "luna_segmentation", tmp_path, ["torchscript"], example_shapes={"ct_slices": (1, 8, 60, 60)}
        )
    assert not (tmp_path / "luna_segmentation").exists()
    with pytest.raises(ValueError, match="min_shape"):
        models.TensorSpec("x", (-1, 3), min_shape=(1, 0))


def test_a_model_served_one_item_at_a_time_exports_with_a_static_batch(tmp_path: Path) -> None:
    """max_batch_size 1 (a model that cannot batch): the batch is static, every format verifies at batch 1,
    and the runtime serves batch 1 and refuses 2 by name."""
    from torchship.runtime import InvalidInputError, Runtime

    result = export_registry_model("thermometer_mlp", tmp_path, ["torchscript", "onnx"], max_batch_size=1)
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["export"]["dynamic_shapes"]["t_u"] == {"0": "batch 1 (static)"}
    assert {v["batch_size"] for v in manifest["verification"]} == {1}
    assert all(v["ok"] for v in manifest["verification"])
    model = Runtime(tmp_path).model("thermometer_mlp")  # the model keeps its Runtime alive
    x = torch.tensor([[55.0]])
    traced = formats.jit_load(result.directory / "model.pt")
    tolerance.assert_close(model.infer({"t_u": x}), traced(x), tolerance.tolerance("torchscript"), "batch 1")
    with pytest.raises(InvalidInputError, match=r"batch size 2 is outside 1\.\.1"):
        model.infer({"t_u": torch.tensor([[1.0], [2.0]])})


def test_row_sum_is_scripted_and_keeps_its_loop(exports: dict[str, ExportResult]) -> None:
    """Chapter 15's myfn: the registry says script, so the TorchScript graph keeps a loop, not 4 unrolled adds."""
    result = exports["row_sum"]
    with formats.torchscript_deprecation_noted():
        module = torch.jit.load(str(result.directory / "model.pt"))
    assert "prim::Loop" in str(module.graph)
    x = torch.randn(7, 5, 5)
    for fmt in ("torchscript", "onnx"):
        (y,) = _load(result, fmt)(x)
        tolerance.assert_close(y, x.sum(dim=1), tolerance.tolerance(fmt), f"row_sum {fmt}")


def test_traced_parameters_are_frozen(exports: dict[str, ExportResult]) -> None:
    """requires_grad_(False) before tracing persists in the saved module (the book's point about no_grad)."""
    with formats.torchscript_deprecation_noted():
        module = torch.jit.load(str(exports["resnet18"].directory / "model.pt"))
    params = list(module.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert not module.training


def test_resnet18_matches_eager_at_an_unseen_batch(exports: dict[str, ExportResult]) -> None:
    for fmt in ("torchscript", "onnx"):
        _check(exports["resnet18"], fmt, [torch.randn(2, 3, 224, 224)])


def test_a_second_export_is_the_next_version(exports: dict[str, ExportResult], repo: Path) -> None:
    again = export_registry_model("thermometer_mlp", repo, ["torchscript"], init_seed=5)
    assert again.version == 2 and (repo / "thermometer_mlp" / "1").is_dir()
    m = _manifest(again)
    assert m["source_checkpoint"]["init_seed"] == 5
    assert m["weights_sha256"] != _manifest(exports["thermometer_mlp"])["weights_sha256"]
