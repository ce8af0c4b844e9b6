"""Classifies image files with an exported serving model and prints the top classes of each.

    python -m trainer.predict --model_dir DIR [--top_k 5] IMAGE [IMAGE ...]

DIR is the SavedModel that `trainer.export.export_serving_model` wrote (local or gs://), and
each IMAGE a local or gs:// file. Images go through the model's `serving_default` signature,
so the result is what a Vertex AI endpoint serving that model returns for the same bytes.

Pillow reads each file's header first. The file's own bytes are sent when TensorFlow can decode
them (JPEG, PNG, GIF, BMP, WebP) and the image is at most 40 megapixels; otherwise Pillow
decodes it, applies any EXIF rotation, and sends the result as a lossless PNG:
  * JPEGs over 40 megapixels are decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft mode, down
    to a shorter side of about 1024 px), so memory stays bounded at any size up to 1 gigapixel;
  * other formats over 40 megapixels, and files over 200 MB, are refused: downscale them first;
  * photos with an EXIF rotation are turned upright (a Vertex AI endpoint does not do this:
    send it upright images).

Exit status: 0 when every image was classified; 1 when some could not be (each gets a one-line
`error:` on stderr while the others are still classified); 2 when the model cannot be loaded or
no image is given.
"""

from __future__ import annotations

import dataclasses
import io
import posixpath
import sys
import time
import warnings
from collections.abc import Callable, Sequence

from trainer import cli  # noqa: F401  # isort: skip - first: quiets TensorFlow before it loads.

import tensorflow as tf
from absl import app, flags
from PIL import Image, ImageOps, UnidentifiedImageError

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Exported serving SavedModel folder (local or gs://).", required=True
)
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes to print per image.", lower_bound=1)

# Formats TensorFlow's decode_image reads; MPO is a JPEG with extra pictures appended.
_TF_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"})
_MAX_FULL_DECODE_PIXELS = 40_000_000  # 120 MB as uint8 RGB
_MAX_JPEG_PIXELS = 1_000_000_000  # 1/8-scale draft: at most ~16 megapixels decoded
_DRAFT_MIN_SIDE = 1024
_MAX_FILE_BYTES = 200_000_000
_EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A loaded export: `classify(encoded image) -> [(class, probability)]`, most probable first."""

    classify: Callable[[bytes], list[tuple[str, float]]]
    top_k: int  # how many classes `classify` returns
    class_names: list[str]


def load_classifier(model_dir: str) -> Classifier:
    """Loads the serving export in `model_dir` (local or gs://).

    Raises:
      ValueError: `model_dir` holds no SavedModel with a `serving_default` signature.
    """
    if not tf.io.gfile.exists(posixpath.join(model_dir, "saved_model.pb")):
        raise ValueError(
            f"--model_dir {model_dir} holds no saved_model.pb: pass the folder written by "
            "the trainer's serving export (<job_dir>/export)"
        )
    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures.get("serving_default")
    if serve is None:
        raise ValueError(f"--model_dir {model_dir} has no serving_default signature")
    with tf.io.gfile.GFile(loaded.labels_file.asset_path.numpy().decode(), "r") as stream:
        class_names = stream.read().splitlines()

    def classify(data: bytes) -> list[tuple[str, float]]:
        result = serve(image_bytes=tf.constant([data]))
        names = [name.decode("utf-8") for name in result["classes"][0].numpy()]
        return list(zip(names, result["probabilities"][0].numpy().tolist(), strict=True))

    top_k = serve.structured_outputs["classes"].shape[-1]
    return Classifier(classify, top_k, class_names)


def _read_file(path: str) -> bytes:
    try:
        if tf.io.gfile.isdir(path):
            raise ValueError("is a folder: pass image files")
        size = tf.io.gfile.stat(path).length
        if size > _MAX_FILE_BYTES:
            raise ValueError(
                f"{size / 1e6:.0f} MB file, over the {_MAX_FILE_BYTES / 1e6:.0f} MB limit"
            )
        with tf.io.gfile.GFile(path, "rb") as stream:
            data = stream.read()
    except tf.errors.NotFoundError:
        raise ValueError("no such file") from None
    except tf.errors.OpError as error:  # permission denied, GCS errors, ...
        raise ValueError(f"cannot read it ({error.message})") from None
    if not data:
        raise ValueError("empty file: not an image")
    return data


def _open_image(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Only the header is read here; the size limits below replace Pillow's bomb check.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError("not an image: neither Pillow nor TensorFlow knows its format") from None
    except (Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise ValueError(f"unreadable image header ({error})") from None


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    pixels = width * height
    limit = _MAX_JPEG_PIXELS if image.format in ("JPEG", "MPO") else _MAX_FULL_DECODE_PIXELS
    if pixels > limit:
        raise ValueError(
            f"{width}x{height} {image.format} is {pixels / 1e6:.0f} megapixels, over the "
            f"{limit / 1e6:.0f} MP limit for {image.format} files: downscale it first"
        )


def _decode_with_pillow(image: Image.Image) -> bytes:
    """Decodes (at reduced scale when the image is too big), turns it upright, returns PNG."""
    _check_size(image)
    if image.width * image.height > _MAX_FULL_DECODE_PIXELS:
        image.draft("RGB", (_DRAFT_MIN_SIDE, _DRAFT_MIN_SIDE))
    try:
        image = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode the image ({error})") from None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _orientation(image: Image.Image) -> int:
    # Only JPEGs carry EXIF in the header; for other formats getexif() decodes the whole image.
    if image.format not in ("JPEG", "MPO"):
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF, then skips it
            return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1  # unreadable EXIF: decode as stored


def classify_file(classifier: Classifier, path: str) -> list[tuple[str, float]]:
    """The top classes of the image file at `path`; ValueError with one line if it is unusable."""
    data = _read_file(path)
    image = _open_image(data)
    direct = (
        image.format in _TF_FORMATS
        and image.width * image.height <= _MAX_FULL_DECODE_PIXELS
        and _orientation(image) == 1
    )
    if direct:
        try:
            return classifier.classify(data)
        except tf.errors.InvalidArgumentError:
            pass  # a variant TensorFlow's decoders reject (e.g. RLE BMP): let Pillow try
    return classifier.classify(_decode_with_pillow(image))


def format_prediction(path: str, classes: list[tuple[str, float]], name_width: int) -> str:
    """The file name, then one indented line per class: rank, name, probability in %."""
    lines = [path]
    for rank, (name, probability) in enumerate(classes, start=1):
        lines.append(f"  {rank:>2}. {name:<{name_width}} {100 * probability:6.2f}%")
    return "\n".join(lines)


def classify_files(classifier: Classifier, paths: Sequence[str], top_k: int) -> int:
    """Prints the top classes of each file, or a one-line error; returns how many failed."""
    name_width = max(map(len, classifier.class_names), default=0)
    failures = 0
    for path in paths:
        try:
            classes = classify_file(classifier, path)[:top_k]
        except ValueError as error:
            failures += 1
            print(f"error: {path}: {str(error).splitlines()[0]}", file=sys.stderr, flush=True)
            continue
        print(format_prediction(path, classes, name_width), flush=True)
    return failures


def main(argv: Sequence[str]) -> int:
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give at least one image file after the flags", exitcode=2)
    try:
        classifier = load_classifier(_MODEL_DIR.value)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if _TOP_K.value > classifier.top_k:
        print(
            f"error: the model returns {classifier.top_k} classes per image: pass --top_k <= "
            f"{classifier.top_k}",
            file=sys.stderr,
        )
        return 2
    Image.MAX_IMAGE_PIXELS = None  # _check_size applies this tool's own, format-aware limits
    start = time.perf_counter()
    failures = classify_files(classifier, paths, _TOP_K.value)
    seconds = time.perf_counter() - start
    print(
        f"Classified {len(paths) - failures} of {len(paths)} images in {seconds:.1f} s.",
        file=sys.stderr,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    app.run(main)
