"""Learning-rate schedules: linear warm-up followed by cosine decay, and the batch scaling rules."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

# The base learning rate is quoted per 256 images (Goyal et al. 2017, "Accurate, Large
# Minibatch SGD"), so a preset keeps its meaning from one GPU to many.
_REFERENCE_BATCH = 256
# How the learning rate follows the global batch B, per optimizer: SGD linearly, B/256
# (Goyal et al. 2017); Adam(W) with the square root, sqrt(B/256), the rule derived for
# adaptive methods by Malladi et al. 2022 ("On the SDEs and Scaling Rules for Adaptive
# Gradient Algorithms", NeurIPS), as Krizhevsky 2014 ("One weird trick") argued from keeping
# the gradient noise constant. Linear scaling over-drives Adam at large batches.
_SCALING_EXPONENT = {"sgd": 1.0, "adamw": 0.5}


def scale_learning_rate(base_lr: float, global_batch_size: int, optimizer: str = "sgd") -> float:
    """`base_lr` (for 256 images per step) scaled to `global_batch_size` by the optimizer's
    rule: linear for 'sgd', square root for 'adamw'."""
    if base_lr <= 0 or global_batch_size < 1 or optimizer not in _SCALING_EXPONENT:
        raise ValueError(
            f"learning rate {base_lr} must be > 0, global batch {global_batch_size} >= 1 and "
            f"optimizer {optimizer!r} one of {sorted(_SCALING_EXPONENT)}."
        )
    return base_lr * (global_batch_size / _REFERENCE_BATCH) ** _SCALING_EXPONENT[optimizer]


@tf_keras.saving.register_keras_serializable(package="trainer")
class WarmupCosineDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to `peak_lr` over `warmup_steps`, then follows a cosine to
    `peak_lr * final_fraction` at `total_steps` (and stays there)."""

    def __init__(
        self,
        peak_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        final_fraction: float = 0.0,
        name: str = "warmup_cosine",
    ):
        super().__init__()
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}."
            )
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_fraction = float(final_fraction)
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name):
            step = tf.cast(step, tf.float32)
            warmup = tf.cast(max(self.warmup_steps, 1), tf.float32)
            decay_steps = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
            progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
            cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
            decayed = self.peak_lr * (self.final_fraction + (1 - self.final_fraction) * cosine)
            warming = self.peak_lr * (step + 1.0) / warmup
            return tf.where(step < self.warmup_steps, warming, decayed)

    def get_config(self) -> dict:
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
            "name": self.name,
        }
