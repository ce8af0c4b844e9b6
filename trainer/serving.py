"""The serving SavedModel: what Vertex AI Prediction or a plain TF Serving serves as it is.

Signatures:
  serving_default(image_bytes: string [None]) -> {classes: string [None, k],
                                                  probabilities: float32 [None, k]}
    Encoded JPEG, PNG, GIF (first frame), BMP or WebP images, as Vertex AI delivers them from
    `{"instances": [{"image_bytes": {"b64": "..."}}]}` (it decodes the base64 itself).
    Each image is seen exactly as evaluation sees the dataset's stored copy of the same file
    (`trainer.decoding`): EXIF orientation applied, transparency composited onto white,
    decoded through evaluation's own crop path. Only standard TensorFlow ops: no py_function,
    no custom op. A request fails with InvalidArgumentError, and the server and the loaded
    model keep working, when an image is undecodable or its header declares more than
    `max_pixels` pixels (checked before decoding; default `decoding.MAX_PIXELS`).
  predict_images(images: float32 [None, H, W, 3] in [0, 1]) -> same outputs
    Images already framed as wanted; they are only resized to image_size if needed.

The class names are also an asset, `assets/labels.txt` (one per line, in label order).
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import tempfile
from collections.abc import Sequence

import tensorflow as tf
import tf_keras

from trainer import decoding, outputs

LABELS_FILE = "labels.txt"


class ServingModule(tf.Module):
    """The model plus preprocessing and top-k, as functions to export as signatures."""

    def __init__(
        self,
        model: tf_keras.Model,
        class_names: Sequence[str],
        labels_path: str,
        image_size: int,
        top_k: int,
        max_pixels: int,
    ):
        super().__init__(name="serving")
        self.model = model
        self.labels_file = tf.saved_model.Asset(labels_path)
        self._class_names = tf.constant(list(class_names))
        self._image_size = image_size
        self._top_k = top_k
        self._max_pixels = max_pixels
        self._input_dtype = tf.as_dtype(model.inputs[0].dtype) if model.inputs else tf.float32

    def _top_k_outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        # A mixed_float16 model may take float16 inputs and give float16 outputs; the
        # signatures always take and return float32.
        probabilities = self.model(tf.cast(images, self._input_dtype), training=False)
        probabilities = tf.cast(probabilities, tf.float32)
        top = tf.math.top_k(probabilities, k=self._top_k)
        return {
            "classes": tf.gather(self._class_names, top.indices),
            "probabilities": top.values,
        }

    def serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.map_fn(
            lambda data: decoding.preprocess_image_bytes(data, self._image_size, self._max_pixels),
            image_bytes,
            fn_output_signature=tf.TensorSpec([self._image_size] * 2 + [3], tf.float32),
        )
        return self._top_k_outputs(images)

    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        size = [self._image_size, self._image_size]
        images = tf.cond(
            tf.reduce_all(tf.shape(images)[1:3] == size),
            lambda: images,
            lambda: tf.image.resize(images, size, antialias=True),
        )
        return self._top_k_outputs(images)


def export_serving_model(
    model: tf_keras.Model,
    class_names: Sequence[str],
    export_dir: str,
    *,
    image_size: int = 224,
    top_k: int = 5,
    max_pixels: int = decoding.MAX_PIXELS,
) -> str:
    """Writes the serving SavedModel (see the module docstring) to `export_dir`, atomically.

    The model is written to a temporary sibling folder and renamed into place when complete,
    replacing any previous export there.

    Args:
      model: maps float [B, image_size, image_size, 3] images in [0, 1] to [B, C] softmax
        probabilities; may have been built under a mixed_float16 policy.
      class_names: the C class names, in label order.
      export_dir: local or gs:// folder to write.
      image_size: the model's input height and width.
      top_k: how many classes each prediction returns.
      max_pixels: serving_default refuses images whose header declares more pixels.

    Returns:
      `export_dir`.

    Raises:
      ValueError: the model's input or output shape disagrees with `image_size` or
        `class_names`, or `top_k` is not between 1 and the number of classes.
    """
    _check_arguments(model, class_names, image_size, top_k)
    with tempfile.TemporaryDirectory(prefix="labels-") as local_dir:
        labels_path = os.path.join(local_dir, LABELS_FILE)
        with open(labels_path, "w", encoding="utf-8") as stream:
            stream.write("".join(f"{name}\n" for name in class_names))
        module = ServingModule(model, class_names, labels_path, image_size, top_k, max_pixels)
        signatures = {
            "serving_default": tf.function(module.serve_bytes).get_concrete_function(
                tf.TensorSpec([None], tf.string, name="image_bytes")
            ),
            "predict_images": tf.function(module.serve_images).get_concrete_function(
                tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
            ),
        }
        with outputs.atomic_output_dir(export_dir) as temporary_dir, _quiet_tensorflow_info():
            tf.saved_model.save(module, temporary_dir, signatures=signatures)
    return export_dir


@contextlib.contextmanager
def _quiet_tensorflow_info():
    # Saving a hub.KerasLayer logs every one of its variables as an input name "with unsupported
    # characters" (thousands of numbers on one INFO line): harmless, and it drowns the run's log.
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_arguments(model, class_names, image_size: int, top_k: int) -> None:
    num_outputs = model.outputs[0].shape[-1] if model.outputs else None
    if num_outputs is not None and num_outputs != len(class_names):
        raise ValueError(
            f"model gives {num_outputs} outputs but there are {len(class_names)} class names"
        )
    input_size = tuple(model.inputs[0].shape[1:3]) if model.inputs else ()
    if any(side is not None and side != image_size for side in input_size):
        raise ValueError(f"model takes {input_size} images but image_size={image_size}")
    if not 1 <= top_k <= len(class_names):
        raise ValueError(f"top_k={top_k} must be between 1 and the {len(class_names)} classes")


def read_labels(export_dir: str) -> list[str]:
    """The class names stored with an export, in label order."""
    path = posixpath.join(export_dir, "assets", LABELS_FILE)
    with tf.io.gfile.GFile(path) as stream:
        return stream.read().splitlines()
