"""Learning-rate schedules: linear warm-up followed by cosine decay, and the batch scaling rule."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

# The base learning rate is quoted per 256 images (Goyal et al. 2017, "Accurate, Large
# Minibatch SGD"), so a preset keeps its meaning from one GPU to many.
_REFERENCE_BATCH = 256


def scale_learning_rate(base_lr: float, global_batch_size: int) -> float:
    """Linear scaling rule: `base_lr` is for 256 images per step."""
    if base_lr <= 0 or global_batch_size < 1:
        raise ValueError(
            f"learning rate {base_lr} must be > 0 and global batch {global_batch_size} >= 1."
        )
    return base_lr * global_batch_size / _REFERENCE_BATCH


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
