"""Images in: every common format, EXIF orientation, grayscale, palette, alpha, 16-bit, float."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from sam_cli.errors import InputError
from sam_cli.io.images import decode_image, read_image
from sam_cli.transforms import resize_uint8, resize_uint8_torch, target_size


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_roundtrip(fmt):
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(encode(Image.fromarray(RGB), fmt, **kw), "x")
    assert out.dtype == np.uint8 and np.array_equal(out, RGB)


def test_jpeg():
    data = encode(Image.fromarray(RGB), "JPEG", quality=95)
    out = decode_image(data, "x")
    assert out.shape == (30, 40, 3)
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(out.astype(int) - pil).mean() < 2


@pytest.mark.parametrize("orientation,shape", [(1, (30, 40)), (3, (30, 40)), (6, (40, 30)), (8, (40, 30))])
def test_exif_orientation_applied(orientation, shape):
    img = np.zeros((30, 40, 3), np.uint8)
    img[:10, :10] = 255  # a white block at the stored top-left
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = orientation
    out = decode_image(encode(im, "JPEG", exif=exif.tobytes(), quality=100), "x")
    assert out.shape[:2] == shape
    # Where the block lands is what a viewer shows: Pillow's exif_transpose is the reference.
    from PIL import ImageOps

    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(encode(im, "JPEG", exif=exif.tobytes(), quality=100)))))
    assert np.abs(out.astype(int) - shown.astype(int)).max() < 40


def test_grayscale_palette_alpha():
    g = decode_image(encode(Image.fromarray(RGB[:, :, 0]), "PNG"), "x")
    assert g.shape == (30, 40, 3) and np.array_equal(g[:, :, 1], RGB[:, :, 0])
    p = decode_image(encode(Image.fromarray(RGB).convert("P"), "PNG"), "x")
    assert p.shape == (30, 40, 3)
    rgba = np.dstack([RGB, np.full((30, 40), 7, np.uint8)])
    a = decode_image(encode(Image.fromarray(rgba), "PNG"), "x")
    assert np.array_equal(a, RGB)


def test_16_bit_and_float_scaled_to_8_bit():
    g16 = (np.arange(1200, dtype=np.uint16).reshape(30, 40) * 54)
    out = decode_image(encode(Image.fromarray(g16), "PNG"), "x")
    assert out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == round(int(g16[-1, -1]) * 255 / 65535)
    f = np.linspace(0, 1, 1200, dtype=np.float32).reshape(30, 40)
    outf = decode_image(encode(Image.fromarray(f), "TIFF"), "x")
    assert outf[0, 0, 0] == 0 and outf[-1, -1, 0] == 255


def test_unreadable_and_missing(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError) as e:
        read_image(bad)
    assert str(e.value) == f"{bad}: cannot read image (unsupported format or corrupt file)"
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError):
        read_image(empty)


@pytest.mark.parametrize("hw", [(300, 451), (1200, 1600), (2000, 123), (37, 50), (1024, 700), (5000, 200),
                                (1, 1), (1, 7), (2, 3000), (20000, 10), (1023, 1025), (1024, 1024)])
def test_resize_is_pillow_exact(hw):
    """The CPU's numpy bands (from an array or a CPU tensor, on one thread and on several) and
    the torch way accelerators take (run here on the CPU) all give Pillow's pixels."""
    img = np.random.default_rng(hw[0]).integers(0, 256, (*hw, 3), dtype=np.uint8)
    nh, nw = target_size(*hw, 1024)  # at least 1 pixel a side
    ref = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            assert np.array_equal(resize_uint8(img, (nh, nw)), ref)
            out = resize_uint8(torch.from_numpy(img), (nh, nw))
            assert isinstance(out, torch.Tensor) and np.array_equal(out.numpy(), ref)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(resize_uint8_torch(torch.from_numpy(img), (nh, nw)).numpy(), ref)
