"""trainer/serving.py: the serving SavedModel round trip on real photos, as Vertex AI calls it."""

import io
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from PIL import Image

from tests.fixtures.tiny_classifier import CLASS_NAMES, create_tiny_classifier
from trainer import decoding, export, input_pipeline

SIZE = 32
REAL = sorted(pathlib.Path(__file__).parent.joinpath("data", "real").glob("*.jpg"))


@pytest.fixture(scope="module")
def model():
    return create_tiny_classifier(SIZE)


@pytest.fixture(scope="module")
def export_dir(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("serving") / "export")
    assert export.export_serving_model(model, CLASS_NAMES, path, image_size=SIZE, top_k=3) == path
    return path


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(export_dir)


def _png_bytes(jpeg_path):
    buffer = io.BytesIO()
    Image.open(jpeg_path).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _expected_top_k(model, images, k=3):
    probabilities = model(images, training=False).numpy()
    order = np.argsort(-probabilities, axis=1)[:, :k]
    names = np.array(CLASS_NAMES)[order]
    return names, np.take_along_axis(probabilities, order, axis=1)


def _check_outputs(outputs, expected_names, expected_probabilities):
    names = outputs["classes"].numpy().astype(str)
    np.testing.assert_array_equal(names, expected_names)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected_probabilities, atol=1e-5)
    assert outputs["probabilities"].dtype == tf.float32


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_serving_default_on_encoded_photos_matches_keras(model, loaded, encoding):
    encoded = [p.read_bytes() if encoding == "jpeg" else _png_bytes(p) for p in REAL]
    images = tf.stack([decoding.preprocess_image_bytes(tf.constant(b), SIZE) for b in encoded])
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    _check_outputs(outputs, *_expected_top_k(model, images))
    # The photos are told apart: a model that ignored its input would give one answer.
    assert len({tuple(row) for row in outputs["classes"].numpy()}) > 1


def test_signatures_are_what_vertex_ai_expects(loaded):
    serving = loaded.signatures["serving_default"]
    _, inputs = serving.structured_input_signature
    assert inputs == {"image_bytes": tf.TensorSpec([None], tf.string, name="image_bytes")}
    assert serving.structured_outputs == {
        "classes": tf.TensorSpec([None, 3], tf.string, name="classes"),
        "probabilities": tf.TensorSpec([None, 3], tf.float32, name="probabilities"),
    }
    _, inputs = loaded.signatures["predict_images"].structured_input_signature
    assert inputs["images"].shape.as_list() == [None, None, None, 3]


def test_predict_images_on_float_tensors(model, loaded):
    images = tf.random.stateless_uniform([4, SIZE, SIZE, 3], seed=[1, 2])
    outputs = loaded.signatures["predict_images"](images=images)
    _check_outputs(outputs, *_expected_top_k(model, images))
    # Other sizes are resized to the model's.
    larger = tf.random.stateless_uniform([2, 48, 40, 3], seed=[3, 4])
    outputs = loaded.signatures["predict_images"](images=larger)
    resized = tf.image.resize(larger, [SIZE, SIZE], antialias=True)
    _check_outputs(outputs, *_expected_top_k(model, resized))


def test_garbage_bytes_fail_the_request_not_the_server(loaded):
    serving = loaded.signatures["serving_default"]
    valid = REAL[0].read_bytes()
    for garbage in [b"", b"not an image", valid[: len(valid) // 3]]:
        with pytest.raises(tf.errors.InvalidArgumentError):
            serving(image_bytes=tf.constant([valid, garbage]))
        outputs = serving(image_bytes=tf.constant([valid]))  # the next request still works
        assert outputs["classes"].shape == (1, 3)


def test_labels_asset(loaded, export_dir):
    assert export.read_labels(export_dir) == CLASS_NAMES
    asset = pathlib.Path(loaded.labels_file.asset_path.numpy().decode())
    assert asset == pathlib.Path(export_dir, "assets", "labels.txt")
    assert asset.read_text().splitlines() == CLASS_NAMES


def test_jpeg_preprocessing_is_the_evaluation_pipeline():
    # An upright RGB JPEG is stored untouched by the builder, so serving must see exactly what
    # evaluation sees (the issue: decode_image + crop was up to 1.1/255 apart).
    for path in REAL:
        data = tf.constant(path.read_bytes())
        served = decoding.preprocess_image_bytes(data, 224)
        evaluated = input_pipeline.preprocess_for_eval(data, 224)
        np.testing.assert_allclose(served, evaluated, rtol=0, atol=1e-6)


def test_odd_images_decode_to_rgb():
    data = pathlib.Path(__file__).parent / "data" / "hostile"
    for name in ["hopper_gray.jpg", "pil123rgba.png", "iss634.gif", "hopper.bmp"]:
        image = decoding.preprocess_image_bytes(tf.constant((data / name).read_bytes()), SIZE)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(image)) <= float(tf.reduce_max(image)) <= 1.0


def test_mixed_float16_model_exports_float32_outputs(tmp_path):
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = create_tiny_classifier(SIZE, seed=1)
        path = export.export_serving_model(
            model, CLASS_NAMES, str(tmp_path / "mp"), image_size=SIZE
        )
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert model.layers[2].compute_dtype == "float16"  # the convolution
    outputs = tf.saved_model.load(path).signatures["serving_default"](
        image_bytes=tf.constant([REAL[0].read_bytes()])
    )
    assert outputs["probabilities"].dtype == tf.float32 and outputs["classes"].shape == (1, 5)
    assert float(tf.reduce_sum(outputs["probabilities"])) <= 1.0 + 1e-3


def test_reexport_replaces_the_previous_one(model, tmp_path):
    path = str(tmp_path / "export")
    export.export_serving_model(model, CLASS_NAMES, path, image_size=SIZE)
    (tmp_path / "export" / "stale.txt").write_text("from an older export")
    export.export_serving_model(model, CLASS_NAMES[::-1], path, image_size=SIZE)
    assert export.read_labels(path) == CLASS_NAMES[::-1]
    assert not (tmp_path / "export" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.mark.parametrize(
    ("names", "top_k", "message"),
    [
        (CLASS_NAMES[:5], 3, "model gives 20 outputs but there are 5 class names"),
        (CLASS_NAMES, 21, "top_k=21 must be between 1 and the 20 classes"),
        (CLASS_NAMES, 0, "top_k=0 must be between"),
    ],
)
def test_bad_arguments_raise_before_writing(model, tmp_path, names, top_k, message):
    with pytest.raises(ValueError, match=message):
        export.export_serving_model(model, names, str(tmp_path / "x"), image_size=SIZE, top_k=top_k)
    assert list(tmp_path.iterdir()) == []


def test_image_size_must_match_the_model(model, tmp_path):
    with pytest.raises(ValueError, match=r"model takes \(32, 32\) images but image_size=224"):
        export.export_serving_model(model, CLASS_NAMES, str(tmp_path / "x"), image_size=224)
