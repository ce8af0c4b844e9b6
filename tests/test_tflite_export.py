"""LiteRT export (trainer/tflite_export.py) and the export stage (trainer/export.py).

Conventions checked against the LiteRT documentation:
  * full-integer post-training quantization with `inference_input_type = tf.uint8` gives a
    model whose input tensor is uint8 and that rejects float input
    (https://ai.google.dev/edge/litert/models/post_training_integer_quant, "Integer only");
  * a quantized tensor's real value is `scale * (q - zero_point)`
    (https://ai.google.dev/edge/litert/models/quantization_spec), so scale 1 and zero
    point 0 mean the uint8 input IS the pixel value 0..255.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures.backbone import TINY_IMAGE_SIZE
from tests.fixtures.tiny_classifier import CLASS_NAMES, create_tiny_classifier
from trainer import decoding, serving, tflite_export, train
from trainer.config import TrainConfig

SIZE = 32
REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
REAL = sorted((DATA / "real").glob("*.jpg"))
# Calibration: small for speed, and not the photos the models are then compared on.
CALIBRATION = [DATA / "hostile" / name for name in ("flower.jpg", "hopper.bmp", "iss634.gif")]


def _framed(paths, size=SIZE):
    return [
        decoding.preprocess_image_bytes(tf.constant(p.read_bytes()), size).numpy() for p in paths
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny test model as a SavedModel and in all three LiteRT formats."""
    root = tmp_path_factory.mktemp("tflite")
    model = create_tiny_classifier(SIZE, seed=2)
    saved_model = serving.export_serving_model(
        model, CLASS_NAMES, str(root / "model"), image_size=SIZE
    )
    calibration = _framed(CALIBRATION)
    paths = tflite_export.write_models(
        model, CLASS_NAMES, SIZE, str(root / "tflite"), representative_images=lambda: calibration
    )
    return saved_model, paths


def test_every_format_agrees_with_the_saved_model_on_real_photos(exported):
    saved_model, paths = exported
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    result = serve(image_bytes=tf.constant([p.read_bytes() for p in REAL]))
    expected_top1 = result["classes"].numpy()[:, 0].astype(str)
    assert len(set(expected_top1)) > 2  # the photos are told apart
    images = _framed(REAL)
    agreement = {}
    for fmt, path in paths.items():
        classifier = tflite_export.LiteRTClassifier(path)
        top1 = [CLASS_NAMES[int(np.argmax(classifier(image)))] for image in images]
        agreement[fmt] = sum(a == b for a, b in zip(top1, expected_top1, strict=True))
    assert agreement["float32"] == agreement["float16"] == len(REAL), agreement
    assert agreement["int8"] >= len(REAL) - 2, agreement


def test_float32_probabilities_match_the_saved_model(exported):
    saved_model, paths = exported
    predict = tf.saved_model.load(saved_model).signatures["predict_images"]
    images = _framed(REAL)
    outputs = predict(images=tf.constant(np.stack(images)))
    classifier = tflite_export.LiteRTClassifier(paths["float32"])
    for i, image in enumerate(images):
        probabilities = classifier(image)
        top = np.argsort(-probabilities)[:5]
        np.testing.assert_allclose(
            probabilities[top], outputs["probabilities"][i].numpy(), rtol=0, atol=1e-5
        )


def test_int8_model_takes_camera_pixels_as_uint8(exported):
    _, paths = exported
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=paths["int8"])
    interpreter.allocate_tensors()
    (model_input,) = interpreter.get_input_details()
    (model_output,) = interpreter.get_output_details()
    assert model_input["dtype"] == np.uint8
    assert model_input["shape"].tolist() == [1, SIZE, SIZE, 3]
    scale, zero_point = model_input["quantization"]
    assert (scale, zero_point) == (1.0, 0)
    assert model_output["dtype"] == np.float32  # probabilities, no dequantizing in the app
    with pytest.raises(ValueError):
        interpreter.set_tensor(model_input["index"], np.zeros([1, SIZE, SIZE, 3], np.float32))
    # Pixels 0..255 straight in: the probabilities sum to 1.
    pixels = np.round(_framed(REAL[:1])[0] * 255).astype(np.uint8)[None]
    interpreter.set_tensor(model_input["index"], pixels)
    interpreter.invoke()
    assert abs(float(interpreter.get_tensor(model_output["index"]).sum()) - 1) < 0.02
    for fmt in ("float32", "float16"):
        assert tflite_export.LiteRTClassifier(paths[fmt]).input_dtype == np.float32


def test_folder_holds_the_models_and_labels(exported):
    _, paths = exported
    folder = pathlib.Path(paths["float32"]).parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "labels.txt",
        "model_float16.tflite",
        "model_float32.tflite",
        "model_int8.tflite",
    ]
    assert (folder / "labels.txt").read_text().splitlines() == CLASS_NAMES
    sizes = {fmt: pathlib.Path(path).stat().st_size for fmt, path in paths.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_failed_conversion_leaves_the_previous_folder(exported, tmp_path):
    _, paths = exported
    target = tmp_path / "tflite"
    shutil.copytree(pathlib.Path(paths["float32"]).parent, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken_calibration():
        yield np.zeros([SIZE, SIZE, 3], np.float32)
        raise OSError("the dataset went away")

    with pytest.raises(OSError, match="went away"):
        tflite_export.write_models(
            create_tiny_classifier(SIZE, seed=5),
            CLASS_NAMES,
            SIZE,
            str(target),
            representative_images=broken_calibration,
        )
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tflite"]


# --- The export stage on a real (tiny) finished job. ---


def _run_export(*args):
    result = subprocess.run(
        [sys.executable, "-m", "trainer.export", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result.returncode, result.stdout, ours


@pytest.fixture(scope="module")
def finished_job(tiny_backbone, learnable_data_dir, tmp_path_factory):
    job_dir = tmp_path_factory.mktemp("finished") / "job"
    config = TrainConfig(
        data_dir=learnable_data_dir,
        backbone=tiny_backbone,
        image_size=TINY_IMAGE_SIZE,
        batch_size=16,
        epochs=1,
        frozen_epochs=0,
        steps_per_epoch=2,
        precision="float32",
        strategy="default",
    ).validate()
    metrics = train.train_and_evaluate(config, str(job_dir))
    return job_dir, metrics


@pytest.mark.slow
def test_end_of_run_writes_and_measures_every_format(finished_job):
    job_dir, metrics = finished_job
    exports = metrics["exports"]
    assert list(exports) == ["saved_model", "tflite_float32", "tflite_float16", "tflite_int8"]
    assert exports["saved_model"]["top1"] == pytest.approx(metrics["top1"])
    assert exports["tflite_float32"]["agreement"] == 1.0
    for name, row in exports.items():
        assert pathlib.Path(row["path"]).exists(), name
        assert row["size_mb"] > 0 and 0 <= row["top1"] <= row["top5"] <= 1
    assert json.loads((job_dir / "metrics.json").read_text())["exports"] == exports
    readme = (job_dir / "tflite" / "README.md").read_text()
    assert "uint8 `[1, 32, 32, 3]`" in readme and "| tflite_int8 |" in readme


@pytest.mark.slow
def test_export_cli_rebuilds_the_model_from_the_finished_job(finished_job):
    job_dir, metrics = finished_job
    before = (job_dir / "tflite" / "model_float32.tflite").read_bytes()
    code, stdout, errors = _run_export(f"--job_dir={job_dir}", "--formats=tflite")
    assert (code, errors) == (0, []), stdout
    assert "| tflite_int8 |" in stdout
    # The rebuilt model is the trained one: the same predictions, so the same scores.
    rerun = json.loads((job_dir / "metrics.json").read_text())["exports"]
    for name in ("tflite_float32", "tflite_float16", "tflite_int8"):
        for key in ("top1", "top5", "agreement"):
            assert rerun[name][key] == metrics["exports"][name][key], (name, key)
    images = _framed(REAL, TINY_IMAGE_SIZE)
    old = tflite_export.LiteRTClassifier(before)
    new = tflite_export.LiteRTClassifier(str(job_dir / "tflite" / "model_float32.tflite"))
    for image in images:
        np.testing.assert_allclose(new(image), old(image), atol=1e-6)


def test_export_of_an_unfinished_job_is_one_line(tmp_path, learnable_data_dir):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    config = TrainConfig(data_dir=learnable_data_dir, image_size=TINY_IMAGE_SIZE)
    (job_dir / "config.json").write_text(json.dumps({"flags": config.to_dict()}))
    code, stdout, errors = _run_export(f"--job_dir={job_dir}")
    assert (code, stdout) == (2, "")
    assert errors == [
        f"error: job {job_dir} has no finished weights (phase 'fine_tune' is not done in "
        f"{job_dir}/checkpoints): finish it first by rerunning python -m trainer.task with the "
        "same flags"
    ]
    assert sorted(p.name for p in job_dir.iterdir()) == ["config.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--job_dir={tmp}"], "error: --job_dir {tmp} holds no config.json: not a trainer job"),
        (
            ["--job_dir={tmp}", "--formats=tflite,onnx"],
            "error: unknown export format(s) onnx: choose from saved_model, tflite",
        ),
    ],
)
def test_bad_export_arguments_are_one_line(tmp_path, args, message):
    code, _, errors = _run_export(*(arg.format(tmp=tmp_path) for arg in args))
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(message.format(tmp=tmp_path))
