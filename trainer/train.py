"""`train_and_evaluate(config, job_dir)`: two-phase fine-tuning of MobileNet V2, evaluation, export.

Phase 1 ('head') trains the head on a frozen backbone; phase 2 ('fine_tune') unfreezes the
backbone (or its top layers) at a lower learning rate. Each phase is one `fit` with its own
`BackupAndRestore` folder, so a preempted job resumes inside the phase it was in; a finished
phase leaves its weights and a marker file, so a restart never trains it again.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from trainer import (
    backbones,
    callbacks,
    distribute,
    evaluate,
    export,
    figures,
    hypertune,
    input_pipeline,
    models,
    outputs,
    preemption,
    schedules,
)
from trainer.config import TrainConfig, resolve_output_dirs

_TOP_K = 5


@dataclasses.dataclass(frozen=True)
class Phase:
    """One `fit`: epochs [initial_epoch, end_epoch) at peak learning rate `peak_lr`."""

    name: str
    initial_epoch: int
    end_epoch: int
    peak_lr: float
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return (self.end_epoch - self.initial_epoch) * self.steps_per_epoch


def create_phases(config: TrainConfig, num_train_examples: int, global_batch: int) -> list[Phase]:
    """Splits the run into the frozen-backbone phase and the fine-tuning phase (either may be
    empty), with the learning rate scaled to the global batch."""
    steps = num_train_examples // global_batch
    if steps < 1:
        raise ValueError(
            f"The training split has {num_train_examples} examples, fewer than one global batch "
            f"of {global_batch}; lower --batch_size."
        )
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    peak_lr = schedules.scale_learning_rate(config.learning_rate, global_batch, config.optimizer)
    phases = [
        Phase("head", 0, config.frozen_epochs, peak_lr, steps),
        Phase(
            "fine_tune",
            config.frozen_epochs,
            config.epochs,
            peak_lr * config.fine_tune_lr_factor,
            steps,
        ),
    ]
    return [phase for phase in phases if phase.end_epoch > phase.initial_epoch]


# tf_keras multiplies the decay by the learning rate (each step: w -= w * weight_decay * lr,
# keras-team/tf-keras tf_keras/src/optimizers/optimizer.py, `_apply_weight_decay`), as
# PyTorch's AdamW does, so values from PyTorch recipes carry over. AdamW: 0.05, the DeiT
# (Touvron et al. 2021) and ConvNeXt (Liu et al. 2022) value; at the 1-GPU preset's peak
# learning rate of 1e-3 it shrinks the weights by 5e-5 a step, a few % over the head phase (the
# old 1e-5 did 1e-8 a step: nothing). SGD: 4e-5, MobileNet V2's own (Sandler et al. 2018);
# coupled to the learning rate as L2 is in plain SGD.
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "sgd": 4e-5}


def create_optimizer(
    name: str, phase: Phase, warmup_steps: int, weight_decay: float | None
) -> tf_keras.optimizers.Optimizer:
    """AdamW or SGD (Nesterov momentum) with warm-up + cosine decay over the phase.

    `weight_decay` None takes the optimizer's DEFAULT_WEIGHT_DECAY; 0 turns it off.
    """
    if weight_decay is None:
        weight_decay = DEFAULT_WEIGHT_DECAY[name]
    schedule = schedules.WarmupCosineDecay(
        phase.peak_lr, phase.total_steps, min(warmup_steps, phase.total_steps)
    )
    if name == "sgd":
        optimizer = tf_keras.optimizers.SGD(
            schedule, momentum=0.9, nesterov=True, weight_decay=weight_decay or None
        )
    else:
        optimizer = tf_keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    if weight_decay:
        # Decaying BatchNorm scales/offsets and biases only hurts (Loshchilov & Hutter 2019).
        optimizer.exclude_from_weight_decay(var_names=["bias", "beta", "gamma"])
    return optimizer


def compile_model(
    model: tf_keras.Model,
    optimizer: tf_keras.optimizers.Optimizer,
    num_classes: int,
    label_smoothing: float,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
) -> None:
    """Compiles with label-smoothed cross-entropy, top-1 and top-5 accuracy. Under a
    mixed_float16 policy Keras wraps the optimizer in a LossScaleOptimizer. `jit_compile`
    compiles the train step with XLA; `steps_per_execution` runs that many steps per call."""
    model.compile(
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
        optimizer=optimizer,
        loss=models.SparseCategoricalCrossentropyWithSmoothing(num_classes, label_smoothing),
        metrics=[
            tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            tf_keras.metrics.SparseTopKCategoricalAccuracy(k=_TOP_K, name="top5"),
        ],
    )


@dataclasses.dataclass(frozen=True)
class RunDirs:
    """Where this worker writes during training (scratch folders on non-chief workers)."""

    checkpoint_dir: str
    log_dir: str
    history_path: str | None  # None on non-chief workers.


def create_callbacks(
    config: TrainConfig, phase: Phase, dirs: RunDirs, stop_on_nan: callbacks.StopOnNaN
) -> list[tf_keras.callbacks.Callback]:
    """Per-epoch checkpoint, preemption backup, NaN guard, LR logging, TensorBoard and history.

    ModelCheckpoint and BackupAndRestore send non-chief workers' files to temporary folders
    themselves, so every worker gets the shared checkpoint folder. The backup comes last: it
    saves (and on SIGTERM exits) only after the others have recorded the epoch.
    """
    checkpoint_dir = dirs.checkpoint_dir
    result = [
        stop_on_nan,
        callbacks.FiniteModelCheckpoint(
            os.path.join(checkpoint_dir, "epochs", "epoch-{epoch:03d}"), save_weights_only=True
        ),
        callbacks.LearningRateLogger(),
        tf_keras.callbacks.TensorBoard(dirs.log_dir, update_freq="epoch", profile_batch=0),
    ]
    if dirs.history_path:
        result.append(callbacks.HistoryWriter(dirs.history_path, phase.name))
    if config.early_stopping_patience:
        result.append(
            tf_keras.callbacks.EarlyStopping(
                "val_accuracy", patience=config.early_stopping_patience, restore_best_weights=True
            )
        )
    backup_dir = os.path.join(checkpoint_dir, "backup", phase.name)
    result.append(preemption.BackupAndRestoreOnPreemption(backup_dir))
    return result


def choose_jit_compile(requested: str, strategy_name: str, num_gpus: int) -> bool:
    """XLA for the train step: 'on', 'off', or 'auto' = on for one GPU (default strategy) only.

    Under MirroredStrategy and MultiWorkerMirroredStrategy, XLA with Keras is known to break:
    with mixed_float16 the LossScaleOptimizer crashes in merge_call
    (https://github.com/keras-team/keras/issues/21366, TF 2.19), multi-GPU jit_compile fails
    or leaks (https://github.com/keras-team/tf-keras/issues/194,
    https://github.com/tensorflow/tensorflow/issues/56423), and Keras 3 disabled XLA under
    tf.distribute altogether "due to a suspected fundamental incompatibility"
    (https://github.com/keras-team/keras/pull/18716). On CPU it mostly adds compile time.
    """
    if requested not in JIT_COMPILE_CHOICES:
        raise ValueError(f"jit_compile={requested!r} is not one of {JIT_COMPILE_CHOICES}.")
    if requested != "auto":
        return requested == "on"
    return strategy_name == "default" and num_gpus == 1


JIT_COMPILE_CHOICES = ("auto", "on", "off")


def run_phase(
    model: tf_keras.Model,
    phase: Phase,
    config: TrainConfig,
    datasets: dict,
    dirs: RunDirs,
    num_classes: int,
    strategy: tf.distribute.Strategy,
    extra_callbacks: Sequence[tf_keras.callbacks.Callback] = (),
) -> None:
    """Sets the backbone's trainability for `phase`, recompiles, and fits the phase's epochs.

    Does nothing but load the weights when the phase finished in an earlier run of the job.
    """
    checkpoint_dir = dirs.checkpoint_dir
    done_marker = os.path.join(checkpoint_dir, f"phase-{phase.name}.done")
    weights_path = os.path.join(checkpoint_dir, f"phase-{phase.name}", "weights")
    with strategy.scope():
        if phase.name == "head":
            models.freeze_backbone(model)
        else:
            models.unfreeze_backbone(model, config.fine_tune_layers)
        warmup_steps = round(config.warmup_epochs * phase.steps_per_epoch)
        optimizer = create_optimizer(config.optimizer, phase, warmup_steps, config.weight_decay)
        compile_model(
            model,
            optimizer,
            num_classes,
            config.label_smoothing,
            jit_compile=choose_jit_compile(
                config.jit_compile,
                _strategy_name(strategy),
                len(tf.config.list_logical_devices("GPU")),
            ),
            steps_per_execution=config.steps_per_execution,
        )
    if tf.io.gfile.exists(done_marker):
        # Compiled first, so the checkpoint's optimizer state binds to this phase's optimizer
        # now; loaded into an uncompiled model it would be deferred and restored into the next
        # phase's fresh optimizer (its step count, hence its learning-rate schedule). Evaluation
        # after a finished job also needs a compiled model.
        print(f"Phase {phase.name} finished in an earlier run; loading its weights.", flush=True)
        model.load_weights(weights_path).expect_partial()
        return
    print(
        f"Phase {phase.name}: epochs {phase.initial_epoch + 1}-{phase.end_epoch}, "
        f"{phase.steps_per_epoch} steps each, peak learning rate {phase.peak_lr:g}, "
        f"{len(model.trainable_weights)} trainable weights.",
        flush=True,
    )
    # A restarted phase continues the interrupted epoch with the batches it had not trained.
    backup_dir = os.path.join(checkpoint_dir, "backup", phase.name)
    epoch, step = preemption.resume_point(backup_dir, phase.initial_epoch, phase.steps_per_epoch)
    stop_on_nan = callbacks.StopOnNaN()
    model.fit(
        datasets["train"](phase, epoch, step),
        initial_epoch=phase.initial_epoch,
        epochs=phase.end_epoch,
        steps_per_epoch=phase.steps_per_epoch,
        validation_data=datasets["validation"],
        callbacks=[
            *create_callbacks(config, phase, dirs, stop_on_nan),
            *extra_callbacks,
        ],
        # A live progress bar on a terminal; one line per epoch in log files (Vertex AI), which
        # also spares the per-step host sync the bar needs.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    stop_on_nan.raise_if_diverged(phase.peak_lr)
    chief = distribute.is_chief(config.tf_config)
    _mark_phase_done(model, phase.name, weights_path, done_marker, chief)


def _mark_phase_done(
    model: tf_keras.Model, phase_name: str, weights_path: str, marker: str, chief: bool
) -> None:
    """Saves the phase's final weights, then (chief only) the marker that says they are complete."""
    with distribute.chief_or_temporary_dir(os.path.dirname(weights_path), chief) as folder:
        model.save_weights(os.path.join(folder, "weights"))
    if chief:
        outputs.write_json_atomic(marker, {"weights": weights_path, "time": time.time()})
    # The marker now says the phase is complete; its preemption backup is no longer needed.
    backup_dir = os.path.join(os.path.dirname(marker), "backup", phase_name)
    if chief and tf.io.gfile.exists(backup_dir):
        tf.io.gfile.rmtree(backup_dir)


def train_and_evaluate(
    config: TrainConfig,
    job_dir: str,
    extra_callbacks: Sequence[tf_keras.callbacks.Callback] = (),
) -> dict:
    """Trains, evaluates on the test split and exports the model; returns the test metrics.

    Writes to `job_dir`: config.json (first), history.json, metrics.json,
    confusion_matrix.png, predictions.png; the model, checkpoints and TensorBoard logs go to
    `config.outputs` (default job_dir/{model,checkpoints,logs}). Only the chief writes them.

    Args:
      config: a validated TrainConfig.
      job_dir: folder (local or gs://) for this run's outputs.
      extra_callbacks: added to every `fit` (tests use one to simulate preemption).
    """
    # --- Set-up: strategy first (multi-worker collectives must exist before other ops). ---
    started = time.time()
    strategy_name = distribute.choose_strategy_name(
        config.strategy, config.tf_config, len(tf.config.list_physical_devices("GPU"))
    )
    strategy = distribute.create_strategy(
        strategy_name, config.tf_config, config.worker_heartbeat_timeout, config.startup_timeout
    )
    precision = distribute.choose_precision(config.precision, distribute.local_gpu_capabilities())
    chief = distribute.is_chief(config.tf_config)
    dirs_out = config.outputs or resolve_output_dirs(job_dir, {})
    tf_keras.utils.set_random_seed(config.seed)
    builder = input_pipeline.load_builder(config.dataset, config.data_dir)
    info = input_pipeline.describe(builder)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    num_train = builder.info.splits[config.train_split].num_examples  # Slices allowed.
    phases = create_phases(config, num_train, global_batch)
    if chief:
        _write_run_config(job_dir, config, info, strategy_name, strategy, precision, global_batch)

    with distribute.precision_policy(precision), tempfile.TemporaryDirectory() as scratch:
        dirs = RunDirs(
            checkpoint_dir=dirs_out.checkpoint_dir,
            log_dir=dirs_out.tensorboard_dir if chief else scratch,
            history_path=os.path.join(job_dir, "history.json") if chief else None,
        )
        # --- Data. ---
        datasets = create_datasets(builder, config, strategy)
        # --- Model. ---
        with strategy.scope():
            backbone, backbone_info = backbones.create_backbone(config.backbone, config.image_size)
            model = models.create_model(
                backbone,
                len(info.class_names),
                config.image_size,
                config.dropout,
                train_batchnorm=config.fine_tune_batchnorm,
            )
        _warn_if_untrained(backbone_info)
        if chief:  # From a pipeline of their own: the training batches stay as they are.
            images = sample_training_images(builder, config)
            extra_callbacks = [
                callbacks.InputImagesSummary(images, dirs.log_dir),
                hypertune.EpochMetricReporter("accuracy", "val_accuracy"),  # Every epoch.
                *extra_callbacks,
            ]
        # --- Training: frozen backbone, then fine-tuning. ---
        for phase in phases:
            run_phase(
                model, phase, config, datasets, dirs, len(info.class_names), strategy,
                extra_callbacks,
            )  # fmt: skip
        # Every worker prints it: under multi-worker training they must all hold the same.
        print(f"final weights checksum: {distribute.weights_checksum(model)}", flush=True)
        # --- Evaluation and export. ---
        metrics = evaluate_and_export(
            model, datasets, config, info, backbone_info, dirs_out.model_dir, job_dir, chief
        )
    metrics["wall_seconds"] = round(time.time() - started, 1)
    if chief:
        _print_summary(metrics, job_dir, dirs_out, backbone_info)
    return metrics


def create_datasets(builder, config: TrainConfig, strategy: tf.distribute.Strategy) -> dict:
    """Validation and test pipelines, and "train": `make(phase, epoch, step)`, the phase's
    training data from `step` of `epoch` on (see `create_train_data`)."""
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    common = dict(batch_size=global_batch, image_size=config.image_size, cache=config.cache)
    return {
        "train": lambda phase, epoch, step: create_train_data(
            builder, config, strategy, phase, epoch, step
        ),
        "validation": input_pipeline.create_split(builder, config.validation_split, **common),
        "test": input_pipeline.create_split(builder, config.test_split, **common),
    }


def create_train_data(
    builder,
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    phase: Phase,
    epoch: int,
    step: int,
):
    """The phase's training batches from `step` of `epoch` to the phase's end, distributed.

    Each input pipeline (one per worker) reads and decodes only its share of the split:
    `distribute_datasets_from_function` hands each its InputContext, and a pipeline feeding
    several replicas (GPUs of one machine) serves them per-replica batches in turn.
    """
    global_batch = config.batch_size * strategy.num_replicas_in_sync

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        return input_pipeline.create_train_split(
            builder,
            config.train_split,
            batch_size=context.get_per_replica_batch_size(global_batch),
            image_size=config.image_size,
            steps_per_epoch=phase.steps_per_epoch * replicas_per_pipeline,
            epochs=range(epoch, phase.end_epoch),
            start_step=step * replicas_per_pipeline,
            seed=config.seed,
            cache=config.cache,
            pipeline_id=context.input_pipeline_id,
            num_pipelines=context.num_input_pipelines,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def sample_training_images(builder, config: TrainConfig, count: int = 8) -> np.ndarray:
    """The first `count` augmented images of the first epoch, from a pipeline of their own."""
    batch = input_pipeline.create_train_split(
        builder,
        config.train_split,
        batch_size=count,
        image_size=config.image_size,
        steps_per_epoch=1,
        epochs=range(1),
        seed=config.seed,
    )
    images, _ = next(iter(batch))
    return images.numpy()


def _strategy_name(strategy: tf.distribute.Strategy) -> str:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    return "default"


def evaluate_and_export(
    model: tf_keras.Model,
    datasets: dict[str, tf.data.Dataset],
    config: TrainConfig,
    info: input_pipeline.DatasetInfo,
    backbone_info: backbones.BackboneInfo,
    model_dir: str,
    job_dir: str,
    chief: bool,
) -> dict:
    """Validation accuracy (reported to Vertex tuning), test metrics, figures, SavedModel.

    Every worker evaluates and exports (both may use collective ops under multi-worker
    training); only the chief keeps the files.
    """
    validation = model.evaluate(datasets["validation"], return_dict=True, verbose=0)
    result = evaluate.evaluate_model(model, datasets["test"], info.class_names, top_k=_TOP_K)
    exports = export.export_and_measure(
        model, config, info.class_names, model_dir, job_dir, formats=config.export_formats,
        chief=chief,
    )  # fmt: skip
    metrics = {
        **result.metrics,
        "exports": exports,
        "validation_accuracy": float(validation["accuracy"]),
        "validation_loss": float(validation["loss"]),
        "dataset": info.name,
        "dataset_version": info.version,
        "backbone": backbone_info.handle,
        "backbone_pretrained": backbone_info.pretrained,
        "model_dir": model_dir,
    }
    if chief:
        hypertune.report_metric("accuracy", metrics["validation_accuracy"], step=config.epochs)
        outputs.write_json_atomic(os.path.join(job_dir, "metrics.json"), metrics)
        figures.plot_confusion_matrix(
            result.confusion, info.class_names, os.path.join(job_dir, "confusion_matrix.png")
        )
        figures.plot_predictions(
            result.images,
            result.probabilities,
            result.labels,
            info.class_names,
            os.path.join(job_dir, "predictions.png"),
        )
    return metrics


def _write_run_config(
    job_dir: str,
    config: TrainConfig,
    info: input_pipeline.DatasetInfo,
    strategy_name: str,
    strategy: tf.distribute.Strategy,
    precision: str,
    global_batch: int,
) -> None:
    """job_dir/config.json: the resolved configuration, written before training starts."""
    outputs.write_json_atomic(
        os.path.join(job_dir, "config.json"),
        {
            "flags": config.to_dict(),
            "dataset": {"name": info.name, "version": info.version, "splits": info.split_sizes},
            "tensorflow_version": tf.__version__,
            "strategy": strategy_name,
            "replicas": strategy.num_replicas_in_sync,
            "global_batch_size": global_batch,
            "precision_policy": precision,
        },
    )


def _warn_if_untrained(backbone_info: backbones.BackboneInfo) -> None:
    if not backbone_info.pretrained:
        logging.warning(
            "UNTRAINED BACKBONE: %s has random weights, not ImageNet ones: fine for tests and "
            "smoke runs, but accuracy will be far below a pretrained backbone's.",
            backbone_info.handle,
        )


def _print_summary(metrics: dict, job_dir: str, dirs_out, backbone_info) -> None:
    """What a person wants after a run: the numbers and where everything went."""
    lines = [
        f"Run finished in {metrics['wall_seconds']:.0f} s.",
        f"  test top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}, "
        f"loss {metrics['loss']:.4f}; validation top-1 {metrics['validation_accuracy']:.4f}",
        f"  metrics, figures, config: {job_dir}",
        f"  model (SavedModel):       {dirs_out.model_dir}",
        f"  checkpoints:              {dirs_out.checkpoint_dir}",
        f"  TensorBoard:              tensorboard --logdir {dirs_out.tensorboard_dir}",
    ]
    if not backbone_info.pretrained:
        lines.append("  WARNING: the backbone was UNTRAINED (backbone_pretrained: false).")
    print("\n".join(lines), flush=True)
