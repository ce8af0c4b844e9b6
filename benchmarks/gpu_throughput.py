r"""GPU training throughput: one table of images/s for the trainer's training step.

    python -m benchmarks.gpu_throughput            # on a GPU machine: about 5 minutes
    python -m benchmarks.gpu_throughput --quick    # tiny CPU run proving the script works

Rows (UNMEASURED on a GPU so far: this repository has not had one; see README):
- source: `memory` (one batch of float32 tensors, repeated: the GPU's ceiling) or `tfds`
  (end to end: JPEGs through `input_pipeline.create_train_split` with --cache=decoded, from
  a SYNTHETIC resized_256 build made here; the first pass fills the cache, untimed);
- backbone: `hub` (a MobileNet V2 1.3 SavedModel through hub.KerasLayer, as a TF Hub handle
  loads; exported here untrained, since the machine may be offline: speed does not depend on
  weight values) or `keras` (keras:mobilenet_v2_130:untrained, all layers follow the dtype
  policy);
- precision: float32, mixed_float16, or mixed_float16 + XLA (jit_compile);
- batch: 128 and 256.
Every row trains the whole network (fine-tuning phase: AdamW, the trainer's loss and
metrics, via train.create_optimizer and train.compile_model) with --steps_per_execution.
"input-bound" compares a tfds row with the memory row of the same model: the step waits
for data when tfds reaches < 90 % of memory. Target (issue 10): >= 4,000 img/s end to end on
one H100/H200 with mixed precision + XLA, GPU-bound.
"""

from __future__ import annotations

import os
import tempfile
import time

from trainer import cli  # isort: skip - first: it quiets TensorFlow before TensorFlow loads.

import numpy as np
import tensorflow as tf
import tf_keras
from absl import flags

from trainer import backbones, distribute, input_pipeline, models, train

flags.DEFINE_bool(
    "quick", False, "Tiny CPU setting: 32 px, batch 8, few steps, 4 rows covering every path."
)
flags.DEFINE_integer("steps", 40, "Timed steps per row (after --warmup_steps).")
flags.DEFINE_integer("warmup_steps", 16, "Untimed steps per row (tracing, XLA compile).")
flags.DEFINE_integer("steps_per_execution", 8, "Steps per tf.function call.")
flags.DEFINE_integer("images_per_class", 60, "Synthetic archive size for the tfds rows.")
FLAGS = flags.FLAGS

_PRECISIONS = {
    "float32": ("float32", False),
    "mixed_float16": ("mixed_float16", False),
    "mixed_float16 + XLA": ("mixed_float16", True),
}


class _StepTimer(tf_keras.callbacks.Callback):
    """Wall time from the end of the warm-up steps to the end of training."""

    def __init__(self, warmup_steps: int):
        super().__init__()
        self._warmup, self.start, self.end = warmup_steps, None, None

    def on_train_batch_end(self, batch, logs=None):
        if self.start is None and batch + 1 >= self._warmup:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()


def train_rate(handle: str, precision: str, jit: bool, batch: int, data_fn, size: int) -> float:
    """Images/s of the fine-tuning step for one configuration."""
    tf_keras.backend.clear_session()
    with distribute.precision_policy(precision):
        backbone, _ = backbones.create_backbone(handle, size)
        model = models.create_model(backbone, 20, size)
        models.unfreeze_backbone(model)
        steps = FLAGS.warmup_steps + FLAGS.steps
        phase = train.Phase("fine_tune", 0, 1, 1e-3, steps)
        optimizer = train.create_optimizer("adamw", phase, 0, None)
        train.compile_model(model, optimizer, 20, 0.1, jit, FLAGS.steps_per_execution)
        timer = _StepTimer(FLAGS.warmup_steps)
        model.fit(
            data_fn(batch, steps), epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0
        )
    timed = FLAGS.steps // FLAGS.steps_per_execution * FLAGS.steps_per_execution
    return timed * batch / (timer.end - timer.start)


def memory_data(size: int):
    def make(batch: int, steps: int) -> tf.data.Dataset:
        rng = np.random.default_rng(0)
        images = rng.uniform(size=(batch, size, size, 3)).astype("float32")
        labels = rng.integers(0, 20, batch)
        return tf.data.Dataset.from_tensors((images, labels)).repeat()

    return make


def tfds_data(builder, size: int):
    def make(batch: int, steps: int) -> tf.data.Dataset:
        per_pass = builder.info.splits["train"].num_examples // batch
        if per_pass < 1:
            raise ValueError(
                f"the synthetic split has fewer than {batch} images; raise --images_per_class"
            )
        passes = 1 + -(-steps // per_pass)
        data = input_pipeline.create_train_split(
            builder, "train", batch_size=batch, image_size=size, steps_per_epoch=per_pass,
            epochs=range(passes), cache="decoded",
        )  # fmt: skip
        for _ in data.take(per_pass):  # Fill the decoded cache; the timed steps read from it.
            pass
        return data.skip(per_pass)

    return make


def _build_sample(scratch: str, per_class: int, source_size: tuple[int, int]):
    from tfds_oregon import build, sample

    manual = os.path.join(scratch, "manual")
    sample.write_sample_archive(
        os.path.join(manual, "oregon-wildlife.zip"), per_class, image_size=source_size
    )
    data_dir = os.path.join(scratch, "tfds")
    build.build_dataset(manual, data_dir, config="resized_256")
    return input_pipeline.load_builder(input_pipeline.DEFAULT_DATASET, data_dir)


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.quick:
        size, batches, alpha = 32, (8,), 0.35  # Batches: see the quick rows below.
        FLAGS.steps, FLAGS.warmup_steps, FLAGS.steps_per_execution = 4, 2, 2
        per_class, source = 3, (64, 48)
    else:
        size, batches, alpha = 224, (128, 256), 1.3
        per_class, source = FLAGS.images_per_class, (400, 300)
    device = tf.config.list_physical_devices("GPU")
    with tempfile.TemporaryDirectory() as scratch:
        handles = {
            "hub": backbones.export_untrained_backbone(
                os.path.join(scratch, "hub"), alpha=alpha, image_size=size
            ),
            "keras": f"keras:mobilenet_v2_{round(alpha * 100):03d}:untrained",
        }
        builder = _build_sample(scratch, per_class, source)
        sources = {"memory": memory_data(size), "tfds": tfds_data(builder, size)}
        configs = [
            (source, backbone, precision, batch)
            for source in sources
            for backbone in handles
            for precision in _PRECISIONS
            for batch in batches
        ]
        if FLAGS.quick:  # Every code path once: both sources, backbones and precisions.
            configs = [
                ("memory", "hub", "float32", 8),
                ("memory", "hub", "mixed_float16", 8),
                ("memory", "keras", "mixed_float16 + XLA", 8),
                ("tfds", "keras", "mixed_float16 + XLA", 8),
            ]
        rows = []
        for source, backbone, precision_name, batch in configs:
            precision, jit = _PRECISIONS[precision_name]
            rate = train_rate(handles[backbone], precision, jit, batch, sources[source], size)
            rows.append((source, backbone, precision_name, batch, rate))
            print(f"{rows[-1]}", flush=True)
    _print_table(rows, device, size)


def _print_table(rows, device, size: int) -> None:
    memory = {row[1:4]: row[4] for row in rows if row[0] == "memory"}
    where = f"{len(device)} GPU(s)" if device else f"CPU only ({os.cpu_count()} cores)"
    print(
        f"\nTraining throughput, whole network trained, {size} px, {where}, "
        f"{FLAGS.steps} timed steps, steps_per_execution {FLAGS.steps_per_execution}\n"
    )
    print("| source | backbone | precision | batch | img/s | input-bound |")
    print("|---|---|---|---:|---:|---|")
    for source, backbone, precision, batch, rate in rows:
        bound = ""
        if source == "tfds":
            ratio = rate / memory[(backbone, precision, batch)]
            bound = f"{'yes' if ratio < 0.9 else 'no'} ({ratio:.2f} of memory)"
        print(f"| {source} | {backbone} | {precision} | {batch} | {rate:,.0f} | {bound} |")


if __name__ == "__main__":
    cli.run(main)
