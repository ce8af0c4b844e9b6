"""Classifies image files with an exported model and prints the top classes of each.

    python -m trainer.predict --model_dir MODEL [--top_k 5] IMAGE [IMAGE ...]

MODEL is the serving SavedModel folder that the export wrote (<job_dir>/model, local or gs://),
or one of its LiteRT models (<job_dir>/tflite/model_*.tflite, labels.txt beside it); each IMAGE
is a local or gs:// file. The output is the same for both kinds of model.

Each file's own bytes go to the model: a SavedModel's `serving_default` (so the result is what
a Vertex AI endpoint serving it returns for the same bytes), or, for a .tflite model, the same
in-graph preprocessing (`trainer.decoding`) followed by the LiteRT interpreter. Either way the
photo is turned upright (EXIF), transparency is composited onto white and it is framed exactly
as evaluation frames the dataset's stored copy of the file. Files the model cannot take are
converted here by the dataset builder's own `tfds_oregon.images.convert` (Pillow), and the JPEG
the builder would store is sent instead:
  * formats TensorFlow does not decode (TIFF, ...) and variants it rejects (RLE BMP);
  * JPEGs over the size limit (`tfds_oregon.images.MAX_PIXELS`), decoded at 1/2, 1/4 or 1/8
    scale down to a shorter side of about 1024 px, so memory stays bounded;
files the builder refuses (`tfds_oregon.images.open_image`: other formats over that limit,
JPEGs over twice it, extreme aspect ratios) and files over 200 MB are refused: downscale them.

Exit status: 0 when every image was classified; 2 when some could not be (each gets one
`error:` line on stderr while the others are still classified), when the model cannot be
loaded or when no image is given; 1 for a bug (traceback).
"""

from __future__ import annotations

from trainer import cli  # isort: skip - first: it quiets TensorFlow before TensorFlow loads.

import dataclasses
import posixpath
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import flags
from PIL import Image

from tfds_oregon import images
from trainer import decoding, tflite_export

_MODEL_DIR = flags.DEFINE_string(
    "model_dir",
    None,
    "Exported serving SavedModel folder (local or gs://), or a .tflite model file.",
    required=True,
)
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes to print per image.", lower_bound=1)

# Formats the model decodes itself (trainer.decoding); MPO is a JPEG with more pictures.
_MODEL_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"})
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_DRAFT_MIN_SIDE = 1024  # Shorter side a JPEG over the limit is decoded down to.
_MAX_FILE_BYTES = 200_000_000


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A loaded export: `classify(encoded image) -> [(class, probability)]`, most probable first."""

    classify: Callable[[bytes], list[tuple[str, float]]]
    top_k: int  # how many classes `classify` returns
    class_names: list[str]


def load_classifier(model: str) -> Classifier:
    """Loads the serving SavedModel folder or the .tflite file `model` (local or gs://).

    Raises:
      ValueError: `model` is neither a SavedModel with a `serving_default` signature nor a
        .tflite file with labels.txt beside it.
    """
    if model.endswith(".tflite"):
        return _load_tflite(model)
    if not tf.io.gfile.exists(posixpath.join(model, "saved_model.pb")):
        raise ValueError(
            f"--model_dir {model} holds no saved_model.pb: pass the folder written by "
            "the trainer's serving export (<job_dir>/model) or a .tflite file"
        )
    loaded = tf.saved_model.load(model)
    serve = loaded.signatures.get("serving_default")
    if serve is None:
        raise ValueError(f"--model_dir {model} has no serving_default signature")
    with tf.io.gfile.GFile(loaded.labels_file.asset_path.numpy().decode(), "r") as stream:
        class_names = stream.read().splitlines()

    def classify(data: bytes) -> list[tuple[str, float]]:
        result = serve(image_bytes=tf.constant([data]))
        names = [name.decode("utf-8") for name in result["classes"][0].numpy()]
        return list(zip(names, result["probabilities"][0].numpy().tolist(), strict=True))

    top_k = serve.structured_outputs["classes"].shape[-1]
    return Classifier(classify, top_k, class_names)


def _load_tflite(path: str) -> Classifier:
    labels_path = posixpath.join(posixpath.dirname(path), tflite_export.LABELS_FILE)
    for needed in (path, labels_path):
        if not tf.io.gfile.exists(needed):
            raise ValueError(f"--model_dir {path}: no such file {needed}")
    with tf.io.gfile.GFile(labels_path) as stream:
        class_names = stream.read().splitlines()
    try:
        interpreter = tflite_export.LiteRTClassifier(path)
    except ValueError as error:
        raise ValueError(f"--model_dir {path} is not a LiteRT model ({error})") from None
    if interpreter.num_classes != len(class_names):
        raise ValueError(
            f"{path} gives {interpreter.num_classes} outputs but {labels_path} names "
            f"{len(class_names)} classes"
        )
    preprocess = tf.function(
        lambda data: decoding.preprocess_image_bytes(data, interpreter.image_size)
    )

    def classify(data: bytes) -> list[tuple[str, float]]:
        probabilities = interpreter(preprocess(tf.constant(data)).numpy())
        order = np.argsort(-probabilities, kind="stable")
        return [(class_names[i], float(probabilities[i])) for i in order]

    return Classifier(classify, len(class_names), class_names)


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
    """Reads only the header, with the builder's own size checks (`images.open_image`)."""
    try:
        return images.open_image(data)
    except images.UnreadableImageError as error:
        raise ValueError(f"unusable image ({error}): convert or downscale it first") from None


def _convert_like_builder(data: bytes, image: Image.Image) -> bytes:
    """The JPEG the dataset builder would store for this file (reduced, if over the limit)."""
    short_side = _DRAFT_MIN_SIDE if image.width * image.height > decoding.MAX_PIXELS else None
    try:
        converted = images.convert(data, short_side)
    except images.UnreadableImageError as error:
        raise ValueError(f"cannot decode the image ({error})") from None
    return data if converted.jpeg is None else converted.jpeg


def classify_file(classifier: Classifier, path: str) -> list[tuple[str, float]]:
    """The top classes of the image file at `path`; ValueError with one line if it is unusable."""
    data = _read_file(path)
    image = _open_image(data)
    if image.format in _MODEL_FORMATS and image.width * image.height <= decoding.MAX_PIXELS:
        try:
            return classifier.classify(data)
        except tf.errors.InvalidArgumentError:
            pass  # a variant TensorFlow's decoders reject (e.g. RLE BMP): let Pillow try
    return classifier.classify(_convert_like_builder(data, image))


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
            message = " ".join(str(error).split())
            print(f"error: {path}: {message}", file=sys.stderr, flush=True)
            continue
        print(format_prediction(path, classes, name_width), flush=True)
    return failures


def main(argv: Sequence[str]) -> int:
    paths = argv[1:]
    if not paths:
        raise ValueError("give at least one image file after the flags")
    classifier = load_classifier(_MODEL_DIR.value)
    if _TOP_K.value > classifier.top_k:
        raise ValueError(
            f"the model returns {classifier.top_k} classes per image: pass --top_k <= "
            f"{classifier.top_k}"
        )
    # Headers only are read with Pillow's guard off; the limits above apply instead.
    Image.MAX_IMAGE_PIXELS = None
    start = time.perf_counter()
    failures = classify_files(classifier, paths, _TOP_K.value)
    seconds = time.perf_counter() - start
    print(
        f"Classified {len(paths) - failures} of {len(paths)} images in {seconds:.1f} s.",
        file=sys.stderr,
    )
    return cli.EXIT_BAD_INPUT if failures else 0


if __name__ == "__main__":
    cli.run(main)
