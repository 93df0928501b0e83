"""Run: .venv/bin/pytest tests/unit/test_export_variants.py

config.json's ``variants`` (docs/variants.md) as export writes them, and a compiled
bf16 channels_last ``.pt2`` variant verified against eager fp32 within the policy's
stated bound, its wire contract (fp32 in, fp32 out) unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torchship import tolerance
from torchship.export import ExportError, export_registry_model, formats, random_init_checkpoint
from torchship.export.variants import Variant, parse
from torchship.training.checkpoint import build_model


def test_file_names_and_records_follow_the_contract() -> None:
    assert Variant("torchscript", "cpu").file == "model.pt"
    assert Variant("pt2", "cuda").file == "model.cuda.pt2"
    assert parse("bf16-cl").file == "model.bf16-cl.pt2"
    assert parse("fp32-cl").file == "model.fp32-cl.pt2"
    assert parse("fp16", "cuda").file == "model.cuda.fp16.pt2"
    assert Variant("torchscript", "cuda").record([]) == {
        "file": "model.pt",
        "format": "torchscript",
        "device": "any",
        "precision": "fp32",
        "layout": "contiguous",
    }
    with pytest.raises(ValueError, match=r"fp16 is compiled and verified only for CUDA \(--device cuda\)"):
        parse("fp16")
    with pytest.raises(ValueError, match=r"unknown variant 'int4-cl': expected a precision"):
        parse("int4-cl")


def test_a_bf16_channels_last_pt2_is_compiled_verified_and_listed(tmp_path: Path) -> None:
    result = export_registry_model("net", tmp_path, ["torchscript"], variants=["bf16-cl"], max_batch_size=8)
    config = json.loads((tmp_path / "net" / "config.json").read_text())
    records = {v["file"]: v for v in config["variants"]}
    assert set(records) == {"model.pt", "model.bf16-cl.pt2"}
    bf16 = records["model.bf16-cl.pt2"]
    assert (bf16["format"], bf16["device"], bf16["precision"], bf16["layout"]) == (
        "pt2",
        "cpu",
        "bf16",
        "channels_last",
    )
    assert bf16["verification"]["ok"] and bf16["verification"]["cases"] == 3  # batch 1, 3 and 8
    atol = tolerance.variant_tolerance("pt2", "cpu", "bf16")
    assert {r.atol for r in result.rows if r.format == "pt2.bf16-cl"} == {atol}
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["export"]["pt2.bf16-cl"]["precision"] == "bf16"
    assert manifest["variants"] == config["variants"]

    x = torch.randn(5, 3, 32, 32)  # a batch it was not verified at
    with torch.no_grad():
        expected = build_model(random_init_checkpoint("net"))(x)
    (got,) = formats.load_pt2(result.directory / "model.bf16-cl.pt2")(x)
    assert got.dtype == torch.float32, "the wire contract stays fp32"
    c = tolerance.assert_close(got, expected, atol, "bf16-cl vs eager fp32")
    assert c.max_abs > 0, "it really computed in bf16"

    # The C++ runtime picks the variant from config.json (docs/variants.md): the compiled file, not a conversion.
    from torchship.runtime import LoadError, Runtime

    with Runtime(tmp_path, format="pt2", precision="bf16", channels_last=True) as rt:
        native = rt.model("net").infer(x)
    tolerance.assert_close(native, got, tolerance.SAME_ARTIFACT_TOL, "the same .pt2 in C++ and Python")
    with pytest.raises(LoadError, match=r"model.bf16-cl.pt2"):  # no fp32 .pt2 was exported: named, not guessed
        Runtime(tmp_path, format="pt2")


def test_variants_that_cannot_be_made_here_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"fp16 is compiled and verified only for CUDA"):
        export_registry_model("net", tmp_path, ["torchscript"], variants=["fp16"])
    with pytest.raises(ExportError, match=r"unknown variant 'half'"):
        export_registry_model("net", tmp_path, ["torchscript"], variants=["half"])
    assert not (tmp_path / "net").exists()
