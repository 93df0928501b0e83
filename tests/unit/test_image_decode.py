"""Run: .venv/bin/python -m pytest tests/unit/test_image_decode.py -q

The native image decoder (cpp/src/image.cpp, libjpeg-turbo + libpng + libexif) against PIL's
``ImageOps.exif_transpose(Image.open(f)).convert("RGB")`` on generated images of every kind a client
sends: odd sizes, 1x1, greyscale, RGBA, palettes, CMYK JPEG, 16-bit PNG, interlaced PNG, progressive JPEG
and the eight EXIF orientations; then truncated, corrupt and oversized files, which must be refused
with a message, never crash, and be refused from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from torchship import _C


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients with some noise: JPEG-friendly, and every pixel different."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 127 // max(width + height - 2, 1)], -1
    )
    noisy = np.clip(rgb + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, "RGB")


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _reference(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(np.asarray(ImageOps.exif_transpose(img).convert("RGB")).copy())


def _assert_same(data: bytes, max_abs: int = 0) -> torch.Tensor:
    got = _C.decode_image(data)
    want = _reference(data)
    assert got.dtype == torch.uint8 and got.shape == want.shape, (got.shape, want.shape)
    diff = (got.int() - want.int()).abs().max().item()
    assert diff <= max_abs, f"max abs {diff} against PIL"
    return got


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (37, 21), (224, 160)])
@pytest.mark.parametrize("kind", ["jpeg", "jpeg-grey", "jpeg-progressive", "jpeg-444", "png", "png-interlaced"])
def test_common_images_decode_as_pil_does(size: tuple[int, int], kind: str) -> None:
    img = _photo(*size)
    data = {
        "jpeg": lambda: _encode(img, "JPEG", quality=90),
        "jpeg-grey": lambda: _encode(img.convert("L"), "JPEG", quality=85),
        "jpeg-progressive": lambda: _encode(img, "JPEG", quality=80, progressive=True),
        "jpeg-444": lambda: _encode(img, "JPEG", quality=95, subsampling=0),
        "png": lambda: _encode(img, "PNG"),
        "png-interlaced": lambda: _encode(img, "PNG", interlace=1),
    }[kind]()
    _assert_same(data)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "I;16", "RGB;16"])
def test_png_modes_become_rgb_as_pil_converts_them(mode: str) -> None:
    img = _photo(19, 11)
    if mode == "RGB;16":  # 16 bits per channel: PIL reads the high byte
        arr = np.asarray(img).astype(">u2") * 257 + np.arange(19 * 11 * 3, dtype=">u2").reshape(11, 19, 3) % 200
        data = _png_rgb16(arr)
        got = _C.decode_image(data)
        assert torch.equal(got, torch.from_numpy((arr >> 8).astype(np.uint8)))
        assert torch.equal(got, _reference(data))
        return
    if mode == "I;16":  # 16-bit grey: the high byte, replicated (PIL's convert clips instead; see docs)
        arr = (np.asarray(img.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
        data = _encode(Image.fromarray(arr), "PNG")
        assert torch.equal(
            _C.decode_image(data), torch.from_numpy(np.repeat((arr >> 8).astype(np.uint8)[..., None], 3, -1))
        )
        return
    converted = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16) if mode == "P" else img.convert(mode)
    if mode == "RGBA":
        alpha = Image.fromarray((np.arange(19 * 11) % 256).astype(np.uint8).reshape(11, 19), "L")
        converted.putalpha(alpha)  # varying alpha: dropped, not composited
    _assert_same(_encode(converted, "PNG"))


def _png_rgb16(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG written by hand (PIL cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def test_cmyk_jpeg_is_converted_as_pil_converts_it() -> None:
    rng = np.random.default_rng(1)
    cmyk = rng.integers(0, 256, (17, 33, 4), dtype=np.uint8)  # black (K) everywhere, not only RGB's K = 0
    data = _encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100, subsampling=0)
    _assert_same(data)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    img = _photo(24, 10)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(img, "JPEG", quality=90, exif=exif.tobytes())
    got = _assert_same(data)
    assert got.shape[:2] == ((24, 10) if orientation >= 5 else (10, 24))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bomb(width: int, height: int) -> bytes:
    """A valid header for a huge image and a few bytes of pixel data: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def test_bad_files_are_refused_with_a_message() -> None:
    jpeg = _encode(_photo(64, 48), "JPEG", quality=90)
    png = _encode(_photo(64, 48), "PNG")
    with pytest.raises(_C.InvalidInputError, match="not a JPEG or PNG"):
        _C.decode_image(b"GIF89a" + b"\0" * 64)
    with pytest.raises(_C.InvalidInputError, match="not a JPEG or PNG"):
        _C.decode_image(b"")
    for cut in (len(jpeg) // 2, len(jpeg) - 10, 20):
        with pytest.raises(_C.InvalidInputError, match="invalid JPEG"):
            _C.decode_image(jpeg[:cut])
    for cut in (len(png) // 2, len(png) - 12, 40):
        with pytest.raises(_C.InvalidInputError, match="invalid PNG"):
            _C.decode_image(png[:cut])
    corrupt = bytearray(png)
    corrupt[60:80] = b"\xff" * 20  # inside IDAT: a CRC or zlib error
    with pytest.raises(_C.InvalidInputError, match="invalid PNG"):
        _C.decode_image(bytes(corrupt))
    with pytest.raises(_C.InvalidInputError, match="invalid JPEG"):
        _C.decode_image(b"\xff\xd8\xff" + b"\0" * 100)


def test_oversized_images_are_refused_from_the_header() -> None:
    # 60000 x 60000: 10.8 GB of pixels if decoded; refused from its header, before any allocation.
    with pytest.raises(_C.TooLargeError, match="exceeds the image limits"):
        _C.decode_image(_png_bomb(60000, 60000))
    with pytest.raises(_C.TooLargeError, match="exceeds the image limits"):
        _C.decode_image(_png_bomb(8000, 8000), max_pixels=1_000_000)
    jpeg = _encode(_photo(300, 200), "JPEG")
    with pytest.raises(_C.TooLargeError, match="300x200 pixels exceeds"):
        _C.decode_image(jpeg, max_side=256)
    assert _C.decode_image(jpeg, max_side=300).shape == (200, 300, 3)
