"""Image backbones: a TF Hub / Kaggle / gs:// / local SavedModel handle, or a `keras:` handle
naming a `tf_keras.applications` family in `KERAS_FAMILIES`.

Every backbone takes float images in [0, 1] (NHWC) and returns one feature vector per image.
The offline stand-in SavedModel for tests and demos is made by `trainer.standin_backbone`.

Like Model Garden's `register_backbone_builder` (official/vision/modeling/backbones/factory.py),
but as a plain table: adding a tf_keras application is one `KERAS_FAMILIES` entry plus its test
(README, "Extending").
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping

import tensorflow as tf
import tensorflow_hub as hub
import tf_keras
from absl import logging

DEFAULT_HANDLE = "https://tfhub.dev/google/imagenet/mobilenet_v2_130_224/feature_vector/5"
KERAS_PREFIX = "keras:"
UNTRAINED_SUFFIX = ":untrained"
# Written into assets/ of the stand-in SavedModel; TF Hub models do not have it.
METADATA_FILE = "trainer_backbone.json"


@dataclasses.dataclass(frozen=True)
class KerasFamily:
    """One `tf_keras.applications` backbone family: handles `keras:<name>_<variant>[:untrained]`.

    Attributes:
      constructor: the application, called with `input_shape`, `include_top=False`,
        `pooling="avg"`, `weights` and a variant's keyword arguments.
      variants: handle suffix -> constructor keyword arguments (e.g. "130" -> alpha=1.3);
        only those with published ImageNet weights.
      input_scale, input_offset: `x * scale + offset` maps our [0, 1] images to the range the
        application expects (its documented preprocessing).
      weights: the `weights=` the application downloads ("imagenet"); a `:untrained` handle,
        or weights that cannot be fetched, get random ones (`weights=None`).
    """

    constructor: Callable[..., tf_keras.Model]
    variants: Mapping[str, Mapping[str, object]]
    input_scale: float
    input_offset: float
    weights: str = "imagenet"


KERAS_FAMILIES: dict[str, KerasFamily] = {
    # MobileNetV2 expects [-1, 1]: `mobilenet_v2.preprocess_input` maps [0, 255] there
    # (https://www.tensorflow.org/api_docs/python/tf/keras/applications/mobilenet_v2/preprocess_input).
    "mobilenet_v2": KerasFamily(
        constructor=tf_keras.applications.MobileNetV2,
        variants={f"{round(a * 100):03d}": {"alpha": a} for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)},
        input_scale=2.0,
        input_offset=-1.0,
    ),
    # The second family, for phones with int8 models: MobileNet V3 Large rather than
    # EfficientNet-B0. It was searched for phone latency, costs 217M MACs against B0's 390M, and
    # int8 keeps its accuracy (75.2 -> 73.9 top-1 for the 8-bit checkpoint, tensorflow/models
    # research/slim/nets/mobilenet/README.md). EfficientNet-B0's swish and squeeze-excite
    # quantize badly: Google's EfficientNet-Lite removes both "for easier post-quantization"
    # (tensorflow/tpu models/official/efficientnet/lite/README.md), and one int8 toolchain
    # reports B0 falling from 67.1 to 38.9 top-1 against Lite0's 73.5 -> 73.3
    # (sophgo/tpu_compiler regression/net_info/net_accuracy.md). "100_minimalistic" drops
    # squeeze-excite and hard-swish too: the pick for int8 on phone DSPs and NPUs.
    # The application includes its own Rescaling and expects [0, 255] pixels (tf_keras
    # applications/mobilenet_v3.py docstring: "inputs to be float tensors of pixels with values
    # in the [0-255] range"; its `preprocess_input` does nothing).
    "mobilenet_v3_large": KerasFamily(
        constructor=tf_keras.applications.MobileNetV3Large,
        variants={
            "075": {"alpha": 0.75},
            "100": {"alpha": 1.0},
            "100_minimalistic": {"alpha": 1.0, "minimalistic": True},
        },
        input_scale=255.0,
        input_offset=0.0,
    ),
}


def describe_keras_handles() -> str:
    """One line for help texts: each family with its variants."""
    return "; ".join(
        f"{KERAS_PREFIX}{name}_{{{','.join(family.variants)}}}"
        for name, family in KERAS_FAMILIES.items()
    )


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """What a run should know about its backbone."""

    handle: str
    pretrained: bool
    runs_in_model_dtype: bool  # False: stays float32 under a mixed policy (hub SavedModels).


def create_backbone(handle: str, image_size: int) -> tuple[tf_keras.layers.Layer, BackboneInfo]:
    """Builds the backbone layer for `handle`, frozen (trainable=False), and describes it.

    Args:
      handle: a TF Hub / Kaggle Models URL, gs:// or local SavedModel folder, or
        `keras:<family>_<variant>[:untrained]` from `KERAS_FAMILIES` (e.g.
        `keras:mobilenet_v2_130`).
      image_size: height and width of the (square) input images.
    """
    if handle.startswith(KERAS_PREFIX):
        return _create_keras_backbone(handle, image_size)
    # A SavedModel loaded by hub.KerasLayer keeps float32 weights and ops, so under
    # mixed_float16 only the head runs in float16 (tensorflow/hub#748, #790). Pin the layer to
    # float32 so Keras does not feed it float16 inputs it cannot take; `keras:` handles are
    # the backbone that runs entirely in mixed precision.
    try:
        layer = hub.KerasLayer(handle, trainable=False, dtype="float32", name="backbone")
    except (OSError, ValueError, tf.errors.OpError) as error:  # URLError is an OSError.
        raise ValueError(
            f"Cannot load backbone {handle}: {_error_summary(error).rstrip('.')}. Pass a TF "
            "Hub or Kaggle handle this machine can reach, a gs:// or local SavedModel folder "
            "(python -m trainer.standin_backbone --out DIR writes an offline one), or "
            "keras:mobilenet_v2_130."
        ) from error
    validate_backbone(layer, image_size, handle)
    metadata = read_backbone_metadata(handle)
    pretrained = bool(metadata.get("pretrained", True))
    return layer, BackboneInfo(handle=handle, pretrained=pretrained, runs_in_model_dtype=False)


def validate_backbone(layer: tf_keras.layers.Layer, image_size: int, handle: str) -> None:
    """Raises ValueError unless `layer` maps [N, S, S, 3] float images to [N, D] features.

    Catches a wrong model (a text encoder, a feature map, another image size) at start-up
    rather than as a shape error deep inside the first training step. Traces the call without
    running it, which also works inside a MultiWorkerMirroredStrategy scope.
    """
    images = tf.TensorSpec([2, image_size, image_size, 3], tf.float32)
    try:
        call = tf.function(lambda x: layer(x, training=False)).get_concrete_function(images)
    except (ValueError, TypeError, tf.errors.OpError) as error:
        raise ValueError(
            f"Backbone {handle} cannot take {image_size}x{image_size} RGB images "
            f"({_error_summary(error)}); pass an image feature-vector model for that size, "
            "or change --image_size."
        ) from error
    features = call.structured_outputs
    if not isinstance(features, tf.Tensor) or features.shape.rank != 2:
        shape = tuple(features.shape) if isinstance(features, tf.Tensor) else type(features)
        raise ValueError(
            f"Backbone {handle} turns 2 images into {shape}, not one feature vector per image, "
            "(2, features): pass an image feature_vector model, not one that returns feature "
            "maps."
        )


def _error_summary(error: BaseException) -> str:
    """One line from a (possibly multi-line, traced) error: what the model expects, if it
    says, else the innermost 'SomeError: ...' line, else the first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("* TensorSpec("):
            return f"its signature takes {line.removeprefix('* ')}"
    for line in reversed(lines):
        if re.match(r"^\w+(Error|Exception): ", line):
            return line
    return lines[0] if lines else type(error).__name__


def read_backbone_metadata(handle: str) -> dict:
    """The stand-in's metadata (`{'pretrained': False, ...}`); {} for any other handle."""
    if "://" in handle and not handle.startswith("gs://"):
        return {}  # A remote hub handle: published models are trained.
    path = os.path.join(handle, "assets", METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def parse_keras_handle(handle: str) -> tuple[str, str, bool]:
    """`keras:mobilenet_v2_130:untrained` -> ("mobilenet_v2", "130", False): family name,
    variant and whether ImageNet weights are wanted. Raises ValueError naming valid handles."""
    name = handle.removeprefix(KERAS_PREFIX)
    pretrained = not name.endswith(UNTRAINED_SUFFIX)
    name = name.removesuffix(UNTRAINED_SUFFIX)
    # Longest family name first, so a family may be a prefix of another.
    for family in sorted(KERAS_FAMILIES, key=len, reverse=True):
        if name.startswith(family + "_"):
            variant = name[len(family) + 1 :]
            allowed = tuple(KERAS_FAMILIES[family].variants)
            if variant not in allowed:
                raise ValueError(
                    f"Backbone {handle!r}: variant {variant!r} of {family} is not one of "
                    f"{allowed} (those with published ImageNet weights)."
                )
            return family, variant, pretrained
    raise ValueError(
        f"Unknown backbone {handle!r}; keras handles look like keras:mobilenet_v2_130, "
        f"optionally with '{UNTRAINED_SUFFIX}': {describe_keras_handles()}."
    )


def create_keras_model(
    family_name: str, variant: str, image_size: int, weights: str | None
) -> tf_keras.Model:
    """The application of `KERAS_FAMILIES[family_name]`, wrapped to take [0, 1] images.

    Returns a model named 'backbone': Input -> Rescaling(the family's input scaling) -> the
    application (include_top=False, average pooling) -> feature vectors.
    """
    family = KERAS_FAMILIES[family_name]
    base = family.constructor(
        input_shape=(image_size, image_size, 3),
        include_top=False,
        pooling="avg",
        weights=weights,
        **family.variants[variant],
    )
    inputs = tf_keras.Input((image_size, image_size, 3), name="images")
    scaled = tf_keras.layers.Rescaling(family.input_scale, offset=family.input_offset)(inputs)
    return tf_keras.Model(inputs, base(scaled), name="backbone")


def _create_keras_backbone(
    handle: str, image_size: int
) -> tuple[tf_keras.layers.Layer, BackboneInfo]:
    """`keras:mobilenet_v2_130` -> tf_keras MobileNetV2(alpha=1.3), with ImageNet weights
    when they can be fetched."""
    family_name, variant, pretrained = parse_keras_handle(handle)
    weights = KERAS_FAMILIES[family_name].weights if pretrained else None
    try:
        layer = create_keras_model(family_name, variant, image_size, weights)
    except Exception as error:  # noqa: BLE001 - a failed download has many types (URLError, ...)
        if weights is None:
            raise
        logging.warning(
            "ImageNet weights for %s are not reachable (%s); using random ones.", handle, error
        )
        pretrained = False
        layer = create_keras_model(family_name, variant, image_size, None)
    layer.trainable = False
    return layer, BackboneInfo(handle=handle, pretrained=pretrained, runs_in_model_dtype=True)
