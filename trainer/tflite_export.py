"""LiteRT (TensorFlow Lite) models for phones: conversion, the folder an app copies, measurement.

`<job_dir>/tflite/` holds:
  model_float32.tflite  float32 [1, S, S, 3] input in [0, 1]; float32 [1, C] probabilities.
  model_float16.tflite  the same convention; weights stored as float16 (half the file).
  model_int8.tflite     full-integer post-training quantization: uint8 [1, S, S, 3] input in
                        [0, 255] (input scale 1, zero point 0: camera pixels as they are; the
                        1/255 scaling is folded into the model); float32 [1, C] probabilities
                        (the converter's final dequantize, so apps read probabilities directly).
  labels.txt            the C class names, one per line, in output order.
  README.md             this convention, generated with the numbers of this export.
The caller frames each image as evaluation does (`input_pipeline.eval_crop_window`: the centred
square of S/(S+32) of the shorter side, resized to S x S) after turning it upright.

Interpreter: `ai-edge-litert` (pinned in setup.py). TensorFlow 2.21's own `tf.lite.Interpreter`
warns on creation that it "is deprecated and is scheduled for deletion in TF 2.20. Please use
the LiteRT interpreter from the ai_edge_litert package" (tensorflow/lite/python/interpreter.py),
and LiteRT is what Android and iOS apps run (https://ai.google.dev/edge/litert).

Metadata: none is embedded. The library that writes TFLite metadata, tflite-support, has had
no release since 0.4.4 (2023) and requires protobuf < 4: `pip install tflite-support==0.4.4`
here would downgrade protobuf to 3.20.3 under TensorFlow 2.21 (and its wheels are missing on
several platforms: tensorflow/tflite-support#1000). The generated README.md and labels.txt
carry the same facts (input shape, type, range, labels).
"""

from __future__ import annotations

import os
import posixpath
import statistics
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from trainer import input_pipeline, outputs

FORMATS = ("float32", "float16", "int8")
LABELS_FILE = "labels.txt"
README_FILE = "README.md"


def model_file(fmt: str) -> str:
    """The file name of one format's model, e.g. model_int8.tflite."""
    return f"model_{fmt}.tflite"


def _concrete_function(model: tf_keras.Model, image_size: int, pixels_in_0_255: bool):
    """The model as a batch-1 function of float32 images (in [0, 1], or [0, 255] if asked)."""
    input_dtype = tf.as_dtype(model.inputs[0].dtype) if model.inputs else tf.float32

    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32)])
    def classify(images):
        if pixels_in_0_255:
            images = images / 255.0  # Folded into the int8 model's first quantized op.
        probabilities = model(tf.cast(images, input_dtype), training=False)
        return {"probabilities": tf.cast(probabilities, tf.float32)}

    return classify.get_concrete_function()


def convert(
    model: tf_keras.Model,
    image_size: int,
    fmt: str,
    representative_images: Callable[[], Iterable[np.ndarray]] | None = None,
) -> bytes:
    """Converts `model` to one LiteRT format (see the module docstring for each convention).

    Args:
      model: maps float [B, S, S, 3] images in [0, 1] to [B, C] probabilities.
      image_size: S.
      fmt: one of FORMATS.
      representative_images: for int8, returns an iterable of float [S, S, 3] images in [0, 1]
        framed as evaluation frames them (a few hundred training images).

    Raises:
      ValueError: unknown format, or int8 without representative images.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown LiteRT format {fmt!r}: choose from {', '.join(FORMATS)}")
    function = _concrete_function(model, image_size, pixels_in_0_255=fmt == "int8")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    if fmt == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "int8":
        if representative_images is None:
            raise ValueError("int8 conversion needs representative images")

        def dataset():
            for image in representative_images():
                # What an app feeds: whole pixel values 0..255.
                yield [np.round(np.clip(image, 0, 1) * 255)[None].astype(np.float32)]
            # The observed input range sets the input quantization: one black and one white
            # pixel make it exactly [0, 255], i.e. scale 1 and zero point 0.
            yield [
                np.concatenate(
                    [
                        np.zeros([1, image_size, 1, 3]),
                        np.full([1, image_size, image_size - 1, 3], 255.0),
                    ],
                    axis=2,
                ).astype(np.float32)
            ]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        # Full-integer: every op int8, conversion fails rather than leave a float op behind
        # (https://ai.google.dev/edge/litert/models/post_training_integer_quant).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    return converter.convert()


class LiteRTClassifier:
    """One .tflite classifier under the LiteRT interpreter: float [S, S, 3] in [0, 1] -> [C]."""

    def __init__(self, path_or_content: str | bytes, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(path_or_content, bytes):
            self._interpreter = Interpreter(model_content=path_or_content, num_threads=num_threads)
        else:
            with tf.io.gfile.GFile(path_or_content, "rb") as stream:
                self._interpreter = Interpreter(
                    model_content=stream.read(), num_threads=num_threads
                )
        self._interpreter.allocate_tensors()
        (self._input,) = self._interpreter.get_input_details()
        (self._output,) = self._interpreter.get_output_details()
        self.image_size = int(self._input["shape"][1])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.num_classes = int(self._output["shape"][-1])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Probabilities [C] of one float [S, S, 3] image in [0, 1] (uint8 0..255 for int8)."""
        if self.input_dtype == np.uint8:
            image = np.round(np.clip(image, 0, 1) * 255)
        self._interpreter.set_tensor(self._input["index"], image[None].astype(self.input_dtype))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"])[0].astype(np.float32)

    @property
    def input_quantization(self) -> tuple[float, int]:
        return self._input["quantization"]


def write_models(
    model: tf_keras.Model,
    class_names: Sequence[str],
    image_size: int,
    tflite_dir: str,
    formats: Sequence[str] = FORMATS,
    representative_images: Callable[[], Iterable[np.ndarray]] | None = None,
) -> dict[str, str]:
    """Converts to every format and writes `tflite_dir` (atomically: all or nothing).

    Returns {format: path of its .tflite file}.
    """
    models = {fmt: convert(model, image_size, fmt, representative_images) for fmt in formats}
    for fmt, content in models.items():
        _check_convention(content, fmt, image_size, len(class_names))
    with outputs.atomic_output_dir(tflite_dir) as folder:
        for fmt, content in models.items():
            with tf.io.gfile.GFile(posixpath.join(folder, model_file(fmt)), "wb") as stream:
                stream.write(content)
        with tf.io.gfile.GFile(posixpath.join(folder, LABELS_FILE), "w") as stream:
            stream.write("".join(f"{name}\n" for name in class_names))
    return {fmt: posixpath.join(tflite_dir, model_file(fmt)) for fmt in models}


def _check_convention(content: bytes, fmt: str, image_size: int, num_classes: int) -> None:
    """Asserts that a converted model has the documented input and output (a bug otherwise)."""
    classifier = LiteRTClassifier(content)
    expected_dtype = np.uint8 if fmt == "int8" else np.float32
    assert classifier.input_dtype == expected_dtype, (fmt, classifier.input_dtype)
    assert classifier.image_size == image_size and classifier.num_classes == num_classes
    if fmt == "int8":
        scale, zero_point = classifier.input_quantization
        assert abs(scale - 1.0) < 1e-6 and zero_point == 0, (scale, zero_point)


def measure(
    classifier: LiteRTClassifier, images_and_labels: Iterable[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Runs every image through `classifier` one at a time.

    Returns (probabilities [N, C], labels [N], median milliseconds per image).
    """
    probabilities, labels, seconds = [], [], []
    for batch_images, batch_labels in images_and_labels:
        for image, label in zip(batch_images, batch_labels, strict=True):
            start = time.perf_counter()
            probabilities.append(classifier(image))
            seconds.append(time.perf_counter() - start)
            labels.append(label)
    return np.stack(probabilities), np.asarray(labels, np.int64), 1000 * statistics.median(seconds)


def write_readme(tflite_dir: str, image_size: int, class_names: Sequence[str], table: str) -> None:
    """tflite/README.md: what each file is, the input and output convention, measured numbers."""
    shape = f"[1, {image_size}, {image_size}, 3]"
    crop_from = image_size + input_pipeline.EVAL_CROP_PADDING
    rows = [
        ("float32", f"float32 `{shape}` RGB", "pixel / 255, in [0, 1]"),
        ("float16", f"float32 `{shape}` RGB", "pixel / 255, in [0, 1]; float16 weights"),
        ("int8", f"uint8 `{shape}` RGB", "pixels as they are, 0..255 (scale 1, zero point 0)"),
    ]
    files = "\n".join(f"| `{model_file(fmt)}` | {kind} | {values} |" for fmt, kind, values in rows)
    text = f"""# LiteRT models

Copy one `.tflite` file and `labels.txt` into the app. Output of every model: float32
`[1, {len(class_names)}]` softmax probabilities, in the order of `labels.txt`.

| file | input | values |
|---|---|---|
{files}

Frame each image as evaluation does: turn it upright (EXIF orientation), take the centred
square of {image_size}/{crop_from} of the shorter side, resize it to {image_size} x {image_size}
(antialiased when shrinking), RGB order.

Measured on the test split with the LiteRT interpreter (ai-edge-litert), one thread:

{table}
"""
    with tf.io.gfile.GFile(posixpath.join(tflite_dir, README_FILE), "w") as stream:
        stream.write(text)


def file_mb(path: str) -> float:
    """Size of a file, or of everything under a folder, in MB (10^6 bytes)."""
    if not tf.io.gfile.isdir(path):
        return tf.io.gfile.stat(path).length / 1e6
    total = 0
    for folder, _, files in tf.io.gfile.walk(path):
        total += sum(tf.io.gfile.stat(os.path.join(folder, name)).length for name in files)
    return total / 1e6
