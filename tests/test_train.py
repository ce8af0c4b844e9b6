"""train.py: the phases freeze and fine-tune what they should, a preempted run resumes where
it stopped without redoing a finished phase, NaN stops training with a clear error, and the
trainer really learns a learnable dataset."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.fixtures.backbone import TINY_IMAGE_SIZE
from trainer import backbones, callbacks, input_pipeline, models, train
from trainer.config import TrainConfig


def _config(data_dir, backbone, **overrides) -> TrainConfig:
    fields = dict(
        data_dir=data_dir,
        backbone=backbone,
        image_size=TINY_IMAGE_SIZE,
        batch_size=16,
        epochs=2,
        frozen_epochs=1,
        steps_per_epoch=2,
        precision="float32",
        strategy="default",
        export_formats=("saved_model",),  # LiteRT: tests/test_tflite_export.py.
    )
    return TrainConfig(**{**fields, **overrides}).validate()


def test_head_phase_keeps_the_backbone_and_fine_tuning_changes_it(
    tiny_backbone, learnable_data_dir, tmp_path
):
    config = _config(learnable_data_dir, tiny_backbone, learning_rate=0.5)
    builder = input_pipeline.load_builder(config.dataset, learnable_data_dir)
    strategy = tf.distribute.get_strategy()
    datasets = train.create_datasets(builder, config, strategy)
    backbone, _ = backbones.create_backbone(tiny_backbone, TINY_IMAGE_SIZE)
    model = models.create_model(backbone, 20, TINY_IMAGE_SIZE)
    head, finetune = train.create_phases(config, num_train_examples=240, global_batch=16)
    dirs = train.RunDirs(str(tmp_path / "ckpt"), str(tmp_path / "logs"), None)

    variables = list(backbone.weights)  # Fixed order; `trainable` moves them between lists.
    is_moving = np.array(["moving_" in v.name for v in variables])
    assert 0 < is_moving.sum() < len(variables)

    def backbone_changes(before):
        return np.array(
            [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables, strict=True)]
        )

    start = [v.numpy().copy() for v in variables]
    kernel = model.get_layer("logits").kernel.numpy().copy()

    train.run_phase(model, head, config, datasets, dirs, 20, strategy)
    assert not backbone_changes(start).any()
    assert not np.allclose(kernel, model.get_layer("logits").kernel.numpy())

    train.run_phase(model, finetune, config, datasets, dirs, 20, strategy)
    changed = backbone_changes(start)
    assert changed[~is_moving].mean() > 0.5
    # BatchNorm stays in inference mode while fine-tuning (no --fine_tune_batchnorm).
    assert not changed[is_moving].any()
    assert (tmp_path / "ckpt" / "phase-head.done").exists()
    assert (tmp_path / "ckpt" / "phase-fine_tune.done").exists()


class _Preempted(Exception):
    pass


class _PreemptAfterEpoch(tf_keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Preempted(f"simulated preemption after epoch {epoch + 1}")


class _EpochRecorder(tf_keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.mark.slow
def test_preempted_run_resumes_at_the_next_epoch_without_redoing_a_phase(
    tiny_backbone, learnable_data_dir, tmp_path
):
    config = _config(learnable_data_dir, tiny_backbone, epochs=3, frozen_epochs=1)
    job_dir = tmp_path / "job"
    with pytest.raises(_Preempted):  # Stopped after epoch 2, the first fine-tuning epoch.
        train.train_and_evaluate(config, str(job_dir), extra_callbacks=[_PreemptAfterEpoch(1)])
    assert [r["epoch"] for r in json.loads((job_dir / "history.json").read_text())] == [1, 2]
    assert not (job_dir / "metrics.json").exists()

    recorder = _EpochRecorder()
    metrics = train.train_and_evaluate(config, str(job_dir), extra_callbacks=[recorder])
    assert recorder.epochs == [2]  # Only epoch 3 ran: phase 1 and epoch 2 were not redone.
    history = json.loads((job_dir / "history.json").read_text())
    assert [(r["epoch"], r["phase"]) for r in history] == [
        (1, "head"),
        (2, "fine_tune"),
        (3, "fine_tune"),
    ]
    assert json.loads((job_dir / "metrics.json").read_text())["top1"] == metrics["top1"]
    assert not (job_dir / "checkpoints" / "backup" / "fine_tune").exists()


def test_nan_loss_stops_training_and_says_where():
    model = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)])
    model.compile(tf_keras.optimizers.SGD(0.1), "mse")
    images = np.array([[1.0, 2.0], [3.0, 4.0], [np.nan, 1.0], [1.0, 1.0]], np.float32)
    guard = callbacks.StopOnNaN()
    history = model.fit(
        images, np.ones(4), batch_size=2, epochs=5, callbacks=[guard], verbose=0, shuffle=False
    )
    assert guard.diverged_at == (0, 1) and len(history.epoch) == 1
    with pytest.raises(callbacks.TrainingDivergedError, match="epoch 1, step 2"):
        guard.raise_if_diverged(0.1)


@pytest.mark.slow
def test_the_trainer_learns_a_learnable_dataset(tiny_backbone, learnable_data_dir, tmp_path):
    # Fine-tunes the whole (untrained) tiny backbone with BatchNorm in training mode: random
    # features alone are too weak for a linear head. 8 epochs x 7 steps of 32 images, at a
    # peak learning rate of 0.005 (0.014 per 256 images, square-root scaled for AdamW).
    config = _config(
        learnable_data_dir,
        tiny_backbone,
        batch_size=32,
        epochs=8,
        frozen_epochs=0,
        steps_per_epoch=0,
        learning_rate=0.014,
        warmup_epochs=0.5,
        label_smoothing=0.0,
        dropout=0.0,
        fine_tune_lr_factor=1.0,
        fine_tune_batchnorm=True,
    )
    metrics = train.train_and_evaluate(config, str(tmp_path / "job"))
    assert metrics["validation_accuracy"] >= 0.9
    assert metrics["top1"] >= 0.85


def _fit_losses(jit_compile: bool, steps_per_execution: int) -> list[float]:
    """Per-epoch losses of a small conv net (conv, BatchNorm, depthwise, dropout) trained with
    AdamW, as compile_model sets it up."""
    tf_keras.utils.set_random_seed(1)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((16, 16, 3)),
            tf_keras.layers.Conv2D(8, 3, strides=2),
            tf_keras.layers.BatchNormalization(),
            tf_keras.layers.ReLU(),
            tf_keras.layers.DepthwiseConv2D(3),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(5, activation="softmax"),
        ]
    )
    phase = train.Phase("head", 0, 4, 0.01, 8)
    optimizer = train.create_optimizer("adamw", phase, warmup_steps=2, weight_decay=None)
    train.compile_model(model, optimizer, 5, 0.1, jit_compile, steps_per_execution)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(64, 16, 16, 3)).astype("float32")
    labels = (images[:, :8].mean(axis=(1, 2, 3)) * 10).astype("int64") % 5
    history = model.fit(images, labels, batch_size=8, epochs=4, shuffle=False, verbose=0)
    return history.history["loss"]


def test_xla_and_steps_per_execution_train_to_the_same_losses():
    reference = _fit_losses(jit_compile=False, steps_per_execution=1)
    assert reference[-1] < reference[0]  # It learns something: the comparison means something.
    # XLA fuses and reorders float32 arithmetic: equal up to rounding, not bit for bit.
    np.testing.assert_allclose(_fit_losses(True, 1), reference, rtol=1e-4)
    np.testing.assert_allclose(_fit_losses(True, 4), reference, rtol=1e-4)


def test_jit_compile_is_on_by_default_only_for_one_gpu_without_a_distribution_strategy():
    assert train.choose_jit_compile("auto", "default", num_gpus=1)
    assert not train.choose_jit_compile("auto", "default", num_gpus=0)
    assert not train.choose_jit_compile("auto", "mirrored", num_gpus=4)
    assert not train.choose_jit_compile("auto", "multi_worker", num_gpus=1)
    assert train.choose_jit_compile("on", "mirrored", num_gpus=4)
    assert not train.choose_jit_compile("off", "default", num_gpus=1)


def test_adamw_weight_decay_acts_on_the_weights_through_the_learning_rate():
    """tf_keras decays by weight_decay x learning rate per step (keras-team/tf-keras,
    tf_keras/src/optimizers/optimizer.py `_apply_weight_decay`: variable * wd * lr): with a
    zero gradient, one step of the default AdamW multiplies a kernel by (1 - 0.05 lr)."""
    phase = train.Phase("head", 0, 1, 0.002, 10)
    optimizer = train.create_optimizer("adamw", phase, warmup_steps=0, weight_decay=None)
    kernel, bias = tf.Variable(tf.ones([4])), tf.Variable(tf.ones([1]), name="bias")
    optimizer.apply_gradients([(tf.zeros([4]), kernel), (tf.zeros([1]), bias)])
    assert float(kernel[0]) == pytest.approx(1 - 0.05 * 0.002, abs=1e-7)
    assert float(bias[0]) == 1.0  # Biases (and BatchNorm) are not decayed.
