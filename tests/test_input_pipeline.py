"""Input pipeline: preprocessing ops give the same results eagerly and inside tf.data.map;
outputs are [0, 1] images of the right size; training batches are a pure function of (seed,
epoch, pipeline), so a resumed run gets the same batches; caches change nothing; a missing
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


def test_the_decoded_cache_crops_and_flips_like_the_fused_decode():
    image_bytes = tf.constant(_jpeg(80, 56, seed=1))
    decoded = tf.io.decode_jpeg(image_bytes, channels=3)
    for seed in ([1, 2], [3, 4], [9, 9]):
        seed = tf.constant(seed, tf.int64)
        fused = input_pipeline.preprocess_for_train(image_bytes, 32, seed).numpy()
        cached = input_pipeline.preprocess_decoded_for_train(decoded, 32, seed).numpy()
        # Same window and flip; libjpeg's cropped decode may differ by a level at block edges.
        assert np.abs(fused - cached).mean() < 2 / 255


def test_resize_antialiases_only_when_shrinking_and_skips_the_identity():
    rng = np.random.default_rng(0)
    for shape in [(20, 30, 3), (40, 28, 3), (24, 24, 3)]:
        crop = tf.constant(rng.integers(0, 256, shape, dtype=np.uint8))
        ours = input_pipeline.resize_and_scale(crop, 24).numpy()
        # The reference: always-antialiased resize, as before this change.
        reference = tf.image.resize(crop, [24, 24], antialias=True).numpy() / 255
        assert ours.shape == (24, 24, 3)
        np.testing.assert_allclose(ours, np.clip(reference, 0, 1), atol=1e-4)
    identity = tf.constant(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    np.testing.assert_allclose(
        input_pipeline.resize_and_scale(identity, 24).numpy(), identity.numpy() / 255, rtol=1e-6
    )


def _train(builder, **kwargs):
    fields = dict(batch_size=20, image_size=24, steps_per_epoch=5, epochs=range(2), seed=7)
    return [
        (images.numpy(), labels.numpy())
        for images, labels in input_pipeline.create_train_split(
            builder, "train", **{**fields, **kwargs}
        )
    ]


@pytest.fixture(scope="module")
def builder(learnable_data_dir):
    return input_pipeline.load_builder(input_pipeline.DEFAULT_DATASET, learnable_data_dir)


def test_training_batches_are_a_function_of_seed_epoch_and_pipeline(builder):
    two_epochs = _train(builder)
    assert len(two_epochs) == 10 and all(x.shape == (20, 24, 24, 3) for x, _ in two_epochs)
    again = _train(builder)
    for (x, y), (x2, y2) in zip(two_epochs, again, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    # Epoch 1 alone is epoch 1 of the two-epoch run: nothing before it shifts it.
    epoch_1 = _train(builder, epochs=range(1, 2))
    np.testing.assert_array_equal(epoch_1[0][0], two_epochs[5][0])
    # Epochs differ from each other, and so do seeds and pipelines.
    assert not np.array_equal(two_epochs[0][1], two_epochs[5][1])
    assert not np.array_equal(_train(builder, seed=8)[0][1], two_epochs[0][1])
    assert not np.array_equal(
        _train(builder, pipeline_id=1, num_pipelines=2)[0][1],
        _train(builder, pipeline_id=0, num_pipelines=2)[0][1],
    )


def test_a_resumed_run_gets_the_batches_an_uninterrupted_run_gets(builder):
    uninterrupted = _train(builder, epochs=range(3))
    resumed = _train(builder, epochs=range(1, 3), start_step=3)  # Stopped after step 3 of epoch 2.
    assert len(resumed) == len(uninterrupted) - 8
    for (x, y), (x2, y2) in zip(resumed, uninterrupted[8:], strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_caches_change_no_training_or_evaluation_batch(builder):
    plain = _train(builder, epochs=range(3))
    for x, x2 in zip(plain, _train(builder, epochs=range(3), cache="encoded"), strict=True):
        np.testing.assert_array_equal(x[0], x2[0])
    for x, x2 in zip(plain, _train(builder, epochs=range(3), cache="decoded"), strict=True):
        np.testing.assert_array_equal(x[1], x2[1])
        assert np.abs(x[0] - x2[0]).mean() < 2 / 255  # See the decoded-cache test above.

    def evaluation(cache):
        batches = input_pipeline.create_split(
            builder, "test", batch_size=30, image_size=24, cache=cache
        )
        return np.concatenate([x.numpy() for _ in range(2) for x, _ in batches])  # 2 passes

    none = evaluation("none")
    np.testing.assert_array_equal(none, evaluation("encoded"))
    np.testing.assert_array_equal(none, evaluation("decoded"))


def test_too_few_examples_per_pipeline_and_bad_cache_are_errors(builder):
    with pytest.raises(ValueError, match="pipeline 1 of 2 has 120"):
        _train(builder, batch_size=25, pipeline_id=1, num_pipelines=2)
    with pytest.raises(ValueError, match="cache='yes'"):
        _train(builder, cache="yes")


def test_evaluation_split_is_one_ordered_pass(builder):
    info = input_pipeline.describe(builder)
    assert info.split_sizes == {"train": 240, "validation": 80, "test": 80}
    assert len(info.class_names) == 20 and info.name == "oregon_wildlife/resized_256"
    test = list(input_pipeline.create_split(builder, "test", batch_size=30, image_size=24))
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
