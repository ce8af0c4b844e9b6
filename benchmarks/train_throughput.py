r"""Training throughput of the trainer against a bare `tf_keras` `model.fit`, same run.

    python -m benchmarks.train_throughput                       # both data modes, CPU defaults
    python -m benchmarks.train_throughput --image_size=224 --batch_size=64   # on a GPU

Arms (interleaved, `--repeats` times each, fresh model each time, same seed):
  trainer  : trainer.backbones/models/train factories and `train.run_phase` (the fine-tuning
             phase: whole backbone trainable, warm-up + cosine AdamW, label-smoothed loss,
             top-1/top-5 metrics, and the trainer's callbacks: BackupAndRestore, a checkpoint
             per epoch, TensorBoard, history, NaN guard).
  bare     : the same model and training step (the trainer's optimizer, schedule, loss and
             metrics through train.create_optimizer/compile_model), `fit`
             with no callbacks and the same validation data (both validate every epoch).
Data modes:
  memory   : both arms read the same in-memory float32 tensors (isolates the fit path).
  tfds     : the trainer reads JPEGs through trainer.input_pipeline (decode, random crop,
             flip) from a built dataset; the bare arm reads the same images pre-decoded in
             memory (so the ratio includes the whole input pipeline's cost).
Throughput = images / second over the training steps of the timed epochs (the first epoch,
with tracing, is not timed). Epoch-end = the seconds each epoch spends after its last step
(validation for both; checkpoint, backup, TensorBoard and history writes for the trainer),
which a real epoch of ~170 steps amortises. Peak memory is the process's peak RSS during the
arm: every arm runs in a fresh process, so it is that arm's own (TensorFlow runtime included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras

from trainer import backbones, input_pipeline, models, standin_backbone, train
from trainer.config import TrainConfig


class _EpochTimer(tf_keras.callbacks.Callback):
    """Times each epoch's training steps, and separately its end (validation, checkpoints)."""

    def __init__(self, steps: int):
        super().__init__()
        self._supports_tf_logs = True  # No per-step host sync from the timer itself.
        self._steps = steps
        self.train_seconds: list[float] = []
        self.end_seconds: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch == self._steps - 1:
            # Wait for the step to finish on the device before reading the clock.
            tf_keras.backend.get_value(self.model.optimizer.iterations)
            self._last_step_end = time.perf_counter()
            self.train_seconds.append(self._last_step_end - self._start)

    def on_epoch_end(self, epoch, logs=None):
        self.end_seconds.append(time.perf_counter() - self._last_step_end)


def _peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _create_model(args) -> tf_keras.Model:
    tf_keras.utils.set_random_seed(0)
    backbone, _ = backbones.create_backbone(args.backbone, args.image_size)
    return models.create_model(backbone, 20, args.image_size, dropout_rate=0.2)


def _create_phase(args) -> train.Phase:
    return train.Phase("fine_tune", 0, args.epochs + 1, 1e-3, args.steps)


def run_trainer_arm(args, config, train_data, validation_data, scratch) -> _EpochTimer:
    """The trainer's own fine-tuning phase; returns its epoch timings."""
    model = _create_model(args)
    phase = _create_phase(args)
    dirs = train.RunDirs(os.path.join(scratch, "ckpt"), os.path.join(scratch, "logs"), None)
    timer = _EpochTimer(args.steps)
    datasets = {"train": lambda phase, epoch, step: train_data, "validation": validation_data}
    strategy = tf.distribute.get_strategy()
    train.run_phase(model, phase, config, datasets, dirs, 20, strategy, [timer])
    return timer


def run_bare_arm(args, config, images, labels, validation_data) -> _EpochTimer:
    """Plain Keras: the same model and training step (optimizer, schedule, loss, metrics),
    compiled and fitted with nothing else around it; returns its epoch timings."""
    model = _create_model(args)
    models.unfreeze_backbone(model)
    phase = _create_phase(args)
    warmup_steps = round(config.warmup_epochs * phase.steps_per_epoch)  # As run_phase does.
    optimizer = train.create_optimizer(config.optimizer, phase, warmup_steps, config.weight_decay)
    train.compile_model(model, optimizer, 20, config.label_smoothing)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
    data = data.batch(args.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    timer = _EpochTimer(args.steps)
    model.fit(
        data,
        epochs=args.epochs + 1,
        steps_per_epoch=args.steps,
        validation_data=validation_data,  # The trainer validates every epoch too.
        callbacks=[timer],
        verbose=0,
    )
    return timer


def _in_memory(images, labels, batch_size, repeat):
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    data = data.repeat() if repeat else data
    return data.batch(batch_size, drop_remainder=repeat).prefetch(tf.data.AUTOTUNE)


def _prepare_data(args, mode: str, scratch: str):
    """(trainer train data, validation data, bare-arm images, bare-arm labels)."""
    if mode == "memory":
        rng = np.random.default_rng(0)
        images = rng.uniform(size=(args.batch_size * 4, args.image_size, args.image_size, 3))
        images, labels = images.astype("float32"), rng.integers(0, 20, args.batch_size * 4)
        validation = _in_memory(images[: args.batch_size], labels[: args.batch_size], 32, False)
        return _in_memory(images, labels, args.batch_size, True), validation, images, labels
    builder = input_pipeline.load_builder(input_pipeline.DEFAULT_DATASET, args.data_dir)
    common = dict(batch_size=args.batch_size, image_size=args.image_size)
    # Whole passes over the (small) split, enough of them for every step the arm trains.
    steps_per_pass = builder.info.splits["train"].num_examples // args.batch_size
    passes = -(-args.steps * (args.epochs + 1) // steps_per_pass)
    trainer_train = input_pipeline.create_train_split(
        builder, "train", steps_per_epoch=steps_per_pass, epochs=range(passes), **common
    )
    validation = input_pipeline.create_split(builder, "validation", **common)
    decoded = input_pipeline.create_split(builder, "train", **common)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in decoded], strict=True)
    return trainer_train, validation, np.concatenate(images), np.concatenate(labels)


def _build_sample_dataset(scratch: str) -> str:
    from tfds_oregon import build, sample

    manual = os.path.join(scratch, "manual")
    sample.write_sample_archive(
        os.path.join(manual, "oregon-wildlife.zip"), 12, image_size=(320, 240)
    )
    data_dir = os.path.join(scratch, "tfds")
    build.build_dataset(manual, data_dir, config="resized_256")
    return data_dir


def run_arm(args) -> dict:
    """One arm, in this (fresh) process: images/s, epoch-end seconds and peak RSS."""
    with tempfile.TemporaryDirectory() as scratch:
        train_data, validation, images, labels = _prepare_data(args, args.mode, scratch)
        config = TrainConfig(
            data_dir="", backbone=args.backbone, image_size=args.image_size,
            batch_size=args.batch_size, steps_per_epoch=args.steps, precision="float32",
            strategy="default",
        )  # fmt: skip
        if args.arm == "trainer":
            timer = run_trainer_arm(args, config, train_data, validation, scratch)
        else:
            timer = run_bare_arm(args, config, images, labels, validation)
    # The first epoch (tracing, warm-up) is not timed.
    return {
        "images_per_s": args.steps * args.batch_size * args.epochs / sum(timer.train_seconds[1:]),
        "epoch_end_s": statistics.median(timer.end_seconds[1:]),
        "peak_rss_mib": _peak_rss_mib(),
    }


def benchmark(args, mode: str, data_dir: str | None) -> dict:
    """Interleaved repeats of both arms, each in its own process (so peak RSS is the arm's);
    returns the median of each measure per arm."""
    runs = {"trainer": [], "bare": []}
    for repeat in range(args.repeats):
        for arm in ("trainer", "bare") if repeat % 2 == 0 else ("bare", "trainer"):
            flags = [f"--{name}={getattr(args, name)}" for name in _SHARED_FLAGS]
            command = [sys.executable, "-m", "benchmarks.train_throughput", *flags]
            command += [f"--arm={arm}", f"--mode={mode}", f"--data_dir={data_dir or ''}"]
            child = subprocess.run(command, capture_output=True, text=True, check=False)
            if child.returncode != 0:
                raise RuntimeError(f"{arm} arm failed:\n{child.stderr[-3000:]}")
            runs[arm].append(json.loads(child.stdout.strip().splitlines()[-1]))
    return {
        arm: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for arm, results in runs.items()
    }


_SHARED_FLAGS = ("backbone", "image_size", "batch_size", "steps", "epochs")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=None, help="Default: MobileNet V2 1.3 stand-in.")
    parser.add_argument("--image_size", type=int, default=96)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="Steps per epoch.")
    parser.add_argument("--epochs", type=int, default=2, help="Timed epochs (+1 untimed).")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", default="memory,tfds")
    parser.add_argument("--data_dir", default=None, help="Built dataset for the tfds mode.")
    parser.add_argument("--arm", choices=("trainer", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("memory", "tfds"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.arm:  # A child process: run one arm, print its measures as JSON.
        print(json.dumps(run_arm(args)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        if args.backbone is None:
            args.backbone = standin_backbone.export_untrained_backbone(
                os.path.join(scratch, "mobilenet_v2_130"), 1.3, args.image_size
            )
        modes = args.modes.split(",")
        data_dir = args.data_dir or (_build_sample_dataset(scratch) if "tfds" in modes else None)
        rows = [(mode, benchmark(args, mode, data_dir)) for mode in modes]
    _print_table(args, rows)


def _print_table(args: argparse.Namespace, rows: list[tuple[str, dict]]) -> None:
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(
        f"\nTraining throughput, MobileNet V2 1.3 backbone, {args.image_size} px, batch "
        f"{args.batch_size}, {device}; median of {args.repeats} interleaved repeats (each arm "
        f"in its own process) x {args.epochs} timed epochs x {args.steps} steps\n"
    )
    print(
        "| data | trainer img/s | bare fit img/s | ratio | epoch-end s trainer / bare "
        "| peak RSS MiB trainer / bare |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for mode, result in rows:
        trainer, bare = result["trainer"], result["bare"]
        print(
            f"| {mode} | {trainer['images_per_s']:.1f} | {bare['images_per_s']:.1f} | "
            f"{trainer['images_per_s'] / bare['images_per_s']:.3f} | "
            f"{trainer['epoch_end_s']:.2f} / {bare['epoch_end_s']:.2f} | "
            f"{trainer['peak_rss_mib']:.0f} / {bare['peak_rss_mib']:.0f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
