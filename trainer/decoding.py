"""Encoded image bytes -> what evaluation sees, with TensorFlow ops only (no py_function).

The dataset stores each photo as the builder's `tfds_oregon.images.convert` made it: an upright
RGB JPEG (EXIF orientation applied, transparency composited onto white, re-encoded at quality
`images.JPEG_QUALITY`), or the source bytes untouched when they already are an upright RGB JPEG.
`preprocess_image_bytes` does the same conversion inside the graph and then runs evaluation's
own `input_pipeline.preprocess_for_eval`, so a served photo is framed, decoded and scaled
exactly like the stored copy of that photo in the test split:

  * upright 3-channel JPEGs: the bytes go straight to `preprocess_for_eval` (which decodes
    only the evaluation crop, `decode_and_crop_jpeg`), as the builder stores them untouched;
  * everything else (EXIF-rotated, grayscale or CMYK JPEGs, MPO, PNG, GIF, BMP, WebP): decoded
    like Pillow decodes it (JPEG with libjpeg's accurate integer DCT, Pillow's default),
    turned upright, alpha composited onto white with Pillow's rounding, re-encoded as the
    builder's JPEG (same libjpeg settings: quality 92, 4:2:0), then `preprocess_for_eval`.
    The re-encode costs a few ms and makes the pixels identical to the stored copy's.

The EXIF orientation is read from the first APP1 "Exif" segment's IFD0 (tag 0x0112, TIFF
byte order "II" or "MM"), like Pillow's `getexif()`; anything malformed reads as 1 (upright).

Before anything is decoded the header's declared size is checked (JPEG: SOF via
`extract_jpeg_shape`; PNG: IHDR; GIF: logical screen; BMP: info header; WebP: VP8/VP8L/VP8X):
more than `max_pixels` pixels fails that request with InvalidArgumentError.
"""

from __future__ import annotations

import tensorflow as tf

from tfds_oregon import images
from trainer import input_pipeline

# The builder's own limit: a file the dataset could not hold is not served either. Worst-case
# memory of one request at the limit is about 10 bytes per pixel (RGBA, 16-bit composite, RGB).
MAX_PIXELS = images.MAX_PIXELS
ORIENTATION_TAG = 0x0112
_PAD = b"\0" * 32  # Appended before header parsing so that reads past the end give zeros.
_MAX_SEGMENTS = 64  # JPEG marker segments scanned for APP1/APP2 before giving up.
_MAX_IFD_ENTRIES = 64  # Pillow reads all; orientation is within the first few in practice.
(_JPEG, _PNG, _GIF, _BMP, _WEBP) = range(5)


def _bytes(data: tf.Tensor, pos, length: int) -> tf.Tensor:
    """`length` bytes of `data` from `pos` as int64 (`data` must be padded past `pos + length`)."""
    raw = tf.strings.substr(data, tf.cast(pos, tf.int32), length)
    return tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.int64)


def _uint(data: tf.Tensor, pos, length: int, little_endian) -> tf.Tensor:
    """An unsigned integer of `length` bytes at `pos`, in either byte order."""
    values = _bytes(data, pos, length)
    weights = tf.constant([256**i for i in range(length)], tf.int64)
    return tf.where(
        little_endian,
        tf.reduce_sum(values * weights),
        tf.reduce_sum(values * tf.reverse(weights, [0])),
    )


def image_format(data: tf.Tensor) -> tf.Tensor:
    """Index of the format from the magic bytes (_JPEG.._WEBP), or -1 for anything else."""
    magic = tf.strings.substr(tf.strings.join([data, _PAD]), 0, 12)
    checks = [
        tf.strings.substr(magic, 0, 3) == b"\xff\xd8\xff",
        tf.strings.substr(magic, 0, 8) == b"\x89PNG\r\n\x1a\n",
        (tf.strings.substr(magic, 0, 6) == b"GIF87a")
        | (tf.strings.substr(magic, 0, 6) == b"GIF89a"),
        tf.strings.substr(magic, 0, 2) == b"BM",
        (tf.strings.substr(magic, 0, 4) == b"RIFF") & (tf.strings.substr(magic, 8, 4) == b"WEBP"),
    ]
    index = tf.constant(-1)
    for i, check in reversed(list(enumerate(checks))):
        index = tf.where(check, i, index)
    return index


def header_size(data: tf.Tensor, fmt: tf.Tensor) -> tf.Tensor:
    """[height, width] (int64) as the header declares them, without decoding any pixel."""
    padded = tf.strings.join([data, _PAD])

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def png():  # IHDR: big-endian width then height at byte 16.
        return tf.stack([_uint(padded, 20, 4, False), _uint(padded, 16, 4, False)])

    def gif():  # Logical screen descriptor: little-endian width then height at byte 6.
        return tf.stack([_uint(padded, 8, 2, True), _uint(padded, 6, 2, True)])

    def bmp():  # BITMAPINFOHEADER: int32 width and height (negative height = top-down rows).
        height = _uint(padded, 22, 4, True)
        height = tf.where(height >= 2**31, 2**32 - height, height)
        return tf.stack([height, _uint(padded, 18, 4, True)])

    def webp():
        chunk = tf.strings.substr(padded, 12, 4)
        # VP8X: 24-bit canvas width-1 and height-1 at 24 (RFC 9649, section 2.7).
        extended = tf.stack([_uint(padded, 27, 3, True) + 1, _uint(padded, 24, 3, True) + 1])
        # VP8 (lossy): 14-bit width and height after the frame start code at 26 (RFC 6386 9.1).
        lossy = tf.stack([_uint(padded, 28, 2, True) % 16384, _uint(padded, 26, 2, True) % 16384])
        # VP8L: 14-bit width-1 and height-1 packed after the 0x2f signature at 21 (RFC 9649 3.2).
        bits = _uint(padded, 21, 4, True)
        lossless = tf.stack([(bits // 16384) % 16384 + 1, bits % 16384 + 1])
        return tf.where(chunk == b"VP8X", extended, tf.where(chunk == b"VP8L", lossless, lossy))

    return tf.switch_case(fmt, [jpeg, png, gif, bmp, webp])


def check_size(data: tf.Tensor, fmt: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """An assert op failing (InvalidArgumentError) for unknown formats or too many pixels."""
    known = tf.debugging.Assert(
        fmt >= 0, ["not a JPEG, PNG, GIF, BMP or WebP image"], name="check_format"
    )
    with tf.control_dependencies([known]):
        size = header_size(data, tf.maximum(fmt, 0))
    pixels = size[0] * size[1]
    return tf.debugging.Assert(
        pixels <= max_pixels,
        ["image header declares", size[1], "x", size[0], "pixels, over the limit", max_pixels],
        name="check_pixels",
    )


def _scan_jpeg_segments(padded: tf.Tensor, length: tf.Tensor):
    """Walks the marker segments before the first scan: (Exif TIFF offset or -1, end, is MPO)."""

    def step(pos, exif, exif_end, mpo, done):
        pos = tf.minimum(pos, length)  # A bogus segment length jumps past the end: stop there.
        header = _bytes(padded, pos, 4)
        marker = header[1]
        seg_length = header[2] * 256 + header[3]
        stop = (header[0] != 0xFF) | (marker == 0xDA) | (marker == 0xD9) | (pos + 4 > length)
        tag = tf.strings.substr(padded, tf.cast(pos + 4, tf.int32), 6)
        is_exif = (marker == 0xE1) & (tag == b"Exif\0\0") & (exif < 0) & ~stop
        is_mpf = (marker == 0xE2) & (tf.strings.substr(tag, 0, 4) == b"MPF\0") & ~stop
        standalone = (marker == 0xD8) | (marker == 0x01) | ((marker >= 0xD0) & (marker <= 0xD7))
        # A fill byte (0xFF before a marker) advances by one; standalone markers have no length.
        next_pos = tf.where(
            marker == 0xFF, pos + 1, tf.where(standalone, pos + 2, pos + 2 + seg_length)
        )
        return (
            next_pos,
            tf.where(is_exif, pos + 10, exif),
            tf.where(is_exif, pos + 2 + seg_length, exif_end),
            mpo | is_mpf,
            stop,
        )

    start = (tf.constant(2, tf.int64), tf.constant(-1, tf.int64), tf.constant(0, tf.int64))
    _, exif, exif_end, mpo, _ = tf.while_loop(
        lambda pos, exif, exif_end, mpo, done: ~done,
        step,
        (*start, tf.constant(False), tf.constant(False)),
        maximum_iterations=_MAX_SEGMENTS,
    )
    return exif, exif_end, mpo


def _orientation_from_tiff(padded: tf.Tensor, tiff: tf.Tensor, end: tf.Tensor) -> tf.Tensor:
    """Tag 0x0112 of IFD0 of the TIFF structure at `tiff` (inside [tiff, end)), else 1."""
    order = tf.strings.substr(padded, tf.cast(tiff, tf.int32), 2)
    little = order == b"II"
    valid = little | (order == b"MM")
    ifd = tiff + _uint(padded, tiff + 4, 4, little)
    valid &= ifd + 2 <= end
    ifd = tf.where(valid, ifd, tiff)  # Only read inside the segment.
    count = tf.minimum(_uint(padded, ifd, 2, little), _MAX_IFD_ENTRIES)
    valid &= ifd + 2 + 12 * count <= end
    count = tf.where(valid, count, 0)
    entries = tf.reshape(_bytes(padded, ifd + 2, 12 * _MAX_IFD_ENTRIES), [_MAX_IFD_ENTRIES, 12])
    entries = entries[: tf.cast(count, tf.int32)]

    def field(column: int, length: int) -> tf.Tensor:
        values = entries[:, column : column + length]
        weights = tf.constant([256**i for i in range(length)], tf.int64)
        weights = tf.where(little, weights, tf.reverse(weights, [0]))
        return tf.reduce_sum(values * weights, axis=1)

    tags, types = field(0, 2), field(2, 2)
    # The value sits in the entry itself: BYTE (1) in its first byte, SHORT (3) in its first
    # two, LONG (4) in all four, in the file's byte order.
    values = tf.where(types == 3, field(8, 2), tf.where(types == 4, field(8, 4), entries[:, 8]))
    found = (tags == ORIENTATION_TAG) & ((types == 1) | (types == 3) | (types == 4))
    matches = tf.boolean_mask(values, found)
    value = tf.cond(tf.size(matches) > 0, lambda: matches[0], lambda: tf.constant(1, tf.int64))
    # images._orientation: values outside 1..8 mean upright.
    return tf.where((value >= 1) & (value <= 8), value, 1)


def jpeg_orientation(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(EXIF orientation 1..8, whether the file is a multi-picture MPO) of a JPEG."""
    padded = tf.strings.join([data, b"\0" * (12 * _MAX_IFD_ENTRIES + 16)])
    length = tf.cast(tf.strings.length(data), tf.int64)
    exif, exif_end, mpo = _scan_jpeg_segments(padded, length)
    orientation = tf.cond(
        exif >= 0,
        lambda: _orientation_from_tiff(padded, exif, tf.minimum(exif_end, length)),
        lambda: tf.constant(1, tf.int64),
    )
    return orientation, mpo


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns an [H, W, C] image upright for EXIF orientation 1..8 (as Pillow's exif_transpose)."""
    transposed = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    branches = [
        lambda: image,  # 1: upright
        lambda: tf.image.flip_left_right(image),  # 2: mirrored
        lambda: tf.image.rot90(image, 2),  # 3: upside down
        lambda: tf.image.flip_up_down(image),  # 4: mirrored upside down
        transposed,  # 5: TRANSPOSE
        lambda: tf.image.rot90(image, 3),  # 6: ROTATE_270 (90 degrees clockwise)
        lambda: tf.image.rot90(transposed(), 2),  # 7: TRANSVERSE
        lambda: tf.image.rot90(image, 1),  # 8: ROTATE_90 (counter-clockwise)
    ]
    result = tf.switch_case(tf.cast(orientation - 1, tf.int32), branches)
    result.set_shape([None, None, image.shape[-1]])
    return result


def composite_on_white(rgba: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 4] -> uint8 [H, W, 3]: Pillow's alpha_composite onto opaque white.

    Pillow rounds (c * a + 255 * (255 - a)) / 255 to the nearest integer; the sum is at most
    255 * 255, so 16-bit integer arithmetic is exact and needs 2 bytes per value.
    """
    color = tf.cast(rgba[..., :3], tf.uint16)
    alpha = tf.cast(rgba[..., 3:], tf.uint16)
    mixed = color * alpha + 255 * (255 - alpha) + 127
    return tf.cast(mixed // 255, tf.uint8)


def _any_channels_to_rgb(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 1, 3 or 4] -> [H, W, 3] (gray repeated, alpha composited onto white)."""
    channels = tf.shape(image)[-1]
    return tf.case(
        [
            (channels == 4, lambda: composite_on_white(tf.ensure_shape(image, [None, None, 4]))),
            (channels == 1, lambda: tf.tile(image[..., :1], [1, 1, 3])),
        ],
        default=lambda: tf.ensure_shape(image, [None, None, 3]),
    )


def decode_like_builder(data: tf.Tensor, fmt: tf.Tensor) -> tf.Tensor:
    """Any supported image -> upright uint8 RGB [H, W, 3], transparency composited onto white."""

    def jpeg():
        orientation, _ = jpeg_orientation(data)
        # Pillow decodes with libjpeg's default, the accurate integer DCT (JDCT_ISLOW).
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        return apply_orientation(image, orientation)

    def png():
        return composite_on_white(tf.io.decode_png(data, channels=4))

    def gif():  # The first frame, as the builder stores it; the others are never decoded.
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.ensure_shape(image, [None, None, 3])

    def bmp():
        return _any_channels_to_rgb(tf.io.decode_bmp(data))

    def webp():  # Its decoder gives the file's own channel count; first frame only.
        image = tf.io.decode_image(data, expand_animations=False)
        return _any_channels_to_rgb(tf.ensure_shape(image, [None, None, None]))

    image = tf.switch_case(fmt, [jpeg, png, gif, bmp, webp])
    image.set_shape([None, None, 3])
    return image


def stored_as_is(data: tf.Tensor, fmt: tf.Tensor) -> tf.Tensor:
    """Whether the builder stores these bytes untouched: an upright 3-channel, non-MPO JPEG."""

    def jpeg():
        orientation, mpo = jpeg_orientation(data)
        channels = tf.image.extract_jpeg_shape(data)[2]
        return (orientation == 1) & ~mpo & (channels == 3)

    return tf.cond(fmt == _JPEG, jpeg, lambda: tf.constant(False))


# Every branch and loop here is an explicit TensorFlow op already; AutoGraph cannot parse the
# lambda tables (it logs a warning per trace) and has nothing to add.
@tf.autograph.experimental.do_not_convert
def preprocess_image_bytes(
    data: tf.Tensor, image_size: int, max_pixels: int = MAX_PIXELS
) -> tf.Tensor:
    """One encoded image -> float32 [S, S, 3] in [0, 1], exactly as evaluation sees its copy.

    Raises (at run time) InvalidArgumentError for unknown formats, images whose header
    declares more than `max_pixels` pixels (before decoding them), and undecodable data.
    """
    fmt = image_format(data)
    with tf.control_dependencies([check_size(data, fmt, max_pixels)]):
        fmt = tf.identity(fmt)
    stored = tf.cond(
        stored_as_is(data, fmt),
        lambda: data,
        lambda: tf.io.encode_jpeg(decode_like_builder(data, fmt), quality=images.JPEG_QUALITY),
    )
    return input_pipeline.preprocess_for_eval(stored, image_size)
