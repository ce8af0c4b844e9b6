"""The classifier: a MobileNet V2 backbone, dropout, and a Dense head with float32 softmax."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

BACKBONE_LAYER = "backbone"


def create_model(
    backbone: tf_keras.layers.Layer,
    num_classes: int,
    image_size: int,
    dropout_rate: float = 0.2,
    train_batchnorm: bool = False,
) -> tf_keras.Model:
    """Stacks the head on `backbone` (a layer named 'backbone' from backbones.create_backbone).

    Build it inside the strategy scope and under the run's dtype policy. The softmax is float32
    whatever the policy: float16 probabilities underflow and make the loss unstable
    (https://www.tensorflow.org/guide/mixed_precision#building_the_model).

    Args:
      backbone: maps [0, 1] float images to feature vectors.
      num_classes: number of output classes.
      image_size: input height and width.
      dropout_rate: dropout before the Dense layer.
      train_batchnorm: False calls the backbone with training=False, so its BatchNorm layers
        keep their moving statistics while fine-tuning (small batches would wreck them);
        True lets BatchNorm follow the training phase.
    """
    if backbone.name != BACKBONE_LAYER:
        raise ValueError(f"backbone layer is named {backbone.name!r}, expected 'backbone'.")
    inputs = tf_keras.Input((image_size, image_size, 3), dtype=tf.float32, name="images")
    features = backbone(inputs, training=None if train_batchnorm else False)
    x = tf_keras.layers.Dropout(dropout_rate, name="dropout")(features)
    logits = tf_keras.layers.Dense(num_classes, name="logits")(x)
    probabilities = tf_keras.layers.Activation("softmax", dtype="float32", name="probabilities")(
        logits
    )
    return tf_keras.Model(inputs, probabilities, name="mobilenet_v2_classifier")


def get_backbone(model: tf_keras.Model) -> tf_keras.layers.Layer:
    """The backbone layer of a model made by `create_model`."""
    return model.get_layer(BACKBONE_LAYER)


def freeze_backbone(model: tf_keras.Model) -> None:
    """Phase 1: only the head trains. Recompile the model afterwards."""
    get_backbone(model).trainable = False


def unfreeze_backbone(model: tf_keras.Model, fine_tune_layers: int = 0) -> None:
    """Phase 2: makes the whole backbone, or only its top `fine_tune_layers` layers, trainable.

    Recompile the model afterwards: Keras fixes the trainable variables when it compiles.
    """
    if fine_tune_layers < 0:
        raise ValueError(f"fine_tune_layers must be >= 0 (0 = all), got {fine_tune_layers}.")
    backbone = get_backbone(model)
    backbone.trainable = True
    if fine_tune_layers == 0:
        return
    if isinstance(backbone, hub.KerasLayer):
        raise ValueError(
            f"fine_tune_layers={fine_tune_layers} needs a keras: backbone; a hub.KerasLayer "
            "SavedModel is one opaque layer. Use --fine_tune_layers=0 to fine-tune all of it."
        )
    layers = _innermost_layers(backbone)
    if fine_tune_layers > len(layers):
        raise ValueError(
            f"fine_tune_layers={fine_tune_layers} exceeds the backbone's {len(layers)} layers."
        )
    for layer in layers[: len(layers) - fine_tune_layers]:
        layer.trainable = False


def _innermost_layers(backbone: tf_keras.Model) -> list[tf_keras.layers.Layer]:
    """The application model's own layers (the backbone wraps it with a Rescaling layer)."""
    nested = [layer for layer in backbone.layers if isinstance(layer, tf_keras.Model)]
    return nested[0].layers if nested else backbone.layers


@tf_keras.saving.register_keras_serializable(package="trainer")
class SparseCategoricalCrossentropyWithSmoothing(tf_keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing (Szegedy et al. 2016), which the
    Keras sparse loss lacks; keeps the input pipeline's labels as integers."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, name: str = "loss", **kw):
        super().__init__(name=name, **kw)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), self.num_classes)
        return tf_keras.losses.categorical_crossentropy(
            labels, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }
