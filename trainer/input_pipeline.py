"""tf.data input pipeline: TFDS JPEG bytes → (float32 [0, 1] NHWC images, int labels) batches.

Training (`create_train_split`): each input pipeline (worker) keeps its share of the records
before decoding; epoch e is a seeded permutation of that share; a fused random-resized-crop
decode (`sample_distorted_bounding_box` + `decode_and_crop_jpeg`, which decodes only the crop)
and a random flip, seeded per example. So the batches are a pure function of (seed, epoch,
worker, step), and a resumed run skips exactly the steps it trained. Evaluation
(`create_split`): centre crop, in the stored order. Optional in-memory caches of the encoded
or decoded images (`CACHE_MODES`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_oregon  # noqa: F401 - registers the oregon_wildlife builder with TFDS.

DEFAULT_DATASET = "oregon_wildlife/resized_256"
# Eval crops the centre image_size / (image_size + 32) of the shorter side (224/256 = 0.875),
# the usual ImageNet evaluation crop.
EVAL_CROP_PADDING = 32


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about the dataset, and records in config.json."""

    name: str
    version: str
    data_dir: str
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]


def load_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder `name` in `data_dir`; if absent, ValueError saying how to build."""
    data_dir = data_dir or tfds.core.constants.DATA_DIR  # TFDS's default (or $TFDS_DATA_DIR).
    dataset, _, config = name.partition("/")
    command = (
        f"tfds build {dataset} --imports tfds_oregon --config={config or 'resized_256'} "
        f"--data_dir={data_dir} --manual_dir=<folder holding oregon-wildlife.zip>"
    )
    hint = f"Dataset {name} is not built in {data_dir}; build it first with: {command}"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(hint) from error
    if not builder.is_prepared():
        if other_versions := _built_versions(builder):
            raise ValueError(
                f"{data_dir} holds {name} version {', '.join(other_versions)}, but this code "
                f"reads version {builder.version}; rebuild it with: {command}"
            )
        raise ValueError(hint)
    return builder


def _built_versions(builder: tfds.core.DatasetBuilder) -> list[str]:
    """Versions of the builder's dataset config that are built in its data_dir."""
    config_dir = os.path.dirname(builder.data_dir)
    if not tf.io.gfile.isdir(config_dir):
        return []
    versions = [entry.rstrip("/") for entry in tf.io.gfile.listdir(config_dir)]
    return sorted(
        v for v in versions if tf.io.gfile.exists(os.path.join(config_dir, v, "dataset_info.json"))
    )


def describe(builder: tfds.core.DatasetBuilder) -> DatasetInfo:
    """Name, version, classes and split sizes of a prepared builder."""
    info = builder.info
    return DatasetInfo(
        name=info.full_name.rsplit("/", 1)[0],
        version=str(info.version),
        data_dir=builder.data_dir,
        class_names=tuple(info.features["label"].names),
        split_sizes={name: split.num_examples for name, split in info.splits.items()},
    )


def preprocess_for_train(image_bytes: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
    """Random-resized crop (decoding only the crop) and random flip of one JPEG → [S, S, 3].

    Args:
      image_bytes: scalar string tensor with an encoded JPEG.
      image_size: output height and width.
      seed: shape [2] integer tensor; the same seed gives the same crop and flip.
    """
    crop_window, flip_seed = _random_crop_window(tf.image.extract_jpeg_shape(image_bytes), seed)
    image = tf.image.decode_and_crop_jpeg(image_bytes, crop_window, channels=3)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return resize_and_scale(image, image_size)


def preprocess_decoded_for_train(image: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
    """`preprocess_for_train` of an already decoded uint8 [H, W, 3] image (the decoded cache):
    the same crop window and flip for the same seed."""
    crop_window, flip_seed = _random_crop_window(tf.shape(image), seed)
    top, left, height, width = tf.unstack(crop_window)
    image = tf.image.stateless_random_flip_left_right(
        image[top : top + height, left : left + width], seed=flip_seed
    )
    return resize_and_scale(image, image_size)


def _random_crop_window(shape: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Inception-style random-resized crop [top, left, height, width] of an image of `shape`
    (8-100 % of the area, aspect 3/4-4/3), and the seed left for the flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=crop_seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]]), flip_seed


def eval_crop_window(height: tf.Tensor, width: tf.Tensor, image_size: int) -> tf.Tensor:
    """The evaluation crop of an image of `height` x `width`: [top, left, size, size] (int32).

    The centred square of image_size / (image_size + EVAL_CROP_PADDING) of the shorter side.
    The ONE definition of the evaluation geometry: evaluation, the serving signature and the
    device export all call it, so they frame every image identically.
    """
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    fraction = image_size / (image_size + EVAL_CROP_PADDING)
    crop = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    crop = tf.maximum(crop, 1)
    return tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop])


def preprocess_for_eval(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Centre crop (decoding only the crop) and resize of one JPEG → [S, S, 3] in [0, 1]."""
    return resize_and_scale(_decode_eval_crop(image_bytes, image_size), image_size)


def resize_and_scale(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 [H, W, 3] crop → float32 [S, S, 3] in [0, 1]: the last step of every pipeline.

    Antialiasing only matters when an axis shrinks: for an enlarged crop (most random crops of
    a 256 px image) plain bilinear gives the same pixels (max difference 3e-5) at a fraction
    of the cost, and a crop already S x S (the 224/256 evaluation crop) is not resized at all.
    """
    height_width = tf.shape(image)[:2]

    def resize(antialias: bool) -> tf.Tensor:
        return tf.image.resize(image, [image_size, image_size], antialias=antialias)

    image = tf.cond(
        tf.reduce_all(height_width == image_size),
        lambda: tf.cast(image, tf.float32),
        lambda: tf.cond(
            tf.reduce_any(height_width > image_size), lambda: resize(True), lambda: resize(False)
        ),
    )
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return tf.clip_by_value(image * (1 / 255), 0.0, 1.0)


def create_split(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    batch_size: int,
    image_size: int,
    cache: str = "none",
    is_training: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Evaluation batches of (images float32 [B, S, S, 3] in [0, 1], labels int64 [B]): the
    centre crop of every example of `split`, once, in the stored order, last batch partial.

    Under a multi-worker strategy Keras shards it by DATA (auto-shard policy), which needs
    this deterministic order. Training data comes from `create_train_split`.

    Args:
      builder: a prepared builder (see `load_builder`).
      split: TFDS split spec, e.g. 'validation' or 'validation[:50%]'.
      batch_size: GLOBAL batch size.
      image_size: output height and width.
      cache: one of CACHE_MODES; 'decoded' keeps the centre crops (uint8) in memory.
      is_training: must be False (kept for older callers; see `create_train_split`).
      seed: unused (evaluation is not random).
    """
    del seed
    if is_training:
        raise ValueError("create_split makes evaluation data; use create_train_split.")
    _check_cache(cache)
    ds = _read(builder, split)
    if cache == "encoded":
        ds = ds.cache()
    ds = ds.map(lambda image, label: (_decode_eval_crop(image, image_size), label), _PARALLEL)
    if cache == "decoded":
        ds = ds.cache()
    ds = ds.map(lambda image, label: (resize_and_scale(image, image_size), label), _PARALLEL)
    ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(shard_by_data=True))


def create_train_split(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    batch_size: int,
    image_size: int,
    steps_per_epoch: int,
    epochs: range,
    start_step: int = 0,
    seed: int = 0,
    cache: str = "none",
    pipeline_id: int = 0,
    num_pipelines: int = 1,
) -> tf.data.Dataset:
    """Augmented training batches for `epochs`, exactly `steps_per_epoch` per epoch, from this
    input pipeline's share of `split`: (images float32 [B, S, S, 3] in [0, 1], labels [B]).

    Pipeline `pipeline_id` of `num_pipelines` (one per worker) keeps every num_pipelines-th
    record BEFORE anything is decoded, so the pipelines split the examples between them and
    each decodes only its own. Epoch e draws the share in a permutation seeded by (seed, e,
    pipeline_id) and crops and flips its n-th example with a seed from (seed, e, pipeline_id,
    n): the batches of epoch e are a pure function of those, whatever else iterates the data
    (TensorBoard samples, evaluation, a restart). A resumed run passes the epoch and step it
    stopped at, and the same batches follow as in an uninterrupted run: the steps already
    trained are skipped before decoding.

    Args:
      builder: a prepared builder (see `load_builder`).
      split: TFDS split spec, e.g. 'train'.
      batch_size: batch size of THIS pipeline (per replica under distribute_datasets_from_
        function, where a pipeline feeds its replicas in turn).
      image_size: output height and width.
      steps_per_epoch: batches of this pipeline per epoch (each epoch drops its remainder).
      epochs: the epochs to produce, e.g. range(3, 10).
      start_step: batches of the first epoch already trained (skipped).
      seed: the run's seed.
      cache: 'none' reads the records every epoch; 'encoded' keeps this pipeline's JPEGs in
        memory; 'decoded' keeps them decoded (uint8 at the stored size: ~200 KB per 256 px
        image), so that later epochs only crop, flip and resize.
      pipeline_id: this pipeline's index (InputContext.input_pipeline_id).
      num_pipelines: how many pipelines share the split (InputContext.num_input_pipelines).
    """
    _check_cache(cache)
    shard_size = _shard_size(builder.info.splits[split].num_examples, pipeline_id, num_pipelines)
    if steps_per_epoch * batch_size > shard_size:
        raise ValueError(
            f"{steps_per_epoch} steps of {batch_size} examples need {steps_per_epoch * batch_size} "
            f"examples per input pipeline, but pipeline {pipeline_id} of {num_pipelines} has "
            f"{shard_size} of split {split!r}."
        )
    if not 0 <= start_step < steps_per_epoch or not epochs:
        raise ValueError(f"start_step={start_step} or epochs={epochs} out of range.")
    records = _read(builder, split)
    records = records.shard(num_pipelines, pipeline_id)  # Still encoded: nothing decoded yet.
    if cache == "encoded":
        records = records.cache()
    elif cache == "decoded":
        records = records.map(
            lambda image, label: (tf.io.decode_jpeg(image, channels=3), label), _PARALLEL
        ).cache()
    preprocess = preprocess_decoded_for_train if cache == "decoded" else preprocess_for_train

    def epoch_examples(epoch: int, skip: int) -> tf.data.Dataset:
        """(n, example): epoch `epoch`'s examples, n = epoch * 2**32 + position, undecoded."""
        # A buffer of the whole share makes the shuffle a full permutation, fixed by its seed.
        ds = records.shuffle(
            shard_size, seed=_epoch_seed(seed, epoch, pipeline_id), reshuffle_each_iteration=False
        )
        ds = ds.take(steps_per_epoch * batch_size).enumerate(start=epoch << 32)
        return ds.skip(skip * batch_size)

    ds = epoch_examples(epochs[0], start_step)
    for epoch in epochs[1:]:
        ds = ds.concatenate(epoch_examples(epoch, 0))
    # One parallel map over all the epochs, so that epoch boundaries do not drain it; the crop
    # and flip of example n are seeded by (seed, pipeline_id, n).
    base_seed = _epoch_seed(seed, -1, pipeline_id)
    ds = ds.map(
        lambda n, example: (
            preprocess(example[0], image_size, tf.stack([tf.constant(base_seed, tf.int64), n])),
            example[1],
        ),
        _PARALLEL,
    )
    # Every epoch holds whole batches, so batches never straddle two epochs.
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(shard_by_data=False))


CACHE_MODES = ("none", "encoded", "decoded")
_PARALLEL = tf.data.AUTOTUNE


def _check_cache(cache: str) -> None:
    if cache not in CACHE_MODES:
        raise ValueError(f"cache={cache!r} is not one of {CACHE_MODES}.")


def _read(builder: tfds.core.DatasetBuilder, split: str) -> tf.data.Dataset:
    """(encoded image, label) records of `split` in their stored order."""
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,  # The stored order is what every worker's sharding relies on.
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(try_autocache=False),
    )
    return ds.map(lambda example: (example["image"], example["label"]))


def _decode_eval_crop(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    shape = tf.image.extract_jpeg_shape(image_bytes)
    window = eval_crop_window(shape[0], shape[1], image_size)
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)


def _shard_size(num_examples: int, index: int, count: int) -> int:
    """Records that `Dataset.shard(count, index)` keeps out of `num_examples`."""
    return len(range(index, num_examples, count))


def _epoch_seed(seed: int, epoch: int, pipeline_id: int) -> int:
    """A 31-bit seed that depends on (seed, epoch, pipeline_id) only (epoch -1: augmentation)."""
    return int(np.random.SeedSequence([seed, epoch + 1, pipeline_id]).generate_state(1)[0] >> 1)


def _options(shard_by_data: bool) -> tf.data.Options:
    options = tf.data.Options()
    # Training data is sharded by create_train_split itself (per input pipeline); evaluation
    # data by Keras, which needs the same deterministic order on every worker.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
        if shard_by_data
        else tf.data.experimental.AutoShardPolicy.OFF
    )
    options.deterministic = True
    return options
