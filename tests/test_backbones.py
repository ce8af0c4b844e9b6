"""Backbones: the offline stand-in SavedModel behaves like a TF Hub feature vector (trainable,
BatchNorm follows `training`, says it is untrained), and `keras:` handles build and fail well."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from tests.fixtures.backbone import TINY_IMAGE_SIZE
from trainer import backbones, distribute


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
        ("keras:mobilenet_v2_13", "keras:mobilenet_v2_130"),
        ("keras:mobilenet_v2_130:random", "keras:mobilenet_v2_130"),
        ("keras:mobilenet_v2_120", "alpha 1.2 is not one of"),
    ],
)
def test_unknown_keras_handles_raise(handle, message):
    with pytest.raises(ValueError, match=message):
        backbones.create_backbone(handle, 32)


def test_cli_writes_a_loadable_untrained_backbone(tmp_path):
    out = tmp_path / "bb"
    run = subprocess.run(
        [sys.executable, "-m", "trainer.backbones", "--out", str(out), "--image_size", "32"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "UNTRAINED" in run.stdout
    assert json.loads((out / "assets" / backbones.METADATA_FILE).read_text())["pretrained"] is False
    assert tf.saved_model.contains_saved_model(str(out))
    assert not (tmp_path / "bb.tmp").exists()
