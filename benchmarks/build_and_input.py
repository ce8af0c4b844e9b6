"""Benchmark: building oregon_wildlife, and reading it back, `full` vs `resized_256`.

    python -m benchmarks.build_and_input [--images 200] [--size 2400x1600]

Generates a SYNTHETIC archive of photo-sized JPEGs (a few megapixels, ~300 KB each, like the
real archive's), then measures, in one run on this machine:
- conversion throughput: a naive baseline (one thread, full decode, then resize; no draft
  mode) against `tfds_oregon.images.convert` (identity decode in draft mode, perceptual hash,
  resize, encode) on one thread and on all cores (the second worker's gain is their ratio);
- grouping 14,000 perceptual hashes into near-duplicate groups (what the builder does once);
- end-to-end `download_and_prepare` throughput for both configs (TFDS writing included);
- input-pipeline throughput (decode + random crop + resize to 224 + batch of 32) for both.
Prints a Markdown table with the ratios.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import zipfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tfds_oregon import build, images, prepare, sample, splits

_SHORT_SIDE = 256
_BATCH = 32
_CROP_SIDE = 224


def naive_convert(data: bytes) -> bytes:
    """The bare baseline: decode every pixel, resize to a 256 shorter side, encode."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    scale = _SHORT_SIDE / min(rgb.size)
    size = (round(rgb.width * scale), round(rgb.height * scale))
    buffer = io.BytesIO()
    rgb.resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def conversion_rates(archive_path: str) -> dict[str, float]:
    """Images per second of the naive baseline and of `images.convert` (1 thread, all)."""
    with zipfile.ZipFile(archive_path) as zf:
        blobs = [zf.read(n) for n in zf.namelist() if n.endswith(".jpg")]
    rates = {}
    start = time.perf_counter()
    for data in blobs:
        naive_convert(data)
    rates["naive"] = len(blobs) / (time.perf_counter() - start)
    for workers in (1, os.cpu_count() or 1):
        start = time.perf_counter()
        for _ in prepare.ordered_map(lambda d: images.convert(d, _SHORT_SIDE), blobs, workers):
            pass
        rates[f"draft_{workers}"] = len(blobs) / (time.perf_counter() - start)
    return rates


def grouping_rate(n: int = 14_000) -> float:
    """Hashes per second grouped by `splits.group_near_duplicates` (random 64-bit hashes)."""
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, n, dtype=np.int64)]
    start = time.perf_counter()
    splits.group_near_duplicates(hashes, splits.NEAR_DUPLICATE_BITS)
    return n / (time.perf_counter() - start)


def build_rate(manual_dir: str, data_dir: str, config: str) -> tuple[float, int, float]:
    """(images/s of a whole TFDS build, images kept, dataset size in MB)."""
    start = time.perf_counter()
    builder = build.build_dataset(manual_dir, data_dir, config)
    seconds = time.perf_counter() - start
    kept = sum(split.num_examples for split in builder.info.splits.values())
    return kept / seconds, kept, builder.info.dataset_size / 1e6


def _random_crop_resize(image: tf.Tensor) -> tf.Tensor:
    """Inception-style crop: 25-100% of the area, then 224x224."""
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        area_range=(0.25, 1.0),
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    return tf.image.resize(crop, (_CROP_SIDE, _CROP_SIDE))


def input_rate(data_dir: str, config: str, batches: int) -> float:
    """Images per second through decode + random crop + resize + batch, after a warm-up."""
    ds = tfds.load(f"oregon_wildlife/{config}", split="train", data_dir=data_dir)
    ds = ds.repeat().map(
        lambda ex: _random_crop_resize(ex["image"]), num_parallel_calls=tf.data.AUTOTUNE
    )
    iterator = iter(ds.batch(_BATCH).prefetch(1))
    next(iterator)  # Warm-up: graph tracing, file opening.
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * _BATCH / (time.perf_counter() - start)


def run(num_images: int, size: tuple[int, int], workdir: str) -> str:
    """Runs every measurement; returns the Markdown table."""
    per_class = max(1, num_images // 20)
    manual_dir = os.path.join(workdir, "manual")
    start = time.perf_counter()
    archive_path = sample.write_sample_archive(
        os.path.join(manual_dir, "oregon-wildlife.zip"), per_class, image_size=size
    )
    mb = os.path.getsize(archive_path) / 1e6
    print(f"archive: {20 * per_class} images, {mb:.0f} MB, {time.perf_counter() - start:.0f} s")
    rates = conversion_rates(archive_path)
    grouped = grouping_rate()
    builds = {
        c: build_rate(manual_dir, os.path.join(workdir, "tfds"), c) for c in ("full", "resized_256")
    }
    inputs = {c: input_rate(os.path.join(workdir, "tfds"), c, batches=10) for c in builds}
    cores = os.cpu_count() or 1
    rows = [
        (
            "convert: naive full decode + resize, 1 thread (baseline)",
            rates["naive"],
            rates["naive"],
        ),
        ("convert: draft decode + hash + resize, 1 thread", rates["draft_1"], rates["naive"]),
        (
            f"convert: draft decode + hash + resize, {cores} threads (ratio: vs 1 thread)",
            rates[f"draft_{cores}"],
            rates["draft_1"],
        ),
        ("group 14,000 perceptual hashes (images/s of grouping)", grouped, rates["naive"]),
        (
            f"tfds build `resized_256` end to end ({builds['resized_256'][2]:.0f} MB)",
            builds["resized_256"][0],
            rates["naive"],
        ),
        (
            f"tfds build `full` end to end ({builds['full'][2]:.0f} MB)",
            builds["full"][0],
            rates["naive"],
        ),
        (
            "input pipeline `full` (decode, crop, resize 224, batch 32)",
            inputs["full"],
            inputs["full"],
        ),
        ("input pipeline `resized_256` (same)", inputs["resized_256"], inputs["full"]),
    ]
    lines = ["| measurement | images/s | ratio |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate:.1f} | {rate / base:.2f}x |" for name, rate, base in rows]
    kb_each = mb * 1e3 / (20 * per_class)
    lines.append(
        f"\n{20 * per_class} SYNTHETIC {size[0]}x{size[1]} JPEGs (~{kb_each:.0f} KB "
        f"each), {cores} CPU cores. Ratios: conversion and builds against the naive baseline; "
        "input pipelines against `full`."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="archive size (20 classes)")
    parser.add_argument("--size", default="2400x1600", help="WxH of the generated photos")
    parser.add_argument("--workdir", default=None, help="keep the files here (default: temp)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    tfds.disable_progress_bar()
    if args.workdir:
        print(run(args.images, size, args.workdir))
        return
    with tempfile.TemporaryDirectory(prefix="oregon_bench_") as workdir:
        print(run(args.images, size, workdir))


if __name__ == "__main__":
    main()
