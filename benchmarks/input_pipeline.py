r"""Benchmark: the trainer's input pipelines against a bare tf.data pipeline, and the caches.

    python -m benchmarks.input_pipeline [--data_dir=DIR] [--images_per_class=12] [--epochs=3]

Without --data_dir it builds `oregon_wildlife/resized_256` from a SYNTHETIC archive of
400x300 JPEGs (so 341x256 after resizing, like the real build). In one run, in alternating
rounds (so both arms see the same machine load), it measures images/s and CPU-ms per image:
- training: `input_pipeline.create_train_split` against a bare tf.data pipeline doing the
  same work on the same records (decode the random crop, flip, resize to 224 with
  antialiasing when the crop shrinks, scale, batch), with no sharding, no seeded per-epoch
  order and no determinism; and a bare pipeline that never antialiases (the least work);
- evaluation (of the training split, for size): `create_split` against a bare centre-crop
  decode + resize + scale + batch;
Every arm runs --epochs passes and is timed after its first --warmup_batches batches
(tracing, thread start-up).
- training with --cache=none / encoded / decoded, in epochs after the first (the caches are
  filled by then): CPU-ms per image, and the images/s that 8 and 16 vCPUs could feed
  (1000 / CPU-ms x vCPUs: an ESTIMATE that assumes the pipeline scales with cores and the
  machine has nothing else to do).
Prints one Markdown table.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from trainer import cli  # isort: skip - first: it quiets TensorFlow before TensorFlow loads.

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags

from trainer import input_pipeline

flags.DEFINE_string("data_dir", None, "A data_dir with oregon_wildlife/resized_256 built.")
flags.DEFINE_integer("images_per_class", 30, "Synthetic archive size when no --data_dir.")
flags.DEFINE_integer("warmup_batches", 3, "Untimed batches at the start of every arm.")
flags.DEFINE_integer("image_size", 224, "Output height and width.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("epochs", 3, "Epochs per training measurement (the first is warm-up).")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the table gives medians.")
FLAGS = flags.FLAGS


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def measure(make_dataset, warmup_batches: int) -> tuple[float, float]:
    """(images/s, CPU-ms per image) of iterating `make_dataset()` after `warmup_batches`."""
    iterator = iter(make_dataset())
    for _ in range(warmup_batches):
        next(iterator)
    images, wall, cpu = 0, time.perf_counter(), _cpu_seconds()
    for batch, _ in iterator:
        images += int(batch.shape[0])
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    return images / wall, 1000 * cpu / images


def _bare_records(builder, split: str) -> tf.data.Dataset:
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    return ds.map(lambda example: (example["image"], example["label"]))


def bare_train(builder, epochs: int, size: int, batch: int, antialias: bool) -> tf.data.Dataset:
    """Decode the random crop, flip, resize (antialiased when it shrinks, if `antialias`),
    scale, batch."""

    def preprocess(image_bytes, label, seed):
        begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.image.extract_jpeg_shape(image_bytes),
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            seed=seed,
            area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3),
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
        image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
        image = tf.image.stateless_random_flip_left_right(image, seed=seed)
        if antialias:
            image = tf.cond(
                tf.reduce_any(crop[:2] > size),
                lambda: tf.image.resize(image, [size, size], antialias=True),
                lambda: tf.image.resize(image, [size, size]),
            )
        else:
            image = tf.image.resize(image, [size, size])
        return image / 255.0, label

    ds = _bare_records(builder, "train").repeat(epochs)
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(
        lambda example, seed: preprocess(*example, seed), tf.data.AUTOTUNE
    )
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def bare_eval(builder, size: int, batch: int) -> tf.data.Dataset:
    """Decode the centre crop, resize, scale, batch."""

    def preprocess(image_bytes, label):
        shape = tf.image.extract_jpeg_shape(image_bytes)
        side = tf.cast(tf.cast(tf.minimum(shape[0], shape[1]), tf.float32) * 0.875, tf.int32)
        window = tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])
        image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
        return tf.image.resize(image, [size, size]) / 255.0, label

    ds = _bare_records(builder, "train").map(preprocess, tf.data.AUTOTUNE)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def _ours_train(builder, epochs: int, size: int, batch: int, cache: str) -> tf.data.Dataset:
    steps = builder.info.splits["train"].num_examples // batch
    return input_pipeline.create_train_split(
        builder, "train", batch_size=batch, image_size=size, steps_per_epoch=steps,
        epochs=range(epochs), cache=cache,
    )  # fmt: skip


def run(builder) -> list[tuple[str, float, float, str]]:
    size, batch, epochs = FLAGS.image_size, FLAGS.batch_size, FLAGS.epochs
    steps = builder.info.splits["train"].num_examples // batch
    warm = FLAGS.warmup_batches
    arms = {
        "train: bare tf.data": lambda: measure(
            lambda: bare_train(builder, epochs, size, batch, antialias=True), warm
        ),
        "train: bare tf.data, never antialiased": lambda: measure(
            lambda: bare_train(builder, epochs, size, batch, antialias=False), warm
        ),
        "train: trainer": lambda: measure(
            lambda: _ours_train(builder, epochs, size, batch, "none"), warm
        ),
        "eval: bare tf.data": lambda: measure(lambda: bare_eval(builder, size, batch), warm),
        "eval: trainer": lambda: measure(
            lambda: input_pipeline.create_split(
                builder, "train", batch_size=batch, image_size=size
            ),
            warm,
        ),
    }
    for cache in input_pipeline.CACHE_MODES:  # Epoch 1 fills the cache: measure the rest.
        arms[f"train, cache={cache}, epochs 2+"] = lambda cache=cache: measure(
            lambda: _ours_train(builder, epochs, size, batch, cache), warmup_batches=steps
        )
    results = {name: [] for name in arms}
    for _ in range(FLAGS.rounds):
        for name, arm in arms.items():
            results[name].append(arm())
    rows = []
    for name, runs in results.items():
        rate = statistics.median(r[0] for r in runs)
        cpu_ms = statistics.median(r[1] for r in runs)
        rows.append((name, rate, cpu_ms))
    return rows


def print_table(rows) -> None:
    by_name = {name: (rate, cpu_ms) for name, rate, cpu_ms in rows}
    print(
        f"\n{os.cpu_count()} cores visible; median of {FLAGS.rounds} alternating rounds; "
        f"batch {FLAGS.batch_size}, {FLAGS.image_size} px.\n"
    )
    print(
        "| pipeline | images/s | CPU-ms/image | vs bare | est. 8 vCPU img/s | est. 16 vCPU img/s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, rate, cpu_ms in rows:
        bare = "train: bare tf.data" if name.startswith("train") else "eval: bare tf.data"
        ratio = rate / by_name[bare][0]
        print(
            f"| {name} | {rate:,.0f} | {cpu_ms:.2f} | {ratio:.2f}x | "
            f"{8000 / cpu_ms:,.0f} | {16000 / cpu_ms:,.0f} |"
        )


def _build_sample(scratch: str, per_class: int) -> str:
    from tfds_oregon import build, sample

    manual = os.path.join(scratch, "manual")
    sample.write_sample_archive(
        os.path.join(manual, "oregon-wildlife.zip"), per_class, image_size=(400, 300)
    )
    data_dir = os.path.join(scratch, "tfds")
    build.build_dataset(manual, data_dir, config="resized_256")
    return data_dir


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = FLAGS.data_dir or _build_sample(scratch, FLAGS.images_per_class)
        builder = input_pipeline.load_builder(input_pipeline.DEFAULT_DATASET, data_dir)
        print_table(run(builder))


if __name__ == "__main__":
    cli.run(main)
