"""Image backbones: MobileNet V2 from a TF Hub / Kaggle / gs:// / local SavedModel handle, or
from `tf_keras.applications` (`keras:` handles), plus an offline stand-in SavedModel.

Every backbone takes float images in [0, 1] (NHWC) and returns one feature vector per image.

`python -m trainer.backbones --out DIR [--alpha 0.35] [--image_size 224]` writes an UNTRAINED
MobileNet V2 SavedModel in the TF Hub feature-vector convention, for tests and offline demos.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re

from trainer import cli  # noqa: F401  # isort: skip - first: quiets TensorFlow before it loads.

import tensorflow as tf
import tensorflow_hub as hub
import tf_keras
from absl import logging

DEFAULT_HANDLE = "https://tfhub.dev/google/imagenet/mobilenet_v2_130_224/feature_vector/5"
KERAS_PREFIX = "keras:"
# Written into assets/ of the stand-in SavedModel; TF Hub models do not have it.
METADATA_FILE = "trainer_backbone.json"
# MobileNet V2 uses 0.999, tuned for long ImageNet runs; from random weights the moving
# statistics would lag the weights for thousands of steps, so the stand-in follows faster.
_STAND_IN_BATCHNORM_MOMENTUM = 0.9
_KERAS_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # Those with published ImageNet weights.
_KERAS_HANDLE = re.compile(r"^keras:mobilenet_v2_(\d{3})(:untrained)?$")


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
        `keras:mobilenet_v2_<alpha*100>[:untrained]` (e.g. `keras:mobilenet_v2_130`).
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
            "(python -m trainer.backbones --out DIR writes an offline one), or "
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


def _create_keras_backbone(
    handle: str, image_size: int
) -> tuple[tf_keras.layers.Layer, BackboneInfo]:
    """`keras:mobilenet_v2_130` → tf_keras MobileNetV2(alpha=1.3), ImageNet weights if reachable."""
    match = _KERAS_HANDLE.match(handle)
    if not match:
        raise ValueError(
            f"Unknown backbone {handle!r}; keras handles look like keras:mobilenet_v2_130 "
            "(alpha x 100: 035, 050, 075, 100, 130, 140), optionally with ':untrained'."
        )
    alpha = int(match.group(1)) / 100
    if alpha not in _KERAS_ALPHAS:
        raise ValueError(f"Backbone {handle!r}: alpha {alpha} is not one of {_KERAS_ALPHAS}.")
    pretrained = not match.group(2)
    base = _keras_mobilenet_v2(alpha, image_size, "imagenet") if pretrained else None
    if base is None:
        if pretrained:
            logging.warning("ImageNet weights for %s are not reachable; using random ones.", handle)
        pretrained = False
        base = _keras_mobilenet_v2(alpha, image_size, None)
    inputs = tf_keras.Input((image_size, image_size, 3), name="images")
    features = base(tf_keras.layers.Rescaling(2.0, offset=-1.0)(inputs))
    layer = tf_keras.Model(inputs, features, name="backbone")
    layer.trainable = False
    return layer, BackboneInfo(handle=handle, pretrained=pretrained, runs_in_model_dtype=True)


def _keras_mobilenet_v2(alpha: float, image_size: int, weights: str | None):
    """The application model; None when ImageNet weights were asked for but cannot be fetched."""
    try:
        return tf_keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3),
            alpha=alpha,
            include_top=False,
            pooling="avg",
            weights=weights,
        )
    except Exception as error:  # noqa: BLE001 - a failed download has many types (URLError, ...)
        if weights is None:
            raise
        logging.warning("Could not load ImageNet weights: %s", error)
        return None


def export_untrained_backbone(
    out_dir: str, alpha: float = 0.35, image_size: int = 224, seed: int = 0
) -> str:
    """Writes an untrained MobileNet V2 feature-vector SavedModel usable by hub.KerasLayer.

    Same convention as TF Hub's MobileNet V2 feature vectors: float inputs in [0, 1], a
    `training` argument (BatchNorm), trainable variables. `assets/trainer_backbone.json` says
    the weights are random, so runs using it can say so. Written to a temporary folder first.

    Returns:
      `out_dir`.
    """
    tf_keras.utils.set_random_seed(seed)
    base = tf_keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3),
        alpha=alpha,
        include_top=False,
        pooling="avg",
        weights=None,
    )
    inputs = tf_keras.Input((image_size, image_size, 3), name="images")
    # TF Hub image modules take [0, 1]; MobileNet V2 was trained on [-1, 1].
    model = tf_keras.Model(inputs, base(tf_keras.layers.Rescaling(2.0, offset=-1.0)(inputs)))
    _calibrate_batchnorm(model, image_size, seed)
    tmp_dir = out_dir.rstrip("/") + ".tmp"
    if tf.io.gfile.exists(tmp_dir):
        tf.io.gfile.rmtree(tmp_dir)
    tf.saved_model.save(model, tmp_dir)
    metadata = {
        "pretrained": False,
        "architecture": "mobilenet_v2",
        "alpha": alpha,
        "image_size": image_size,
        "seed": seed,
    }
    tf.io.gfile.makedirs(os.path.join(tmp_dir, "assets"))
    with tf.io.gfile.GFile(os.path.join(tmp_dir, "assets", METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2)
    if tf.io.gfile.exists(out_dir):
        tf.io.gfile.rmtree(out_dir)
    tf.io.gfile.rename(tmp_dir, out_dir)
    return out_dir


def _calibrate_batchnorm(model: tf_keras.Model, image_size: int, seed: int) -> None:
    """Sets every BatchNorm's moving statistics from one batch of random images.

    Freshly initialised moving statistics (mean 0, variance 1) do not normalise anything, so in
    inference mode the activations of a random 50-layer network collapse or explode and its
    features carry no information. After this, the random features have unit scale and a head
    trained on them can learn; the weights themselves stay untrained.
    """
    batchnorms = [
        layer
        for layer in model.get_layer(index=-1).layers
        if isinstance(layer, tf_keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in batchnorms]
    for layer in batchnorms:
        layer.momentum = 0.0
    images = tf.random.stateless_uniform([64, image_size, image_size, 3], seed=[seed, 1])
    model(images, training=True)
    for layer, momentum in zip(batchnorms, momenta, strict=True):
        layer.momentum = min(momentum, _STAND_IN_BATCHNORM_MOMENTUM)


def main(argv: list[str] | None = None) -> None:
    """CLI: `python -m trainer.backbones --out DIR [--alpha 0.35] [--image_size 224]`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="Folder to write the SavedModel to.")
    parser.add_argument("--alpha", type=float, default=0.35, help="Width multiplier (1.3 = real).")
    parser.add_argument("--image_size", type=int, default=224, help="Input height/width, pixels.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for the random weights.")
    args = parser.parse_args(argv)
    out = export_untrained_backbone(args.out, args.alpha, args.image_size, args.seed)
    print(f"Wrote an UNTRAINED MobileNet V2 (alpha={args.alpha}) backbone to {out}")


if __name__ == "__main__":
    main()
