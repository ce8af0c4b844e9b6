"""The classifier: float32 softmax under mixed precision, LossScaleOptimizer, freezing and
unfreezing, and the label-smoothed sparse loss."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.fixtures.backbone import TINY_IMAGE_SIZE
from trainer import backbones, distribute, models, train


def _model(handle, image_size=TINY_IMAGE_SIZE, **kwargs):
    backbone, _ = backbones.create_backbone(handle, image_size)
    return models.create_model(backbone, 20, image_size, **kwargs)


def test_mixed_float16_model_has_float32_probabilities_and_loss_scaling(tiny_backbone):
    with distribute.precision_policy("mixed_float16"):
        model = _model(tiny_backbone)
        optimizer = tf_keras.optimizers.AdamW(1e-3)
        train.compile_model(model, optimizer, num_classes=20, label_smoothing=0.1)
    assert tf_keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.get_layer("logits").compute_dtype == "float16"
    assert isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    probabilities = model(np.random.rand(2, 32, 32, 3).astype("float32"))
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_float32_model_has_a_plain_optimizer(tiny_backbone):
    model = _model(tiny_backbone)
    train.compile_model(model, tf_keras.optimizers.SGD(0.1), num_classes=20, label_smoothing=0)
    assert not isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)


def test_freeze_and_unfreeze_change_what_trains(tiny_backbone):
    model = _model(tiny_backbone)
    models.freeze_backbone(model)
    assert len(model.trainable_weights) == 2  # Dense kernel and bias.
    models.unfreeze_backbone(model)
    assert len(model.trainable_weights) > 100


def test_unfreezing_top_layers_of_a_keras_backbone():
    model = _model("keras:mobilenet_v2_035:untrained")
    models.freeze_backbone(model)
    models.unfreeze_backbone(model, fine_tune_layers=10)
    inner = [
        layer for layer in models.get_backbone(model).layers if isinstance(layer, tf_keras.Model)
    ]
    trainable = [layer.trainable for layer in inner[0].layers]
    assert trainable[-10:] == [True] * 10 and not any(trainable[:-10])
    assert 2 < len(model.trainable_weights) < 30


def test_top_layers_of_a_hub_backbone_cannot_be_chosen(tiny_backbone):
    with pytest.raises(ValueError, match="fine_tune_layers=5 needs a keras: backbone"):
        models.unfreeze_backbone(_model(tiny_backbone), fine_tune_layers=5)


def test_smoothed_sparse_loss_matches_categorical_crossentropy_on_one_hot_labels():
    labels = np.array([0, 3, 2])
    probabilities = tf.nn.softmax(np.random.default_rng(0).normal(size=(3, 5)).astype("float32"))
    ours = models.SparseCategoricalCrossentropyWithSmoothing(5, 0.1)(labels, probabilities)
    reference = tf_keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(
        tf.one_hot(labels, 5), probabilities
    )
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)
    restored = models.SparseCategoricalCrossentropyWithSmoothing.from_config(
        models.SparseCategoricalCrossentropyWithSmoothing(5, 0.1).get_config()
    )
    assert restored.label_smoothing == 0.1 and restored.num_classes == 5
