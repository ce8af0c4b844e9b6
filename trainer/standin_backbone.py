r"""Writes an offline stand-in backbone: an UNTRAINED MobileNet V2 feature-vector SavedModel in
the TF Hub convention, for tests and demos on machines without network access.

  python -m trainer.standin_backbone --out runs/backbone --alpha 0.35 --image_size 96

Pass the folder as `--backbone` to `python -m trainer.task`. Its weights are random (runs using
it say so); its BatchNorm statistics are calibrated so that its features carry information.
"""

from __future__ import annotations

import json
import os

from trainer import cli  # isort: skip - first: it quiets TensorFlow before TensorFlow loads.

import tensorflow as tf
import tf_keras
from absl import flags

from trainer import backbones

# MobileNet V2 uses 0.999, tuned for long ImageNet runs; from random weights the moving
# statistics would lag the weights for thousands of steps, so the stand-in follows faster.
_STAND_IN_BATCHNORM_MOMENTUM = 0.9
_FAMILY = "mobilenet_v2"


def export_untrained_backbone(
    out_dir: str, alpha: float = 0.35, image_size: int = 224, seed: int = 0
) -> str:
    """Writes an untrained MobileNet V2 feature-vector SavedModel usable by hub.KerasLayer.

    Same convention as TF Hub's MobileNet V2 feature vectors: float inputs in [0, 1], a
    `training` argument (BatchNorm), trainable variables. `assets/trainer_backbone.json` says
    the weights are random, so runs using it can say so. Written to a temporary folder first.

    Returns:
      `out_dir`.

    Raises:
      ValueError: `alpha` is not a MobileNet V2 width of `backbones.KERAS_FAMILIES`.
    """
    variant = f"{round(alpha * 100):03d}"
    widths = backbones.KERAS_FAMILIES[_FAMILY].variants
    if variant not in widths:
        allowed = [width["alpha"] for width in widths.values()]
        raise ValueError(f"--alpha={alpha} is not a MobileNet V2 width: one of {allowed}")
    tf_keras.utils.set_random_seed(seed)
    # The [0, 1] -> [-1, 1] scaling of the mobilenet_v2 family, as TF Hub's modules take [0, 1].
    model = backbones.create_keras_model(_FAMILY, variant, image_size, weights=None)
    _calibrate_batchnorm(model, image_size, seed)
    tmp_dir = out_dir.rstrip("/") + ".tmp"
    if tf.io.gfile.exists(tmp_dir):
        tf.io.gfile.rmtree(tmp_dir)
    tf.saved_model.save(model, tmp_dir)
    metadata = {
        "pretrained": False,
        "architecture": _FAMILY,
        "alpha": alpha,
        "image_size": image_size,
        "seed": seed,
    }
    tf.io.gfile.makedirs(os.path.join(tmp_dir, "assets"))
    with tf.io.gfile.GFile(os.path.join(tmp_dir, "assets", backbones.METADATA_FILE), "w") as f:
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


def _define_flags() -> None:
    """Only when run as a command: tests import this module next to trainer.task, whose
    --image_size and --seed would clash with these."""
    flags.DEFINE_string("out", None, "Folder to write the SavedModel to.")
    flags.DEFINE_float("alpha", 0.35, "Width multiplier of MobileNet V2 (1.3 = the real one).")
    flags.DEFINE_integer("image_size", 224, "Input height and width in pixels.")
    flags.DEFINE_integer("seed", 0, "Seed for the random weights.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}: flags look like --name=value")
    args = flags.FLAGS
    if not args.out:
        raise ValueError("--out is required: the folder to write the SavedModel to")
    out = export_untrained_backbone(args.out, args.alpha, args.image_size, args.seed)
    print(f"Wrote an UNTRAINED MobileNet V2 (alpha={args.alpha}) backbone to {out}")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
