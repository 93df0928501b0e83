"""The README's main job, end to end, on data that ships with the project.

    make demo

Today: train the chapter 5 thermometer model with the book's settings, export
it (TorchScript, ONNX, .pt2, each verified against eager), load it in the
native C++ runtime, and print its predictions beside eager PyTorch's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from torchship import tolerance
from torchship.export import export_checkpoint
from torchship.export.pipeline import format_table
from torchship.runtime import Runtime
from torchship.training import thermometer
from torchship.training.checkpoint import build_model, load_checkpoint

OUT = Path("demo_output")


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    print("== 1. train: chapter 5 thermometer model (5000 epochs, lr 1e-2, input scale 0.1)")
    cfg = thermometer.ThermometerConfig()
    result = thermometer.train_linear(cfg)
    ckpt = thermometer.save_result(result, "thermometer_linear", cfg, OUT / "checkpoints" / "thermometer_linear.ckpt")
    w, b = float(result.model.w), float(result.model.b)
    print(f"   w = {w:.4f}, b = {b:.4f}, loss = {result.train_loss:.6f}   (book: 5.3671, -17.3012, 2.927647)")

    print("== 2. export: TorchScript, ONNX, .pt2 — each verified against eager")
    exported = export_checkpoint(ckpt, OUT / "model_repository")
    print(format_table(exported.rows))

    print("== 3. native C++ runtime (torchship._C) vs eager PyTorch")
    eager = build_model(load_checkpoint(ckpt))
    readings = torch.tensor([[35.7], [55.9], [81.9], [21.8]])
    with torch.no_grad():
        expected = eager(readings)
    for fmt in ("torchscript", "pt2"):
        with Runtime(OUT / "model_repository", device="cpu", format=fmt) as rt:
            got = rt.model("thermometer_linear").infer(readings)
        c = tolerance.compare(got, expected, tolerance.SAME_ARTIFACT_TOL)
        print(f"   {fmt:<12} max abs diff vs eager {c.max_abs:.2e}  ({'ok' if c.ok else 'FAIL'})")
    print(f"   {'t_u':>8} {'eager °C':>10} {'native °C':>10}")
    for t_u, e, g in zip(readings[:, 0], expected[:, 0], got[:, 0], strict=True):
        print(f"   {float(t_u):>8.1f} {float(e):>10.4f} {float(g):>10.4f}")
    print(f"done: artifacts in {OUT}/model_repository")


if __name__ == "__main__":
    main()
