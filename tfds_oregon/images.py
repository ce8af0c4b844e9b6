"""Turns any image file of the archive into an upright 3-channel RGB JPEG, and identifies it.

Scraped photos come as JPEG, PNG, GIF (some animated), BMP and MPO, whatever their extension
says, in modes from 1-bit to 16-bit, CMYK and palettes with transparency, some rotated by an
EXIF tag, a few of absurd size. Public building blocks (also used by `trainer.predict`):

- `open_image`: opens lazily and checks the header (pixel count, aspect ratio) BEFORE any pixel
  is decoded, for every format;
- `check_pixel_count`, `check_aspect_ratio`: those header checks on their own;
- `decode_upright`: decodes (JPEGs at the reduced DCT scale that still covers a target, the
  "draft" step), applies `apply_exif_orientation`, and makes it RGB (`to_rgb`);
- `perceptual_hash`: a 64-bit DCT hash of what the photo looks like.

`convert` is what the builder calls per file. A photo's identity (its perceptual hash) comes
from one decode whose scale depends only on the file, never on the config being built, so
`full` and `resized_256` find the same duplicates and split the same way.

Pure Pillow, numpy and hashlib: all release the GIL while they decode, resize, encode and hash,
so a thread pool uses every core without pickling megabytes between processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import re
import struct
import warnings

import numpy as np
from PIL import Image

JPEG_QUALITY = 92
# Pillow's own decompression-bomb guard (~89 MP). Non-JPEG files above it are unreadable; JPEGs
# above it are decoded at the DCT scale (1/2, 1/4, 1/8) that brings them under it.
MAX_PIXELS = 89_478_485
# A JPEG of up to 8x8 times as many pixels still decodes under MAX_PIXELS at 1/8 scale, but
# Pillow refuses to even open a file of more than twice its limit (DecompressionBombError), so
# that is our bound too: the same in every config.
MAX_JPEG_PIXELS = 2 * MAX_PIXELS
# Photos are at most panoramas (~10:1); 70000x2 is not a photo, and no JPEG can hold a side of
# more than 65,535 pixels (ITU T.81, B.2.2).
MAX_ASPECT_RATIO = 25.0
# The identity decode: JPEGs are decoded at the smallest DCT scale whose shorter side is still
# at least this, whatever the config (so `resized_256` needs no second decode).
IDENTITY_SHORT_SIDE = 256
_JPEG_SCALES = (8, 4, 2, 1)  # libjpeg's DCT scaling steps Pillow's draft mode offers.

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
    MemoryError,
    Image.DecompressionBombError,
)
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # "<_io.BytesIO object at 0x7f...>"

# Our header checks replace Pillow's warning (it would print once per large photo).
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class UnreadableImageError(ValueError):
    """The bytes are not an image we can decode: the message is a short, stable reason."""


def reason(error: BaseException) -> str:
    """A short reason for a decode error, the same on every run (no memory addresses)."""
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image Pillow can identify"
    if isinstance(error, Image.DecompressionBombError):  # Pillow's own check, in Image.open.
        return f"too many pixels: more than {MAX_JPEG_PIXELS}"
    text = _ADDRESS.sub("<data>", " ".join(str(error).split()))
    return f"{type(error).__name__}: {text}"[:200]


@dataclasses.dataclass(frozen=True)
class ConvertedImage:
    """One decoded source image, ready to store.

    Attributes:
      jpeg: the RGB JPEG to store, or None when the source bytes are already exactly that (an
        upright baseline RGB JPEG that needs no resize), so they are stored untouched.
      phash: 64-bit perceptual hash (`perceptual_hash`) of the identity decode.
      source_pixels: width x height of the file as its header says (its true resolution).
      width, height: size of the stored image.
    """

    jpeg: bytes | None
    phash: int
    source_pixels: int
    width: int
    height: int


def check_pixel_count(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raises UnreadableImageError when width x height is above `max_pixels`."""
    if width * height > max_pixels:
        raise UnreadableImageError(f"too many pixels: {width}x{height} > {max_pixels}")


def check_aspect_ratio(width: int, height: int, max_ratio: float = MAX_ASPECT_RATIO) -> None:
    """Raises UnreadableImageError for an empty image or one longer than `max_ratio`:1."""
    if min(width, height) < 1 or max(width, height) / min(width, height) > max_ratio:
        raise UnreadableImageError(f"extreme aspect ratio: {width}x{height}")


def open_image(data: bytes) -> Image.Image:
    """Opens `data` lazily (header only) and checks its size before any pixel is decoded.

    JPEGs may have up to MAX_JPEG_PIXELS (`decode_upright` decodes them at a reduced scale),
    every other format at most MAX_PIXELS.

    Raises:
      UnreadableImageError: not an image, too many pixels, or an extreme aspect ratio.
    """
    try:
        img = Image.open(io.BytesIO(data))
    except _DECODE_ERRORS as e:
        raise UnreadableImageError(reason(e)) from e
    try:
        check_aspect_ratio(*img.size)
        check_pixel_count(*img.size, MAX_JPEG_PIXELS if img.format == "JPEG" else MAX_PIXELS)
    except UnreadableImageError:
        img.close()
        raise
    return img


def jpeg_scale(width: int, height: int, short_side: int | None) -> int:
    """The DCT reduction (1, 2, 4 or 8) to decode a JPEG at.

    The largest one that keeps the shorter side >= `short_side` (None: full resolution), but at
    least the one that brings the image under MAX_PIXELS.
    """
    wanted = 1
    if short_side:
        wanted = next(d for d in _JPEG_SCALES if min(width, height) // d >= short_side or d == 1)
    needed = next(d for d in reversed(_JPEG_SCALES) if width * height <= MAX_PIXELS * d * d)
    return max(wanted, needed)


@dataclasses.dataclass(frozen=True)
class Decoded:
    """An upright RGB decode of a file, and what its header said.

    Attributes:
      image: upright RGB pixels.
      plain_jpeg: the file is an upright RGB JPEG (its bytes can be stored as they are when no
        resize is needed).
      source_size: (width, height) in the header, before orientation: the true resolution.
      scale: the DCT reduction the decode used (1 = full resolution).
    """

    image: Image.Image
    plain_jpeg: bool
    source_size: tuple[int, int]
    scale: int


def decode_upright(data: bytes, short_side: int | None = None) -> Decoded:
    """Decodes any image file to an upright RGB image.

    Args:
      data: the file's bytes, whatever the format (the extension is not trusted).
      short_side: JPEGs are decoded at the smallest DCT scale whose shorter side is still at
        least this (None: full resolution); other formats always at full resolution.

    Raises:
      UnreadableImageError: the bytes cannot be decoded in full.
    """
    with open_image(data) as img:
        try:
            source_size, source_mode, scale = img.size, img.mode, 1
            if img.format == "JPEG":
                scale = jpeg_scale(*img.size, short_side)
                if scale > 1:
                    img.draft("RGB", (img.width // scale, img.height // scale))
            img.load()  # Decode every pixel now: lazily opened truncated files fail only here.
            check_pixel_count(*img.size)
            orientation = _orientation(img)
            plain = img.format == "JPEG" and source_mode == "RGB" and orientation == 1
            rgb = apply_exif_orientation(to_rgb(img), orientation)
        except _DECODE_ERRORS as e:
            raise UnreadableImageError(reason(e)) from e
    return Decoded(rgb, plain, source_size, scale)


def convert(data: bytes, short_side: int | None = None) -> ConvertedImage:
    """Decodes any image file; returns what to store (an upright RGB JPEG) and its identity.

    One decode at the identity scale serves `resized_256`; `full` decodes again at full
    resolution only what it must re-encode (a plain upright RGB JPEG is stored as it is).

    Args:
      data: the file's bytes.
      short_side: if set, images whose shorter side is longer are shrunk to it, keeping the
        aspect ratio; smaller ones are kept as they are, never upscaled.

    Raises:
      UnreadableImageError: the bytes cannot be decoded in full.
    """
    identity = decode_upright(data, IDENTITY_SHORT_SIDE)
    phash = perceptual_hash(identity.image)
    source_pixels = identity.source_size[0] * identity.source_size[1]
    fits = short_side is not None and min(identity.source_size) <= short_side
    if identity.plain_jpeg and (short_side is None or fits) and source_pixels <= MAX_PIXELS:
        width, height = identity.source_size  # Stored untouched: no resize needed.
        return ConvertedImage(None, phash, source_pixels, width, height)
    if short_side is not None and short_side <= IDENTITY_SHORT_SIDE or identity.scale == 1:
        stored = identity.image
    else:
        stored = decode_upright(data, short_side).image
    resized = resize_short_side(stored, short_side) if short_side else stored
    return ConvertedImage(encode_jpeg(resized), phash, source_pixels, *resized.size)


def pixel_hash(data: bytes) -> str:
    """Digest of the upright RGB pixels at full resolution (JPEGs over MAX_PIXELS: reduced).

    Equal for the same photo saved in other bytes (other metadata, PNG compression, BMP).
    """
    rgb = decode_upright(data, None).image
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{rgb.width}x{rgb.height}".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright). A corrupt EXIF block does not spoil a good photo."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:
        return 1
    return value if value in range(1, 9) else 1


def apply_exif_orientation(img: Image.Image, orientation: int | None = None) -> Image.Image:
    """Turns `img` upright given its EXIF orientation (1-8; 1 and unknown: unchanged).

    Like `ImageOps.exif_transpose`, without editing the EXIF and without failing on a corrupt
    EXIF block. `orientation` None reads it from `img` (`exif_orientation`); pass it when
    `img` is a converted copy that lost the original's EXIF.
    """
    if orientation is None:
        orientation = exif_orientation(img)
    method = _TRANSPOSE.get(orientation)
    return img if method is None else img.transpose(method)


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag of an opened image (1 when absent, unknown or unreadable)."""
    return _orientation(img)


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


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: `m @ x` is scipy.fftpack.dct(x, norm='ortho')."""
    k, i = np.mgrid[0:n, 0:n]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


_DCT_32 = _dct_matrix(32)


def perceptual_hash(img: Image.Image) -> int:
    """64-bit DCT perceptual hash ("pHash"), as `imagehash.phash` computes it.

    Grayscale, 32x32 Lanczos, 2-D DCT, the 8x8 lowest frequencies, one bit per coefficient
    above their median (Zauner 2010, "Implementation and Benchmarking of Perceptual Image Hash
    Functions"; JohannesBuchner/imagehash `phash`). Robust to re-encoding, rescaling and
    colour removal; two photos are near-duplicates when few of the 64 bits differ.
    """
    # reducing_gap: a box reduction by an integer factor first, then Lanczos over the last
    # 2x or less: 4-8x cheaper from a 600x400 decode, and the same low frequencies.
    small = img.convert("L").resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0)
    coefficients = _DCT_32 @ np.asarray(small, np.float64) @ _DCT_32.T
    low = coefficients[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


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
