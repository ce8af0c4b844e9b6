"""Serving sees what evaluation sees (trainer/decoding.py, trainer/serving.py).

For every file, the reference is evaluation on the dataset's stored copy of it: what the
builder's `tfds_oregon.images.convert(data)` stores (its JPEG, or the file itself when it is an
upright RGB JPEG), through `input_pipeline.preprocess_for_eval`. `serving_default(file bytes)`
must give the same probabilities (1e-5) and top classes. Inputs: the real photos, Pillow's test
images (tests/data/hostile) and variants made here: every EXIF orientation in both TIFF byte
orders, and transparent PNG/WebP/palette images.

EXIF layout: JEITA CP-3451 (Exif 2.3) section 4.5.4: APP1 "Exif\\0\\0", then a TIFF header
("II" little-endian or "MM" big-endian, 42, IFD0 offset) whose IFD0 holds tag 0x0112
(Orientation, SHORT). Pillow's `getexif()` is the reference reader (the builder uses it).
"""

import io
import pathlib
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.fixtures.tiny_classifier import CLASS_NAMES, create_tiny_classifier
from tfds_oregon import images
from trainer import decoding, input_pipeline, serving

SIZE = 32
DATA = pathlib.Path(__file__).parent / "data"
REAL = sorted((DATA / "real").glob("*.jpg"))
HOSTILE = sorted((DATA / "hostile").iterdir())
# Files the builder stores but serving cannot reproduce exactly, and why (each is checked to
# still differ, so this list cannot go stale):
KNOWN_DIFFERENT = {
    # Pillow converts CMYK to RGB itself; libjpeg (TensorFlow) converts it differently.
    "pil_sample_cmyk.jpg",
    # tf.io.decode_gif does not expose a GIF's transparency, which Pillow composites onto white.
    "dispose_bgnd_transparency.gif",
    # tf.io.decode_bmp ignores BI_BITFIELDS channel masks (the alpha of this V5 BMP).
    "bmp_q_rgba32.bmp",
}
# Decodes in Pillow but not in tf.io.decode_bmp (RLE): the request fails; trainer.predict then
# sends the builder's JPEG instead.
SERVING_REFUSES = {"bmp_b_badrle.bmp"}


def _exif_segment(orientation: int, byte_order: str) -> bytes:
    """An APP1 Exif segment whose IFD0 holds Make (a decoy entry) then Orientation."""
    e = "<" if byte_order == "II" else ">"
    make = b"Test\0"
    entries = [
        struct.pack(f"{e}HHII", 0x010F, 2, len(make), 8 + 2 + 2 * 12 + 4),  # Make -> offset
        struct.pack(f"{e}HHIHH", 0x0112, 3, 1, orientation, 0),  # SHORT, left-justified
    ]
    ifd = struct.pack(f"{e}H", len(entries)) + b"".join(entries) + struct.pack(f"{e}I", 0)
    tiff = byte_order.encode() + struct.pack(f"{e}HI", 42, 8) + ifd + make
    payload = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_orientation(jpeg: bytes, orientation: int, byte_order: str) -> bytes:
    """The same JPEG with an Exif orientation tag inserted after SOI."""
    return jpeg[:2] + _exif_segment(orientation, byte_order) + jpeg[2:]


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def transparent_variants() -> dict[str, bytes]:
    photo = Image.open(REAL[1]).convert("RGB").resize((120, 90))
    alpha = Image.linear_gradient("L").resize(photo.size)  # 0 (top) .. 255 (bottom)
    rgba = photo.copy()
    rgba.putalpha(alpha)
    palette = photo.quantize(64)
    palette.info["transparency"] = 3
    gray_alpha = photo.convert("L")
    gray_alpha.putalpha(alpha)
    variants = {
        "rgba.png": _encode(rgba, "PNG"),
        "palette_transparent.png": _encode(palette, "PNG", transparency=3),
        "gray_alpha.png": _encode(gray_alpha, "PNG"),
        "rgb.png": _encode(photo, "PNG"),
    }
    if "WEBP" in Image.SAVE:  # Lossless, so libwebp in Pillow and in TensorFlow agree.
        variants["rgba_lossless.webp"] = _encode(rgba, "WEBP", lossless=True)
    return variants


def rotated_variants() -> dict[str, bytes]:
    jpeg = REAL[2].read_bytes()  # not square, so a wrong rotation changes the shape
    return {
        f"orientation_{k}_{order}.jpg": with_orientation(jpeg, k, order)
        for k in range(1, 9)
        for order in ("II", "MM")
    }


def all_cases() -> dict[str, bytes]:
    cases = {path.name: path.read_bytes() for path in REAL + HOSTILE}
    return {**cases, **rotated_variants(), **transparent_variants()}


def stored_copy(data: bytes) -> bytes | None:
    """What the builder stores for `data`, or None if it skips the file as unreadable."""
    try:
        converted = images.convert(data)
    except images.UnreadableImageError:
        return None
    return data if converted.jpeg is None else converted.jpeg


@pytest.fixture(scope="module")
def model():
    return create_tiny_classifier(SIZE, seed=3)


@pytest.fixture(scope="module")
def serving_default(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("parity") / "export")
    serving.export_serving_model(model, CLASS_NAMES, path, image_size=SIZE, top_k=5)
    return tf.saved_model.load(path).signatures["serving_default"]


_preprocess_224 = tf.function(lambda data: decoding.preprocess_image_bytes(data, 224))
_evaluate_224 = tf.function(lambda data: input_pipeline.preprocess_for_eval(data, 224))


def test_pixels_equal_evaluation_on_the_stored_copy():
    """At 224 px, serving's input equals evaluation's input for every file both can read."""
    mismatched, refused = set(), set()
    for name, data in all_cases().items():
        stored = stored_copy(data)
        if stored is None:
            continue  # unreadable: the builder skips it (serving refusing it: test_export)
        try:
            served = _preprocess_224(tf.constant(data)).numpy()
        except tf.errors.InvalidArgumentError:
            refused.add(name)
            continue
        evaluated = _evaluate_224(tf.constant(stored)).numpy()
        if np.abs(served - evaluated).max() > 1e-6:
            mismatched.add(name)
    assert mismatched == KNOWN_DIFFERENT
    assert refused == SERVING_REFUSES


def test_serving_default_matches_evaluation_probabilities(model, serving_default):
    cases = {n: d for n, d in all_cases().items() if n not in KNOWN_DIFFERENT | SERVING_REFUSES}
    cases = {n: d for n, d in cases.items() if stored_copy(d) is not None}
    assert len(cases) >= 40
    names = list(cases)
    evaluated = tf.stack(
        [
            input_pipeline.preprocess_for_eval(tf.constant(stored_copy(cases[n])), SIZE)
            for n in names
        ]
    )
    probabilities = model(evaluated, training=False).numpy()
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
    outputs = serving_default(image_bytes=tf.constant([cases[n] for n in names]))
    np.testing.assert_array_equal(
        outputs["classes"].numpy().astype(str), np.array(CLASS_NAMES)[order]
    )
    expected = np.take_along_axis(probabilities, order, axis=1)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, rtol=0, atol=1e-5)


def test_orientation_changes_what_the_model_sees():
    """The variants really are rotated: orientations 5-8 swap height and width."""
    jpeg = REAL[2].read_bytes()
    upright = _preprocess_224(tf.constant(jpeg)).numpy()
    for k in range(2, 9):
        turned = _preprocess_224(tf.constant(with_orientation(jpeg, k, "MM"))).numpy()
        assert np.abs(turned - upright).mean() > 0.02, k


def test_orientation_parser_agrees_with_pillow():
    jpegs = {n: d for n, d in all_cases().items() if d[:3] == b"\xff\xd8\xff"}
    for name, data in jpegs.items():
        with Image.open(io.BytesIO(data)) as image:
            try:
                expected = image.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - Pillow's reader raises many kinds; builder: 1
                expected = 1
        expected = expected if expected in range(1, 9) else 1
        orientation, _ = decoding.jpeg_orientation(tf.constant(data))
        assert int(orientation) == expected, name


def test_mpo_is_recognised_like_pillow():
    for path in HOSTILE:
        if path.read_bytes()[:3] != b"\xff\xd8\xff":
            continue
        _, mpo = decoding.jpeg_orientation(tf.constant(path.read_bytes()))
        assert bool(mpo) == (Image.open(path).format == "MPO"), path.name


def test_header_size_agrees_with_pillow():
    for name, data in all_cases().items():
        fmt = decoding.image_format(tf.constant(data))
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Exception:  # noqa: BLE001 - files Pillow cannot open are not compared
            continue
        if int(fmt) < 0 or name == "broken.png":
            continue
        size = decoding.header_size(tf.constant(data), fmt).numpy().tolist()
        if name == "dispose_bgnd_transparency.gif":
            continue  # its logical screen is larger than the frame Pillow reports
        assert size == [height, width], name


def _header_only_png(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _patched_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A baseline JPEG (no Exif thumbnail) whose SOF0 declares another size."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def test_images_over_the_limit_are_refused_before_decoding(serving_default):
    """Headers declaring 20000 x 20000 px (400 MP) fail with the limit's message, not a decode
    error: the pixels (absent here) were never read. The next request still works."""
    photo = Image.open(REAL[0]).convert("RGB").resize((64, 48))
    gif = bytearray(_encode(photo, "GIF"))
    gif[6:10] = struct.pack("<HH", 20000, 20000)
    bmp = bytearray(_encode(photo, "BMP"))
    bmp[18:26] = struct.pack("<ii", 20000, -20000)
    huge = {
        "png": _header_only_png(20000, 20000),
        "jpeg": _patched_jpeg_size(_encode(photo, "JPEG"), 20000, 20000),
        "gif": bytes(gif),
        "bmp": bytes(bmp),
    }
    for fmt, data in huge.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match="over the limit"):
            serving_default(image_bytes=tf.constant([data]))
        next_request = serving_default(image_bytes=tf.constant([REAL[0].read_bytes()]))
        assert next_request["classes"].shape == (1, 5), fmt


def test_limit_is_a_parameter_and_applies_to_every_format():
    photo = Image.open(REAL[0]).convert("RGB").resize((100, 80))  # 8000 pixels
    encoded = {fmt: _encode(photo, fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP")}
    if "WEBP" in Image.SAVE:
        encoded["WEBP"] = _encode(photo, "WEBP")
        encoded["WEBP lossless"] = _encode(photo, "WEBP", lossless=True)
    for data in encoded.values():
        decoding.preprocess_image_bytes(tf.constant(data), SIZE, max_pixels=8000)
        with pytest.raises(tf.errors.InvalidArgumentError, match="over the limit"):
            decoding.preprocess_image_bytes(tf.constant(data), SIZE, max_pixels=7999)


def test_unknown_format_fails_with_its_own_message():
    tiff = _encode(Image.open(REAL[0]).convert("RGB").resize((8, 8)), "TIFF")
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a JPEG, PNG, GIF, BMP or WebP"):
        decoding.preprocess_image_bytes(tf.constant(tiff), SIZE)


def test_composite_matches_pillow_for_every_colour_and_alpha():
    colour, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([colour, 255 - colour, colour // 2, alpha], -1).astype(np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, image).convert("RGB"))
    np.testing.assert_array_equal(decoding.composite_on_white(tf.constant(rgba)), expected)


def test_serving_graph_uses_only_standard_ops(tmp_path, model):
    """TF Serving runs only registered kernels: no PyFunc / EagerPyFunc in the saved graph."""
    path = tmp_path / "export"
    serving.export_serving_model(model, CLASS_NAMES, str(path), image_size=SIZE)
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    ops |= {node.op for function in graph.library.function for node in function.node_def}
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    assert "DecodeAndCropJpeg" in ops and "EncodeJpeg" in ops
