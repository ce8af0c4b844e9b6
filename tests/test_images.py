"""tfds_oregon.images: every hostile file is either skipped or stored as an upright RGB JPEG."""

from __future__ import annotations

import io
import itertools
import pathlib
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from benchmarks import near_duplicates
from tfds_oregon import images, splits

HOSTILE = pathlib.Path(__file__).parent / "data" / "hostile"
REAL = pathlib.Path(__file__).parent / "data" / "real"
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
    assert images.pixel_hash(as_png.getvalue()) == images.pixel_hash(as_bmp.getvalue())
    assert images.pixel_hash(as_png.getvalue()) != images.pixel_hash(_jpeg(img))


def test_lossless_copy_of_a_large_jpeg_has_its_identity_in_every_config():
    """1.0.0 hashed the draft-decoded pixels, so a JPEG whose shorter side is >= 512 never
    matched its own PNG copy in resized_256."""
    photo = _photo((1024, 768))
    jpeg = _jpeg(photo)
    with Image.open(io.BytesIO(jpeg)) as decoded:
        as_png = io.BytesIO()
        decoded.convert("RGB").save(as_png, format="PNG")  # The JPEG's exact pixels.
    assert images.pixel_hash(jpeg) == images.pixel_hash(as_png.getvalue())
    hashes = {
        (name, short_side): images.convert(data, short_side).phash
        for name, data in [("jpeg", jpeg), ("png", as_png.getvalue())]
        for short_side in (None, 256)
    }
    assert hashes[("jpeg", None)] == hashes[("jpeg", 256)]  # Identity ignores the config.
    assert hashes[("png", None)] == hashes[("png", 256)]
    assert splits.hamming(hashes[("jpeg", 256)], hashes[("png", 256)]) <= 2


def _photo(size: tuple[int, int]) -> Image.Image:
    """A real photo (red fox, tests/data/real) at `size`."""
    with Image.open(REAL / "red_fox.jpg") as img:
        return img.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 30_000])  # 100 MP (over the limit), 900 MP (bomb).
def test_too_many_pixels_is_refused_from_the_header(side):
    """The file has a header and no pixel data: a decode would fail as truncated, so the
    reason shows the size was refused before any decoding."""
    with pytest.raises(images.UnreadableImageError, match="too many pixels"):
        images.convert(_png_header_only(side, side))


def test_extreme_aspect_ratio_is_unreadable():
    buffer = io.BytesIO()
    Image.new("L", (70_000, 2), 128).save(buffer, format="PNG")  # Wider than a JPEG can be.
    with pytest.raises(images.UnreadableImageError, match="extreme aspect ratio: 70000x2"):
        images.convert(buffer.getvalue(), 256)


def test_120_megapixel_jpeg_is_kept_in_both_configs_at_reduced_scale():
    buffer = io.BytesIO()
    Image.new("L", (13_000, 9_300), 128).save(buffer, format="JPEG", quality=50)
    full = images.convert(buffer.getvalue(), None)
    resized = images.convert(buffer.getvalue(), 256)
    assert full.source_pixels == resized.source_pixels == 13_000 * 9_300
    assert (full.width, full.height) == (6_500, 4_650)  # 1/2 scale: under MAX_PIXELS.
    assert full.width * full.height <= images.MAX_PIXELS
    assert (resized.width, resized.height) == (358, 256)
    assert full.phash == resized.phash


@pytest.mark.parametrize(
    "size, short_side, scale",
    [((2400, 1600), 256, 4), ((2400, 1600), None, 1), ((600, 400), 256, 1),
     ((13_000, 9_300), None, 2), ((13_000, 9_300), 256, 8)],
)  # fmt: skip
def test_jpeg_scale_is_the_draft_step_that_still_covers_the_target(size, short_side, scale):
    assert images.jpeg_scale(*size, short_side) == scale


def test_reasons_are_short_and_the_same_every_time():
    reasons = set()
    for _ in range(2):
        with pytest.raises(images.UnreadableImageError) as error:
            images.convert(b"<html>not an image</html>")
        reasons.add(str(error.value))
    assert reasons == {"not an image Pillow can identify"}
    with pytest.raises(images.UnreadableImageError) as error:
        images.convert((HOSTILE / "truncated_jpeg.jpg").read_bytes())
    assert "0x" not in str(error.value) and len(str(error.value)) < 200


def test_public_header_checks():
    images.check_pixel_count(100, 100, max_pixels=10_000)
    with pytest.raises(images.UnreadableImageError, match="too many pixels"):
        images.check_pixel_count(101, 100, max_pixels=10_000)
    images.check_aspect_ratio(2500, 100)
    with pytest.raises(images.UnreadableImageError, match="aspect"):
        images.check_aspect_ratio(2600, 100)


@pytest.mark.parametrize("name", sorted(n for n in near_duplicates.VARIANTS if "5 %" not in n))
def test_near_duplicate_variants_of_real_photos_are_within_the_threshold(name, small_photos):
    """Recall of the chosen threshold on the variants the dataset card reports (crops of 5 %
    are not required: the card gives their lower recall)."""
    make = near_duplicates.VARIANTS[name]
    for photo_name, photo in small_photos.items():
        distance = splits.hamming(
            images.perceptual_hash(photo), images.perceptual_hash(make(photo))
        )
        assert distance <= splits.NEAR_DUPLICATE_BITS, (photo_name, distance)


def test_distinct_real_photos_are_not_near_duplicates(small_photos):
    hashes = {n: images.perceptual_hash(p) for n, p in small_photos.items()}
    for a, b in itertools.combinations(hashes, 2):
        assert splits.hamming(hashes[a], hashes[b]) > splits.NEAR_DUPLICATE_BITS, (a, b)


@pytest.fixture(scope="module")
def small_photos() -> dict[str, Image.Image]:
    """The real photos, at most 400 px wide (the hash looks at 32x32 anyway)."""
    photos = near_duplicates.load_photos()
    for photo in photos.values():
        photo.thumbnail((400, 400))
    return photos
