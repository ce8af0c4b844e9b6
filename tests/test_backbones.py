"""Backbones: the offline stand-in SavedModel behaves like a TF Hub feature vector (trainable,
BatchNorm follows `training`, says it is untrained), `keras:` handles build and fail well, and
each `tf_keras.applications` family in the table builds, scales its input as the application
documents, and trains."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from tests.fixtures.backbone import TINY_IMAGE_SIZE
from tests.fixtures.processes import run_module
from trainer import backbones, distribute, models, train


def _images(n=4, size=TINY_IMAGE_SIZE, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype("float32")


def test_stand_in_loads_as_trainable_hub_layer_with_a_training_argument(tiny_backbone):
    layer = hub.KerasLayer(tiny_backbone, trainable=True)
    features = layer(_images())
    assert features.shape == (4, 1280) and np.isfinite(features.numpy()).all()
    assert len(layer.trainable_weights) > 100
    # BatchNorm: inference leaves the moving statistics alone, training updates them.
    moving_mean = next(w for w in layer.non_trainable_weights if "moving_mean" in w.name)
    before = moving_mean.numpy().copy()
    inference = layer(_images(), training=False)
    np.testing.assert_array_equal(moving_mean.numpy(), before)
    training = layer(_images(), training=True)
    assert not np.allclose(moving_mean.numpy(), before)
    assert not np.allclose(inference.numpy(), training.numpy())


def test_stand_in_features_are_informative_not_collapsed(tiny_backbone):
    # Calibrated BatchNorm: different images give clearly different, unit-scale features.
    features = hub.KerasLayer(tiny_backbone)(_images(8)).numpy()
    assert 0.05 < features.std(axis=0).mean() < 10


def test_stand_in_says_it_is_untrained(tiny_backbone):
    metadata = backbones.read_backbone_metadata(tiny_backbone)
    assert metadata["pretrained"] is False and metadata["alpha"] == 0.35
    _, info = backbones.create_backbone(tiny_backbone, TINY_IMAGE_SIZE)
    assert info.pretrained is False and not info.runs_in_model_dtype
    assert backbones.read_backbone_metadata(backbones.DEFAULT_HANDLE) == {}


def test_hub_layer_stays_float32_under_mixed_precision(tiny_backbone):
    with distribute.precision_policy("mixed_float16"):
        layer, _ = backbones.create_backbone(tiny_backbone, TINY_IMAGE_SIZE)
        assert layer(_images()).dtype == tf.float32


def test_keras_backbone_runs_in_float16_under_mixed_precision():
    with distribute.precision_policy("mixed_float16"):
        layer, info = backbones.create_backbone("keras:mobilenet_v2_035:untrained", 32)
        output = layer(_images())
    assert info.runs_in_model_dtype and info.pretrained is False
    assert output.dtype == tf.float16 and output.shape == (4, 1280)
    assert all(w.dtype == tf.float32 for w in layer.weights)  # float32 master weights.
    assert not layer.trainable


@pytest.mark.parametrize(
    "handle, message",
    [
        ("keras:resnet50", "keras:mobilenet_v2_130"),
        ("keras:mobilenet_v2", "keras:mobilenet_v3_large_{075,100,100_minimalistic}"),
        ("keras:mobilenet_v2_13", "variant '13' of mobilenet_v2 is not one of"),
        ("keras:mobilenet_v2_130:random", "variant '130:random' of mobilenet_v2"),
        ("keras:mobilenet_v2_120", "'035', '050', '075', '100', '130', '140'"),
        ("keras:mobilenet_v3_large_130", "('075', '100', '100_minimalistic')"),
    ],
)
def test_unknown_keras_handles_raise(handle, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        backbones.create_backbone(handle, 32)


def test_cli_writes_a_loadable_untrained_backbone(tmp_path):
    out = tmp_path / "bb"
    run = run_module("trainer.standin_backbone", "--out", str(out), "--image_size", "32")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "UNTRAINED" in run.stdout
    assert json.loads((out / "assets" / backbones.METADATA_FILE).read_text())["pretrained"] is False
    assert tf.saved_model.contains_saved_model(str(out))
    assert not (tmp_path / "bb.tmp").exists()


def test_cli_rejects_a_width_without_weights_in_one_line(tmp_path):
    run = run_module("trainer.standin_backbone", f"--out={tmp_path / 'bb'}", "--alpha=0.4")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: --alpha=0.4 is not a MobileNet")
    assert not list(tmp_path.iterdir())


# --- The families of tf_keras.applications backbones (backbones.KERAS_FAMILIES). ---
# What each application documents as its input, as (constructor, keyword arguments, function
# from [0, 255] pixels to what the network's first layer takes). A new family adds its row.
_DOCUMENTED_INPUT = {
    # "preprocess_input ... scales input pixels between -1 and 1"; the model takes that range
    # (https://www.tensorflow.org/api_docs/python/tf/keras/applications/mobilenet_v2/preprocess_input).
    "mobilenet_v2": (
        tf_keras.applications.MobileNetV2,
        {"alpha": 0.35},
        tf_keras.applications.mobilenet_v2.preprocess_input,
    ),
    # "the model expects inputs to be float tensors of pixels with values in the [0-255]
    # range", its Rescaling layer being part of the model by default (include_preprocessing)
    # (https://www.tensorflow.org/api_docs/python/tf/keras/applications/MobileNetV3Large).
    "mobilenet_v3_large": (
        tf_keras.applications.MobileNetV3Large,
        {"alpha": 0.75, "include_preprocessing": True},
        lambda pixels: pixels,
    ),
}
_FAMILIES = sorted(backbones.KERAS_FAMILIES)


def _variant(name: str) -> str:
    """The table's variant matching the reference's width, e.g. "035" for alpha 0.35."""
    return f"{round(_DOCUMENTED_INPUT[name][1]['alpha'] * 100):03d}"


def test_every_family_has_its_documented_input_here():
    assert sorted(_DOCUMENTED_INPUT) == _FAMILIES


@pytest.mark.parametrize("name", _FAMILIES)
def test_family_scales_unit_images_as_the_application_documents(name):
    """Our backbone on [0, 1] images equals the application itself, with the same weights, on
    the same photos as [0, 255] pixels passed through its documented preprocessing."""
    tf_keras.utils.set_random_seed(0)
    layer, info = backbones.create_backbone(f"keras:{name}_{_variant(name)}:untrained", 32)
    assert info.pretrained is False and not layer.trainable
    constructor, kwargs, preprocess = _DOCUMENTED_INPUT[name]
    reference = constructor(
        input_shape=(32, 32, 3), include_top=False, pooling="avg", weights=None, **kwargs
    )
    reference.set_weights(layer.get_layer(index=-1).get_weights())
    images = _images(4)
    ours = layer(images, training=False).numpy()
    documented = reference(preprocess(images * 255.0), training=False).numpy()
    np.testing.assert_allclose(ours, documented, rtol=1e-4, atol=1e-4 * np.abs(documented).max())
    # And the comparison can fail: unscaled images give other features.
    unscaled = reference(images, training=False).numpy()
    assert not np.allclose(ours, unscaled, rtol=1e-2, atol=1e-2 * np.abs(documented).max())


@pytest.mark.parametrize("name", _FAMILIES)
def test_family_trains_one_step(name):
    tf_keras.utils.set_random_seed(0)
    backbone, _ = backbones.create_backbone(f"keras:{name}_{_variant(name)}:untrained", 32)
    # Batch statistics: with random weights the moving ones (0 and 1) let activations vanish.
    model = models.create_model(backbone, 20, 32, train_batchnorm=True)
    models.unfreeze_backbone(model)
    train.compile_model(model, tf_keras.optimizers.SGD(0.1), num_classes=20, label_smoothing=0)
    kernels = [w for w in backbone.trainable_weights if "kernel" in w.name]
    before = [w.numpy().copy() for w in kernels]
    loss = model.train_on_batch(_images(8), np.arange(8) % 20)
    loss = loss[0] if isinstance(loss, list) else loss
    assert np.isfinite(loss)
    changed = [not np.array_equal(w.numpy(), b) for w, b in zip(kernels, before, strict=True)]
    assert sum(changed) > len(kernels) // 2  # The backbone trained, not only the head.
