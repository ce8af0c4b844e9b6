"""Turns any image file of the archive into an upright 3-channel RGB JPEG.

Scraped photos come as JPEG, PNG, GIF (some animated), BMP and MPO, whatever their extension
says, in modes from 1-bit to 16-bit, CMYK and palettes with transparency, some rotated by an
EXIF tag. `convert` decodes each one fully (Pillow opens lazily: a truncated file only fails
when its pixels are read), makes it RGB and upright, optionally shrinks it, and hashes the
pixels so that the same photo saved twice with different bytes is recognised.

Pure Pillow and hashlib: both release the GIL while they decode, resize, encode and hash, so a
thread pool uses every core without pickling megabytes between processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import struct

import numpy as np
from PIL import Image

JPEG_QUALITY = 92
# Pillow's own guard against decompression bombs (~89 MP). JPEGs above it are decoded at a
# reduced DCT scale (draft mode) instead; other formats above it are skipped as unreadable.
MAX_PIXELS = 89_478_485

# What Pillow's plugins raise on malformed input (the same list its own fuzzers accept as
# "handled"): any of these means the file is unreadable, never that the build should stop.
_DECODE_ERRORS = (
    OSError,  # Includes UnidentifiedImageError and "image file is truncated".
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    Image.DecompressionBombError,
)
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATION_TAG = 0x0112


class UnreadableImageError(ValueError):
    """The bytes are not an image Pillow can fully decode (truncated, corrupt, too large)."""


@dataclasses.dataclass(frozen=True)
class ConvertedImage:
    """One decoded source image, ready to store.

    Attributes:
      jpeg: the RGB JPEG to store, or None when the source bytes are already exactly that (an
        upright baseline RGB JPEG that needs no resize), so they are stored untouched.
      pixel_hash: hex digest of the upright RGB pixels as decoded (before any resize): equal for
        the same photo saved with different bytes (other metadata, other PNG compression).
      width, height: size of the stored image.
    """

    jpeg: bytes | None
    pixel_hash: str
    width: int
    height: int


def convert(data: bytes, short_side: int | None = None) -> ConvertedImage:
    """Decodes any image file and returns what to store: an upright RGB JPEG.

    Args:
      data: the file's bytes, whatever the format (the extension is not trusted).
      short_side: if set, images whose shorter side is longer are shrunk to it, keeping the
        aspect ratio (JPEGs are decoded at a reduced scale first); smaller ones are kept as
        they are, never upscaled.

    Returns:
      The converted image.

    Raises:
      UnreadableImageError: the bytes cannot be decoded in full.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            source_format, source_mode = img.format, img.mode
            drafted = _draft_jpeg(img, short_side)
            img.load()  # Decode every pixel now: lazily opened truncated files fail only here.
            _check_size(img)
            orientation = _orientation(img)
            rgb = to_rgb(img)
    except _DECODE_ERRORS as e:
        raise UnreadableImageError(f"{type(e).__name__}: {e}") from e
    if orientation != 1:
        rgb = _transpose(rgb, orientation)
    pixel_hash = hash_pixels(rgb)
    resized = resize_short_side(rgb, short_side) if short_side else rgb
    store_as_is = (
        source_format == "JPEG"
        and source_mode == "RGB"
        and orientation == 1
        and not drafted
        and resized is rgb
    )
    jpeg = None if store_as_is else encode_jpeg(resized)
    return ConvertedImage(jpeg, pixel_hash, resized.width, resized.height)


def _draft_jpeg(img: Image.Image, short_side: int | None) -> bool:
    """Asks a JPEG to decode at the smallest DCT scale (1/2..1/8) still big enough.

    Returns whether a reduced scale was chosen. Only JPEG supports this; it makes the decode of
    a 12 MP photo for a 256-pixel target about 8x cheaper and bounds the memory of huge ones.
    """
    if img.format != "JPEG":
        return False
    width, height = img.size
    scale = 1.0
    if short_side and min(width, height) > short_side:
        scale = short_side / min(width, height)
    if width * height * scale * scale > MAX_PIXELS:
        scale = math.sqrt(MAX_PIXELS / (width * height))
    if scale >= 1.0:
        return False
    requested = (math.ceil(width * scale), math.ceil(height * scale))
    return img.draft("RGB", requested) is not None and img.size != (width, height)


def _check_size(img: Image.Image) -> None:
    if img.width * img.height > MAX_PIXELS:
        raise Image.DecompressionBombError(
            f"{img.width}x{img.height} is more than {MAX_PIXELS} pixels"
        )


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright). A corrupt EXIF block does not spoil a good photo."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:
        return 1
    return value if value in range(1, 9) else 1


def _transpose(img: Image.Image, orientation: int) -> Image.Image:
    """Applies an EXIF orientation (see ImageOps.exif_transpose, which also edits the EXIF)."""
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }[orientation]
    return img.transpose(method)


def to_rgb(img: Image.Image) -> Image.Image:
    """Converts a loaded image of any mode to RGB; transparent pixels become white.

    The first frame of an animation is the one already loaded. 16-bit and float images are
    scaled to 8 bits instead of clipped (a plain convert would turn them white).
    """
    if img.mode in _SIXTEEN_BIT_MODES:
        img = _to_8bit_gray(img)
    if img.mode not in _ALPHA_MODES and "transparency" in img.info:
        # Palette or single-colour transparency: only an RGBA convert honours it.
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    pixels = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(pixels, 0, 255)
    else:
        scaled = np.clip(pixels.astype(np.int64) >> 8, 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def hash_pixels(img: Image.Image) -> str:
    """A digest of an RGB image's size and pixels."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{img.width}x{img.height}".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()


def resize_short_side(img: Image.Image, short_side: int) -> Image.Image:
    """Shrinks so that the shorter side is `short_side`, keeping the aspect ratio.

    Returns `img` itself when it is already that small (never upscales).
    """
    width, height = img.size
    if min(width, height) <= short_side:
        return img
    scale = short_side / min(width, height)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    # Antialiased Lanczos: after a draft decode the remaining reduction is under 2x.
    return img.resize(size, Image.Resampling.LANCZOS)


def encode_jpeg(img: Image.Image) -> bytes:
    """Encodes an RGB image as a baseline JPEG."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
