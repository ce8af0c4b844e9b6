"""Keras callbacks the trainer adds to `fit`: learning-rate logging, input images in
TensorBoard, and a NaN guard that says where training diverged."""

from __future__ import annotations

import json
import math

import numpy as np
import tensorflow as tf
import tf_keras

from trainer import outputs


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; raised after `fit` returns."""


class LearningRateLogger(tf_keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (progress bar, history, TensorBoard).

    Put it before the TensorBoard callback so the value is there when TensorBoard writes.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(
                tf_keras.backend.get_value(self.model.optimizer.learning_rate)
            )


class InputImagesSummary(tf_keras.callbacks.Callback):
    """Writes a few augmented training images to TensorBoard once, at the start of training,
    so a person can check the crops, flips and colours the model actually sees."""

    def __init__(self, images: np.ndarray, log_dir: str, max_images: int = 8):
        super().__init__()
        self._images = np.asarray(images[:max_images])
        self._log_dir = log_dir

    def on_train_begin(self, logs: dict | None = None) -> None:
        writer = tf.summary.create_file_writer(self._log_dir)
        with writer.as_default():
            tf.summary.image(
                "augmented_inputs", self._images, step=0, max_outputs=len(self._images)
            )
        writer.close()


class StopOnNaN(tf_keras.callbacks.Callback):
    """Stops training at a non-finite loss and remembers where (epoch, step).

    Checks every `check_every` steps and at the end of each epoch, not every step: reading the
    loss forces the host to wait for the accelerator, which costs throughput on GPUs.
    """

    def __init__(self, check_every: int = 50):
        super().__init__()
        self._supports_tf_logs = True  # Keep logs as tensors: no per-step host sync.
        self.diverged_at: tuple[int, int] | None = None
        self._check_every = check_every
        self._epoch = 0
        self._last_step = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._last_step = -1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # With steps_per_execution > 1 Keras reports only every n-th step: check whenever a
        # multiple of check_every has been passed since the last report.
        passed = batch // self._check_every != self._last_step // self._check_every
        self._last_step = batch
        if passed:
            self._check(logs, batch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._check(logs, self._last_step)

    def _check(self, logs: dict | None, step: int) -> None:
        loss = (logs or {}).get("loss")
        if self.diverged_at is None and loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = (self._epoch, step)
            self.model.stop_training = True

    def raise_if_diverged(self, learning_rate: float) -> None:
        """Raises TrainingDivergedError naming the epoch and step if the loss went NaN."""
        if self.diverged_at is None:
            return
        epoch, step = self.diverged_at
        raise TrainingDivergedError(
            f"Loss became NaN/inf by epoch {epoch + 1}, step {step + 1} (learning rate "
            f"{learning_rate:g}); lower --learning_rate or use --precision=float32."
        )


def loss_is_finite(logs: dict | None) -> bool:
    """False when the logs hold a NaN or infinite loss (True when they hold no loss)."""
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


class FiniteModelCheckpoint(tf_keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that skips an epoch whose loss is NaN/inf, so the last checkpoint
    written stays the last good one (StopOnNaN ends such an epoch early)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if loss_is_finite(logs):
            super().on_epoch_end(epoch, logs)


class HistoryWriter(tf_keras.callbacks.Callback):
    """Keeps `path` (JSON, local or gs://) holding one record per finished epoch, across
    restarts: records from epochs the resumed run trains again are replaced, not duplicated.

    Rewrites the whole file atomically each epoch, because GCS cannot append.
    """

    def __init__(self, path: str, phase: str):
        super().__init__()
        self._path = path
        self._phase = phase
        self._records: list[dict] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        if tf.io.gfile.exists(self._path):
            with tf.io.gfile.GFile(self._path) as f:
                self._records = json.load(f)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not loss_is_finite(logs):
            return  # A diverged epoch is no result; StopOnNaN reports where it diverged.
        record = {"epoch": epoch + 1, "phase": self._phase}
        record.update({name: float(value) for name, value in (logs or {}).items()})
        self._records = [r for r in self._records if r["epoch"] < epoch + 1] + [record]
        outputs.write_json_atomic(self._path, self._records)
