"""The README's main job, end to end, on data that ships with the project.

    make demo

train (thermometer linear + MLP from the book's chapter 5/6 data, a CNN on scikit-learn's digits)
   and, for part 2, generated CT scans -> nodule classifier, segmentation, malignancy fine-tuning (briefly)
-> export (TorchScript, ONNX, .pt2, each verified against eager)
-> start torchship-server -> send requests with the client -> predictions
-> a photo through the image route: an ImageNet classifier's top-5 and CycleGAN's picture
-> the chapter 14 pipeline on a generated CT, every model call through the server
-> the parity table over every runtime -> stop the server cleanly (SIGTERM, exit 0).
Everything lands in demo_output/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

OUT = Path("demo_output")
CKPT = OUT / "checkpoints"
REPO = OUT / "model_repository"
IMAGE_REPO = OUT / "image_repository"
LUNA = OUT / "luna"
TORCHSHIP = str(Path(sys.executable).with_name("torchship"))


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def cli(*args: str) -> None:
    subprocess.run([TORCHSHIP, *args], check=True)


def main() -> None:
    began = time.perf_counter()
    shutil.rmtree(OUT, ignore_errors=True)

    step("1/8 train: chapter 5 linear model, chapter 6 MLP, chapter 8 Net on digits, part 2 on generated CTs")
    cli("train", "thermometer-linear", "--out", str(CKPT / "thermometer_linear.ckpt"))
    print("   (book, chapter 5: w 5.3671, b -17.3012, loss 2.927647)")
    cli("train", "thermometer-mlp", "--out", str(CKPT / "thermometer_mlp.ckpt"))
    cli("train", "digits-net", "--epochs", "8", "--tb-dir", str(OUT / "runs"), "--out", str(CKPT / "digits_net.ckpt"))
    # Part 2, in miniature: three generated 32x64x64 scans, a few dozen training samples per model.
    luna = ("--data-dir", str(LUNA), "--val-stride", "2", "--tb-dir", str(OUT / "runs"), "--max-cts", "3")
    cli("data", "synth-luna", "--out", str(LUNA), "--series", "3", "--seed", "7", "--shape", "32x64x64", "--ratio", "4",
        "--nodules-per-series", "2")  # fmt: skip
    short = ("--epochs", "1", "--batch-size", "8", "--cache-dir", "")
    cli("train", "luna-classifier", *luna, *short, "--balanced", "--epoch-size", "32",
        "--out", str(CKPT / "luna_classifier.ckpt"))  # fmt: skip
    cli("train", "luna-segmentation", *luna, "--epochs", "1", "--batch-size", "8", "--epoch-size", "32",
        "--out", str(CKPT / "luna_segmentation.ckpt"))  # fmt: skip
    cli("train", "luna-classifier", *luna, *short, "--epoch-size", "16", "--task", "malignancy",
        "--finetune", str(CKPT / "luna_classifier.ckpt"), "--out", str(CKPT / "luna_malignancy.ckpt"))  # fmt: skip

    step("2/8 export: TorchScript + ONNX + .pt2, each verified against eager PyTorch before it counts")
    for name in ("thermometer_linear", "thermometer_mlp", "digits_net"):
        cli("export", str(CKPT / f"{name}.ckpt"), "--repository", str(REPO))
    # Part 2: the nodule classifier (two outputs: logits, probabilities) also as ONNX; its malignancy variant and
    # the segmentation model as TorchScript only (their ONNX exports took 106 of the act's 245 export seconds).
    for name, formats in (("luna_classifier", "torchscript,onnx"), ("luna_malignancy", "torchscript")):
        cli("export", str(CKPT / f"{name}.ckpt"), "--repository", str(REPO), "--formats", formats,
            "--max-batch-size", "32")  # fmt: skip
    seg = CKPT / "luna_segmentation.best.ckpt"
    cli("export", str(seg), "--repository", str(REPO), "--formats", "torchscript", "--max-batch-size", "16")

    from torchship.client import Client
    from torchship.data.digits import digits
    from torchship.server_process import ServerProcess

    step("3/8 serve: torchship-server (C++, LibTorch, dynamic batching) on a free loopback port")
    server = ServerProcess(REPO, "--device", "cpu", "--grpc-port", "0", log_path=OUT / "server.log").start()
    print(f"   ready at {server.url} (pid {server.pid}); log in {server.log_path}")
    try:
        with Client(server.url) as client:
            step("4/8 predict: requests through the Open Inference Protocol")
            readings = torch.tensor([[35.7], [55.9], [81.9], [21.8]])
            for name in ("thermometer_linear", "thermometer_mlp"):
                celsius = client.infer(name, readings)["t_c"]
                pairs = ", ".join(
                    f"{float(u):.1f} -> {float(c):.2f} °C" for u, c in zip(readings[:, 0], celsius[:, 0], strict=True)
                )
                print(f"   {name:<19} {pairs}")
            val = digits().val
            images, labels = val.images[:200], val.labels[:200]
            logits = client.infer("digits_net", images, binary_inputs=True, binary_outputs=True)["logits"]
            predicted = logits.argmax(1)
            accuracy = float((predicted == labels).float().mean())
            print(f"   digits_net: first 12 validation digits predicted {predicted[:12].tolist()}")
            print(f"                                      true labels {labels[:12].tolist()}")
            print(f"   digits_net: {accuracy:.1%} of 200 held-out digits right (binary tensor protocol)")

            step("5/8 images: a photo as it is, decoded and preprocessed inside torchship-server")
            image_route()

            step("6/8 diagnose: the chapter 14 pipeline on a generated CT, every model call through the server")
            scan = sorted(LUNA.glob("subset*/*.mhd"))[0]
            cli("diagnose", str(scan), "--url", server.url)

            step("7/8 parity: every model through every runtime against eager PyTorch")
            cli(
                "parity", "--repository", str(REPO), "--server-url", server.url,
                "--grpc-address", f"127.0.0.1:{server.grpc_port}", "--markdown", str(OUT / "parity.md"),
            )  # fmt: skip
    finally:
        step("8/8 stop: SIGTERM, drain, exit")
        code = server.stop()
        print(f"   torchship-server exited with code {code}")
    print(f"\ndone in {time.perf_counter() - began:.0f} s; everything is in {OUT}/")
    if code != 0:
        sys.exit(code)


def image_route() -> None:
    """scikit-learn's china.jpg (427x640), sent as it is to the image route of a second server: an ImageNet
    classifier answers its top-5, CycleGAN its picture. Both have random weights (the demo trains neither):
    the answers show the path (JPEG decode, the preprocessing graph export wrote, the model, the answer),
    not a model worth trusting."""
    import sklearn.datasets

    from torchship.client import Client
    from torchship.export import export_registry_model
    from torchship.server_cli import format_top_k
    from torchship.server_process import ServerProcess

    began = time.perf_counter()
    photo = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    # Batch 2 at most: the least a dynamic batch dimension takes, and the shortest warm-up (sizes 1 and 2).
    export_registry_model("resnet18", IMAGE_REPO, ["torchscript"], max_batch_size=2)
    # The book's generator (ngf 64, 9 blocks), exported at a 64x64 example: verification at 256x256 took 50 s.
    small = {"image": (1, 3, 64, 64)}
    export_registry_model("cyclegan", IMAGE_REPO, ["torchscript"], max_batch_size=2, example_shapes=small)
    # A server of their own: the parity table (step 7) stays on the trained models in every format.
    server = ServerProcess(IMAGE_REPO, "--device", "cpu", log_path=OUT / "image_server.log").start()
    try:
        with Client(server.url) as client:
            print(f"   curl -T {photo.name} {server.url}/v2/models/resnet18/image   (sent by torchship.client)")
            top = client.infer_image("resnet18", photo.read_bytes()).top_k or []
            print("   resnet18 (random weights: ImageNet's labels, but noise) on china.jpg, top-5:")
            print(textwrap.indent(format_top_k(top), "     "))
            zebra = OUT / "china.cyclegan.jpg"
            print(f"   curl -T {photo.name} {server.url}/v2/models/cyclegan/image -o {zebra}   (the same)")
            answer = client.infer_image("cyclegan", photo.read_bytes(), accept="image/jpeg")
            zebra.write_bytes(answer.image or b"")
            print(f"   cyclegan wrote {zebra} ({len(answer.image or b'')} bytes): random weights, untrained, so the")
            print("   photo's outlines under noise, no zebras (trained ones: torchship export cyclegan --weights FILE)")
    finally:
        code = server.stop()
    if code != 0:
        raise RuntimeError(f"the image server exited with code {code}; log in {server.log_path}")
    print(f"   ({time.perf_counter() - began:.0f} s: export, a second server on {IMAGE_REPO}, two requests)")


if __name__ == "__main__":
    main()
