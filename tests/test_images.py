"""tfds_oregon.images: every hostile file is either skipped or stored as an upright RGB JPEG."""

from __future__ import annotations

import io
import pathlib
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfds_oregon import images

HOSTILE = pathlib.Path(__file__).parent / "data" / "hostile"
UNREADABLE = (
    "broken.png",
    "broken_data_stream.png",
    "truncated_end_chunk.png",
    "truncated_image.png",
    "truncated_jpeg.jpg",
    "bmp_b_shortfile.bmp",
)
READABLE = sorted(p.name for p in HOSTILE.iterdir() if p.name not in UNREADABLE)
TRANSPARENT = (
    "transparent.png",
    "p_trns_single.png",
    "1_trns.png",
    "pil123rgba.png",
    "dispose_bgnd_transparency.gif",
    "bmp_q_rgba32.bmp",
)


def _stored(data: bytes, short_side: int | None = None) -> tuple[images.ConvertedImage, bytes]:
    converted = images.convert(data, short_side)
    return converted, data if converted.jpeg is None else converted.jpeg


def _pixels(jpeg: bytes) -> np.ndarray:
    return tf.io.decode_jpeg(jpeg, channels=0).numpy().astype(np.float32)


def _jpeg(img: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=95, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_files_raise(name):
    with pytest.raises(images.UnreadableImageError):
        images.convert((HOSTILE / name).read_bytes())


@pytest.mark.parametrize("name", READABLE)
def test_readable_files_become_rgb_jpegs_tensorflow_decodes(name):
    converted, stored = _stored((HOSTILE / name).read_bytes())
    decoded = tf.io.decode_jpeg(stored, channels=0)  # channels=0: what the file really holds.
    assert decoded.shape == (converted.height, converted.width, 3)
    with Image.open(io.BytesIO(stored)) as img:
        assert (img.format, img.mode) == ("JPEG", "RGB")


@pytest.mark.parametrize("name", TRANSPARENT)
def test_transparent_pixels_become_white(name):
    with Image.open(HOSTILE / name) as img:
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
    _, stored = _stored((HOSTILE / name).read_bytes())
    assert _pixels(stored)[alpha == 0].mean() > 245


@pytest.mark.parametrize("name", ["hopper_orientation_6.jpg", "hopper_orientation_8.jpg"])
def test_exif_orientation_is_applied(name):
    upright = np.asarray(Image.open(HOSTILE / "hopper.bmp").convert("RGB"), np.float32)
    _, stored = _stored((HOSTILE / name).read_bytes())
    raw = np.asarray(Image.open(HOSTILE / name).convert("RGB"), np.float32)
    assert np.abs(_pixels(stored) - upright).mean() < 8  # JPEG noise only.
    assert np.abs(raw - upright).mean() > 50  # The file itself is stored rotated.


def test_rotated_non_square_photo_swaps_its_sides():
    exif = Image.Exif()
    exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
    data = _jpeg(Image.new("RGB", (60, 40), "red"), exif=exif)
    converted = images.convert(data)
    assert (converted.width, converted.height) == (40, 60)
    assert converted.jpeg is not None


def test_animated_gif_keeps_its_first_frame():
    with Image.open(HOSTILE / "iss634.gif") as img:
        first = np.asarray(img.convert("RGB"), np.float32)
    _, stored = _stored((HOSTILE / "iss634.gif").read_bytes())
    assert np.abs(_pixels(stored) - first).mean() < 6


def test_cmyk_jpeg_is_converted_not_passed_through():
    converted, stored = _stored((HOSTILE / "pil_sample_cmyk.jpg").read_bytes())
    assert converted.jpeg is not None
    assert _pixels(stored).shape[-1] == 3


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (16, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")  # A true 16-bit grayscale PNG.
    _, stored = _stored(buffer.getvalue())
    row = _pixels(stored)[8, :, 0]
    assert row[:4].mean() < 15 and row[-4:].mean() > 240
    assert 100 < row.mean() < 155  # A plain convert("RGB") would clip most of it to 255.


def test_plain_upright_rgb_jpeg_is_stored_untouched():
    converted = images.convert((HOSTILE / "flower.jpg").read_bytes())
    assert converted.jpeg is None
    assert (converted.width, converted.height) == (480, 360)


def test_resize_keeps_aspect_and_never_upscales():
    big = _jpeg(Image.new("RGB", (1600, 1200), "blue"))
    converted = images.convert(big, short_side=256)
    assert (converted.width, converted.height) == (341, 256)
    small = _jpeg(Image.new("RGB", (200, 100), "blue"))
    converted = images.convert(small, short_side=256)
    assert (converted.width, converted.height, converted.jpeg) == (200, 100, None)


def test_draft_decode_is_close_to_a_full_decode_and_resize():
    rng = np.random.default_rng(0)
    blotches = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    photo = blotches.resize((1600, 1200), Image.Resampling.BICUBIC)
    _, stored = _stored(_jpeg(photo), short_side=256)
    reference = np.asarray(photo.resize((341, 256), Image.Resampling.LANCZOS), np.float32)
    assert np.abs(_pixels(stored) - reference).mean() < 4


def test_same_pixels_in_other_bytes_hash_equal():
    img = Image.open(HOSTILE / "hopper.bmp").convert("RGB")
    as_png, as_bmp = io.BytesIO(), io.BytesIO()
    img.save(as_png, format="PNG", compress_level=9)
    img.save(as_bmp, format="BMP")
    assert (
        images.convert(as_png.getvalue()).pixel_hash == images.convert(as_bmp.getvalue()).pixel_hash
    )
    assert images.convert(as_png.getvalue()).pixel_hash != images.convert(_jpeg(img)).pixel_hash


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 30_000])  # 100 MP (over the limit), 900 MP (bomb).
def test_decompression_bombs_are_unreadable_not_decoded(side):
    with pytest.raises(images.UnreadableImageError):
        images.convert(_png_header_only(side, side))
