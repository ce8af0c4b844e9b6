"""Input pipeline: preprocessing ops give the same results eagerly and inside tf.data.map,
outputs are [0, 1] images of the right size, a seed makes a run repeatable, and a missing
dataset is a one-line error with the build command."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from trainer import input_pipeline


def _jpeg(width=60, height=40, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(60, 40), (40, 60), (17, 200)])
def test_train_preprocessing_is_the_same_eagerly_and_in_tf_data(size):
    image_bytes, seed = tf.constant(_jpeg(*size)), tf.constant([3, 4], tf.int64)
    eager = input_pipeline.preprocess_for_train(image_bytes, 24, seed)
    mapped = next(
        iter(
            tf.data.Dataset.from_tensors((image_bytes, seed)).map(
                lambda b, s: input_pipeline.preprocess_for_train(b, 24, s)
            )
        )
    )
    assert eager.shape == (24, 24, 3) and eager.dtype == tf.float32
    np.testing.assert_allclose(eager.numpy(), mapped.numpy(), atol=1e-6)
    assert eager.numpy().min() >= 0.0 and eager.numpy().max() <= 1.0


def test_eval_preprocessing_is_the_same_eagerly_and_in_tf_data_and_crops_the_centre():
    # Left half black, right half white, on a wide image: the centre crop keeps both halves.
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, 40:] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=100)
    image_bytes = tf.constant(buffer.getvalue())
    eager = input_pipeline.preprocess_for_eval(image_bytes, 16).numpy()
    mapped = next(
        iter(
            tf.data.Dataset.from_tensors(image_bytes).map(
                lambda b: input_pipeline.preprocess_for_eval(b, 16)
            )
        )
    ).numpy()
    np.testing.assert_allclose(eager, mapped, atol=1e-6)
    assert eager.shape == (16, 16, 3)
    assert eager[:, :4].mean() < 0.1 and eager[:, -4:].mean() > 0.9


def test_train_augmentation_depends_on_the_seed_only():
    image_bytes = tf.constant(_jpeg(64, 64))
    crops = [
        input_pipeline.preprocess_for_train(image_bytes, 16, tf.constant(seed, tf.int64)).numpy()
        for seed in ([1, 2], [1, 2], [5, 6])
    ]
    np.testing.assert_array_equal(crops[0], crops[1])
    assert not np.allclose(crops[0], crops[2])


def _batches(builder, split, **kwargs):
    return input_pipeline.create_split(builder, split, image_size=24, **kwargs)


def test_splits_batch_repeat_and_are_repeatable(learnable_data_dir):
    builder = input_pipeline.load_builder(input_pipeline.DEFAULT_DATASET, learnable_data_dir)
    info = input_pipeline.describe(builder)
    assert info.split_sizes == {"train": 240, "validation": 80, "test": 80}
    assert len(info.class_names) == 20 and info.name == "oregon_wildlife/resized_256"

    train = list(_batches(builder, "train", is_training=True, batch_size=50, seed=7).take(6))
    assert all(images.shape == (50, 24, 24, 3) for images, _ in train)  # repeats, full batches
    again = list(_batches(builder, "train", is_training=True, batch_size=50, seed=7).take(6))
    other = list(_batches(builder, "train", is_training=True, batch_size=50, seed=8).take(6))
    np.testing.assert_array_equal(train[5][0].numpy(), again[5][0].numpy())
    np.testing.assert_array_equal(train[5][1].numpy(), again[5][1].numpy())
    assert not np.array_equal(train[0][1].numpy(), other[0][1].numpy())

    test = list(_batches(builder, "test", is_training=False, batch_size=30, cache=True))
    assert [len(labels) for _, labels in test] == [30, 30, 20]  # one pass, partial last batch
    labels = np.concatenate([labels.numpy() for _, labels in test])
    assert np.bincount(labels, minlength=20).tolist() == [4] * 20
    images = np.concatenate([images.numpy() for images, _ in test])
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1


def test_missing_dataset_is_a_one_line_error_with_the_build_command(tmp_path):
    with pytest.raises(ValueError) as error:
        input_pipeline.load_builder(input_pipeline.DEFAULT_DATASET, str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert "tfds build" in message and f"--data_dir={tmp_path}" in message
