"""The image route (issue 15, docs/images.md): encoded images in, answers out, through the preprocessing graph
export wrote beside the model.

Checked against eager PyTorch on the same pixels: a classifier's top-k (softmax of the logits, within 1e-5),
the classification extension on /infer (raw scores, Triton's "score:index:label"), CycleGAN's image (size,
and pixels within one level of eager + the postprocess formula). Hostile images get a 4xx with a message and
the server stays up; unusual but valid ones (1x1, grey, RGBA, CMYK, 16-bit, EXIF-rotated) are answered as
PIL's convert("RGB") path would see them.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from torchship.server_process import ServerProcess

TOL = 1e-5  # probabilities and scores vs eager on the same preprocessed input


def _bytes(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _photo(width: int = 61, height: int = 47, seed: int = 0) -> Image.Image:
    """A smooth colour image with some noise: resizing it exercises the antialiasing filter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    noisy = np.clip(rgb + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, "RGB")


# ``image_repository`` (conftest.py): CIFAR-2 ``Net`` (a classifier with labels), a small CycleGAN generator
# (image to image), and resnet18 and digits_net, which tests/server/test_image_parity.py checks too.


@pytest.fixture(scope="module")
def server(image_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    flags = ("--device", "cpu", "--max-image-pixels", "4000000", "--max-image-side", "8192", "--grpc-port", "0")
    flags += ("--model", "net", "--model", "cyclegan")  # the repository's others are test_image_parity.py's
    s = ServerProcess(image_repository, *flags, log_path=log).start()
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


def _graph(repo: Path, model: str) -> torch.jit.ScriptModule:
    return torch.jit.load(str(repo / model / "1" / "preprocess.pt"))


def _eager(repo: Path, model: str) -> torch.jit.ScriptModule:
    return torch.jit.load(str(repo / model / "1" / "model.pt"))


def _expected_top(repo: Path, image: Image.Image, k: int) -> list[tuple[int, float]]:
    """Net's top-k on the pixels PIL gives (exif_transpose + convert("RGB")), through its preprocessing graph."""
    pixels = torch.from_numpy(np.array(ImageOps.exif_transpose(image).convert("RGB"))).contiguous()
    x = _graph(repo, "net")(pixels).unsqueeze(0)
    probabilities = torch.softmax(_eager(repo, "net")(x).double(), dim=1)[0]
    values, indices = probabilities.sort(descending=True, stable=True)
    return [(int(i), float(v)) for v, i in zip(values[:k], indices[:k], strict=True)]


def test_classifier_answers_top_k_with_labels_as_eager(client: httpx.Client, image_repository: Path) -> None:
    photo = _photo()
    for fmt, method in (("PNG", "POST"), ("JPEG", "PUT")):
        body = _bytes(photo, fmt)
        r = client.request(method, "/v2/models/net/image", content=body, headers={"Content-Type": f"image/{fmt}"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["model_name"] == "net" and got["model_version"] == "1"
        decoded = Image.open(io.BytesIO(body))
        want = _expected_top(image_repository, decoded, 2)
        assert [c["index"] for c in got["top_k"]] == [i for i, _ in want]
        assert [c["label"] for c in got["top_k"]] == [["airplane", "bird"][i] for i, _ in want]
        for c, (_, p) in zip(got["top_k"], want, strict=True):
            assert abs(c["probability"] - p) < TOL
    one = client.post("/v2/models/net/versions/1/image?top_k=1", content=_bytes(photo, "PNG")).json()
    assert len(one["top_k"]) == 1


@pytest.mark.parametrize("query", ["top_k=0", "top_k=abc", "top_k=-1", "top_k="])
def test_bad_top_k_is_a_400(client: httpx.Client, query: str) -> None:
    r = client.post(f"/v2/models/net/image?{query}", content=_bytes(_photo(), "PNG"))
    assert r.status_code == 400 and "top_k" in r.json()["error"]


def test_classification_extension_on_infer(client: httpx.Client, image_repository: Path) -> None:
    """parameters.classification on a requested output: BYTES "score:index:label", raw scores (Triton's form)."""
    x = torch.randn(3, 3, 32, 32)
    logits = _eager(image_repository, "net")(x)
    body = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [3, 3, 32, 32], "data": x.flatten().tolist()}],
        "outputs": [{"name": "logits", "parameters": {"classification": 2}}],
    }
    out = client.post("/v2/models/net/infer", json=body).json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [3, 2]
    for row in range(3):
        entries = [e.split(":") for e in out["data"][row * 2 : row * 2 + 2]]
        order = logits[row].argsort(descending=True, stable=True).tolist()
        assert [int(e[1]) for e in entries] == order
        assert [e[2] for e in entries] == [["airplane", "bird"][i] for i in order]
        for e in entries:
            assert abs(float(e[0]) - float(logits[row, int(e[1])])) < 1e-5  # printed with 6 decimals
    body["outputs"][0]["parameters"]["binary_data"] = True
    r = client.post("/v2/models/net/infer", json=body)
    header_length = int(r.headers["Inference-Header-Content-Length"])
    blob = r.content[header_length:]
    entries, offset = [], 0
    while offset < len(blob):
        (n,) = struct.unpack_from("<I", blob, offset)
        entries.append(blob[offset + 4 : offset + 4 + n].decode())
        offset += 4 + n
    assert entries == out["data"]
    zero = dict(body, outputs=[{"name": "logits", "parameters": {"classification": 0}}])
    assert client.post("/v2/models/net/infer", json=zero).status_code == 400


def test_standard_clients_class_count(server: ServerProcess, image_repository: Path) -> None:
    """tritonclient's InferRequestedOutput(class_count=...), over HTTP and gRPC."""
    tritonhttp = pytest.importorskip("tritonclient.http")
    tritongrpc = pytest.importorskip("tritonclient.grpc")
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    logits = _eager(image_repository, "net")(torch.from_numpy(x))
    with tritongrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as g:
        clients = [(tritonhttp, tritonhttp.InferenceServerClient(server.url.removeprefix("http://"))), (tritongrpc, g)]
        for module, c in clients:
            inp = module.InferInput("image", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            result = c.infer("net", [inp], outputs=[module.InferRequestedOutput("logits", class_count=1)])
            top = result.as_numpy("logits")
            assert top.shape == (2, 1), module.__name__
            for row in range(2):
                score, index, label = top[row, 0].decode().split(":")
                assert int(index) == int(logits[row].argmax()) and label == ["airplane", "bird"][int(index)]
                assert abs(float(score) - float(logits[row].max())) < 1e-5


def test_cyclegan_answers_an_image_by_accept(client: httpx.Client, image_repository: Path) -> None:
    photo = _photo(90, 60, seed=3)
    pixels = torch.from_numpy(np.array(photo)).contiguous()
    x = torch.jit.load(str(image_repository / "cyclegan" / "1" / "preprocess.pt"))(pixels).unsqueeze(0)
    out = _eager(image_repository, "cyclegan")(x)[0]
    want = torch.jit.load(str(image_repository / "cyclegan" / "1" / "postprocess.pt"))(out)  # uint8 [H, W, 3]
    r = client.put("/v2/models/cyclegan/image", content=_bytes(photo, "PNG"), headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = torch.from_numpy(np.array(Image.open(io.BytesIO(r.content)).convert("RGB")))
    assert got.shape == want.shape == (x.shape[2], x.shape[3], 3)  # resize 256 on the shorter side
    assert (got.int() - want.int()).abs().max() <= 1  # float differences between runtimes may flip a rounding
    jpeg = client.put("/v2/models/cyclegan/image", content=_bytes(photo, "PNG"))  # the book's default: JPEG
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    decoded = torch.from_numpy(np.array(Image.open(io.BytesIO(jpeg.content))))
    assert decoded.shape == want.shape
    # libjpeg-turbo at quality 90, 4:2:0, as PIL encodes by default: the same losses, within a level or two
    pil = Image.open(io.BytesIO(_bytes(Image.fromarray(want.numpy(), "RGB"), "JPEG", quality=90)))
    assert (decoded.float() - torch.from_numpy(np.array(pil)).float()).abs().mean() < 2
    as_json = client.put(
        "/v2/models/cyclegan/image", content=_bytes(photo, "PNG"), headers={"Accept": "application/json"}
    )
    assert as_json.json()["outputs"][0]["shape"] == [1, *out.shape]
    refused = client.put("/v2/models/cyclegan/image", content=_bytes(photo, "PNG"), headers={"Accept": "text/html"})
    assert refused.status_code == 406 and "image/png" in refused.json()["error"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, followed by a tiny (truncated) IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _bomb() -> bytes:
    """A valid 3000x3000 PNG (27 MB of pixels) that compresses to a few tens of KB: 9 M pixels > the fixture's 4 M."""
    return _bytes(Image.new("RGB", (3000, 3000)), "PNG")


def test_hostile_images_get_4xx_and_the_server_stays_up(client: httpx.Client, server: ServerProcess) -> None:
    jpeg = _bytes(_photo(), "JPEG")
    cases = {
        "truncated JPEG": (jpeg[: len(jpeg) // 2], 400, "JPEG"),
        "wrong magic": (b"GIF89a" + b"\0" * 100, 400, "not a JPEG or PNG"),
        "empty body": (b"", 400, "not a JPEG or PNG"),
        "20000x20000 header": (_png_header_only(20000, 20000), 413, "--max-image"),
        "1x100000 header": (_png_header_only(1, 100000), 413, "--max-image"),
        "decompression bomb": (_bomb(), 413, "--max-image-pixels"),
        "garbage after a JPEG signature": (b"\xff\xd8\xff" + bytes(range(256)) * 4, 400, "JPEG"),
    }
    pid_rss = _rss(server)
    for name, (body, status, words) in cases.items():
        r = client.post("/v2/models/net/image", content=body)
        assert r.status_code == status, (name, r.text)
        assert words in r.json()["error"], (name, r.json())
    assert _rss(server) - pid_rss < 64 << 20  # nothing near the bomb's 27 MB per request stays
    assert client.get("/v2/health/live").status_code == 200


def _rss(server: ServerProcess) -> int:
    status = Path(f"/proc/{server.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) * 1024


def _unusual() -> dict[str, Image.Image]:
    photo = _photo(40, 30, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated = photo.copy()
    rotated.info["exif"] = exif.tobytes()
    grey16 = Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    return {
        "1x1": Image.new("RGB", (1, 1), (200, 10, 30)),
        "grey": photo.convert("L"),
        "rgba": photo.convert("RGBA"),
        "cmyk": photo.convert("CMYK"),
        "16-bit": grey16,
        "exif-rotated": rotated,
    }


@pytest.mark.parametrize("name", list(_unusual()))
def test_unusual_valid_images_are_answered_as_pil_sees_them(
    client: httpx.Client, image_repository: Path, name: str
) -> None:
    image = _unusual()[name]
    fmt = "JPEG" if name in ("cmyk", "exif-rotated") else "PNG"
    kwargs = {"exif": image.info["exif"]} if "exif" in image.info else {}
    body = _bytes(image, fmt, **kwargs)
    r = client.post("/v2/models/net/image", content=body)
    assert r.status_code == 200, r.text
    # 16-bit grey: the high byte (docs/architecture.md; PIL's convert would clip at 255): the 8-bit grey it came from
    high_byte = Image.fromarray((np.array(image) >> 8).astype(np.uint8)) if name == "16-bit" else None
    seen = high_byte or Image.open(io.BytesIO(body))
    want = _expected_top(image_repository, seen, 2)
    got = r.json()["top_k"]
    for c, (i, p) in zip(got, want, strict=True):
        assert c["index"] == i and abs(c["probability"] - p) < TOL, (name, got, want)


def test_a_model_without_images_and_the_sole_model_form(
    client: httpx.Client, start_server, net_repository: Path, thermometer_repository: Path
) -> None:
    both = client.put("/image", content=_bytes(_photo(), "PNG"))
    assert both.status_code == 404 and "/v2/models/{model}/image" in both.json()["error"]
    thermometer = start_server(thermometer_repository)
    r = httpx.post(f"{thermometer.url}/v2/models/thermometer_linear/image", content=_bytes(_photo(), "PNG"))
    assert r.status_code == 400 and "takes no images" in r.json()["error"]
    single = start_server(net_repository)
    r = httpx.put(f"{single.url}/image", content=_bytes(_photo(), "JPEG"))  # curl -T photo.jpg .../image
    assert r.status_code == 200 and r.json()["model_name"] == "net"
    assert httpx.get(f"{single.url}/image").status_code == 405


def test_runtime_infer_image_matches_the_server(client: httpx.Client, image_repository: Path, tmp_path: Path) -> None:
    from torchship.runtime import Runtime

    photo = _photo(70, 50, seed=9)
    body = _bytes(photo, "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(body)
    served = client.post("/v2/models/net/image?top_k=2", content=body).json()["top_k"]
    with Runtime(image_repository, device="cpu", models=["net", "cyclegan"]) as rt:
        net = rt.model("net")
        assert net.takes_images
        for source in (body, path, str(path), photo):
            got = net.infer_image(source, top_k=2)
            assert [c["index"] for c in got] == [c["index"] for c in served]
            assert all(abs(a["probability"] - b["probability"]) < TOL for a, b in zip(got, served, strict=True))
        zebra = rt.model("cyclegan").infer_image(photo)
        assert isinstance(zebra, Image.Image) and zebra.mode == "RGB"


def test_cli_predict_sends_the_image_as_it_is(
    client: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``torchship predict --input photo.jpg``: no --repository, no client preprocessing; the server's answer printed
    (a classifier's top-k table) or written (an image model's picture, its format by the output's extension)."""
    from torchship.cli import main

    photo = _photo(70, 50, seed=11)
    (tmp_path / "photo.jpg").write_bytes(_bytes(photo, "JPEG"))
    (tmp_path / "photo.png").write_bytes(_bytes(photo, "PNG"))
    photo.save(tmp_path / "photo.bmp")  # re-encoded as PNG by the client: the server decodes JPEG and PNG only
    url = ["--url", str(client.base_url)]

    assert main(["predict", "--model", "net", "--input", str(tmp_path / "photo.jpg"), "--top-k", "2", *url]) == 0
    served = client.post("/v2/models/net/image?top_k=2", content=(tmp_path / "photo.jpg").read_bytes()).json()
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["rank", "label", "index", "probability"]
    assert [(r[1], int(r[2]), float(r[3])) for r in rows[1:]] == [
        (c["label"], c["index"], round(c["probability"], 6)) for c in served["top_k"]
    ]

    for source, extra, written, media_type in (
        ("photo.png", [], "photo.out.png", "image/png"),
        ("photo.jpg", [], "photo.out.jpg", "image/jpeg"),
        ("photo.bmp", ["--output", str(tmp_path / "zebra.png")], "zebra.png", "image/png"),
    ):
        assert main(["predict", "--model", "cyclegan", "--input", str(tmp_path / source), *extra, *url]) == 0
        assert f"wrote {tmp_path / written} ({media_type}" in capsys.readouterr().out
        body = (tmp_path / "photo.png").read_bytes()
        want = client.put("/v2/models/cyclegan/image", content=body, headers={"Accept": media_type}).content
        if media_type == "image/png":  # the same pixels, so the same PNG bytes
            assert (tmp_path / written).read_bytes() == want
        else:
            with Image.open(tmp_path / written) as got:
                assert got.format == "JPEG" and got.size == Image.open(io.BytesIO(want)).size
    assert main(["predict", "--model", "net", "--input", str(tmp_path / "photo.jpg"), "--output", "x.gif", *url]) == 1
    assert "--output x.gif: expected a .png, .jpg or .jpeg" in capsys.readouterr().err
