"""tf.data input pipeline: TFDS JPEG bytes → (float32 [0, 1] NHWC images, int labels) batches.

Training: shuffled files and examples, fused random-resized-crop decode
(`sample_distorted_bounding_box` + `decode_and_crop_jpeg`, which decodes only the crop), random
horizontal flip. Evaluation: centre crop and resize. Every random op is stateless and seeded per
example, so a run with the same `seed` sees the same images in the same order.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_oregon  # noqa: F401 - registers the oregon_wildlife builder with TFDS.

DEFAULT_DATASET = "oregon_wildlife/resized_256"
# Eval crops the centre image_size / (image_size + 32) of the shorter side (224/256 = 0.875),
# the usual ImageNet evaluation crop.
EVAL_CROP_PADDING = 32
_SHUFFLE_BUFFER = 2048


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
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(image_bytes),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=crop_seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop_window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(image_bytes, crop_window, channels=3)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return resize_and_scale(image, image_size)


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
    shape = tf.image.extract_jpeg_shape(image_bytes)
    crop_window = eval_crop_window(shape[0], shape[1], image_size)
    image = tf.image.decode_and_crop_jpeg(image_bytes, crop_window, channels=3)
    return resize_and_scale(image, image_size)


def resize_and_scale(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 [H, W, 3] crop → float32 [S, S, 3] in [0, 1]: the last step of every pipeline."""
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def create_split(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    is_training: bool,
    batch_size: int,
    image_size: int,
    seed: int = 0,
    cache: bool = False,
) -> tf.data.Dataset:
    """Batches of (images float32 [B, S, S, 3] in [0, 1], labels int64 [B]) from one split.

    Training batches repeat forever and drop the remainder (steps are counted by the caller);
    evaluation batches cover the split once. Under a multi-worker strategy each worker keeps its
    share of the examples (auto-shard policy DATA: works with any number of files).

    Args:
      builder: a prepared builder (see `load_builder`).
      split: TFDS split spec, e.g. 'train' or 'validation[:50%]'.
      is_training: augment, shuffle and repeat.
      batch_size: GLOBAL batch size (per-replica batch x replicas).
      image_size: output height and width.
      seed: fixes file order, example order and augmentation.
      cache: keep the encoded JPEGs in memory after the first epoch.
    """
    ds = builder.as_dataset(
        split=split,
        shuffle_files=is_training,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    ds = ds.map(lambda example: (example["image"], example["label"]))
    if cache:
        ds = ds.cache()
    if is_training:
        ds = ds.shuffle(_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()
        example_seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, example_seeds)).map(
            lambda pair, example_seed: (
                preprocess_for_train(pair[0], image_size, example_seed),
                pair[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        ds = ds.map(
            lambda image, label: (preprocess_for_eval(image, image_size), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.batch(batch_size, drop_remainder=is_training)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return options
