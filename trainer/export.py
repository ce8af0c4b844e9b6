"""Exports a trained classifier to every deployment format, and measures each on the test split.

    python -m trainer.export --job_dir=runs/first [--formats=saved_model,tflite]

rebuilds the model of a finished job (its config.json and final weights) and writes the
requested formats, as `train.train_and_evaluate` does at the end of a run (both call
`export_and_measure`):
  saved_model  the serving SavedModel (`trainer.serving`) in the job's model folder
               (job_dir/model, or AIP_MODEL_DIR on Vertex AI);
  tflite       LiteRT models float32, float16 and int8, labels.txt and README.md in
               job_dir/tflite (`trainer.tflite_export`).
Each format's size, test top-1/top-5, top-1 agreement with the SavedModel and single-thread
latency go into job_dir/metrics.json under `exports`, and are printed as a table.

Bad input (no finished job in --job_dir, an unknown format) is one `error:` line, exit 2. A
failed conversion leaves the previous folders as they were: each is written atomically.
"""

from __future__ import annotations

from trainer import cli  # isort: skip - first: it quiets TensorFlow before TensorFlow loads.

import dataclasses
import json
import posixpath
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from absl import flags

from trainer import (
    backbones,
    distribute,
    evaluate,
    input_pipeline,
    models,
    outputs,
    serving,
    tflite_export,
)
from trainer.config import EXPORT_FORMATS, OutputDirs, TrainConfig, resolve_output_dirs

# Kept importable from here: callers of the serving export predate this module's split.
export_serving_model = serving.export_serving_model
read_labels = serving.read_labels
LABELS_FILE = serving.LABELS_FILE

FORMATS = EXPORT_FORMATS
TFLITE_DIR = "tflite"
REPRESENTATIVE_IMAGES = 300  # Training images calibrating int8 (TFLite's guide: ~100-500).
_TOP_K = 5
_BATCH = 32


def _check_formats(formats: Sequence[str]) -> None:
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(
            f"unknown export format(s) {', '.join(unknown) or '(none given)'}: choose from "
            f"{', '.join(FORMATS)}"
        )


def export_and_measure(
    model: tf_keras.Model,
    config: TrainConfig,
    class_names: Sequence[str],
    model_dir: str,
    job_dir: str,
    *,
    formats: Sequence[str] = FORMATS,
    chief: bool = True,
    representative_images: int = REPRESENTATIVE_IMAGES,
) -> dict[str, dict]:
    """Writes every format in `formats` and measures what exists; returns the `exports` table.

    Every worker of a multi-worker job calls it (the SavedModel export may use collective
    ops); only the chief keeps files, converts to LiteRT and measures (others return {}).

    Args:
      model: the trained classifier (float [B, S, S, 3] in [0, 1] -> [B, C] probabilities).
      config: the run's configuration (dataset, splits, image size).
      class_names: the C class names in label order.
      model_dir: folder of the serving SavedModel.
      job_dir: the job's folder; LiteRT models go to job_dir/tflite.
      formats: a subset of FORMATS.
      chief: whether this worker keeps what it writes.
      representative_images: how many training images calibrate the int8 model.
    """
    _check_formats(formats)
    if "saved_model" in formats:
        with distribute.chief_or_temporary_dir(model_dir, chief) as export_dir:
            serving.export_serving_model(
                model, class_names, export_dir, image_size=config.image_size, top_k=_TOP_K
            )
    if not chief:
        return {}
    builder = input_pipeline.load_builder(config.dataset, config.data_dir)

    def split(name: str) -> tf.data.Dataset:
        return input_pipeline.create_split(
            builder, name, is_training=False, batch_size=_BATCH, image_size=config.image_size
        )

    tflite_dir = posixpath.join(job_dir, TFLITE_DIR)
    if "tflite" in formats:

        def representative():  # Training images through the evaluation preprocessing.
            for image in split(config.train_split).unbatch().take(representative_images):
                yield image[0].numpy()

        tflite_export.write_models(
            model, class_names, config.image_size, tflite_dir, representative_images=representative
        )
    exports = measure_exports(model, model_dir, tflite_dir, class_names, split(config.test_split))
    table = evaluate.format_exports_table(exports)
    if tf.io.gfile.exists(tflite_dir):
        tflite_export.write_readme(tflite_dir, config.image_size, class_names, table)
    where = f"\n  LiteRT models for phones: {tflite_dir}" if "tflite" in formats else ""
    print(
        f"\nExports, measured on the test split ({config.test_split}):\n{table}{where}",
        flush=True,
    )
    return exports


def measure_exports(
    model: tf_keras.Model,
    model_dir: str,
    tflite_dir: str,
    class_names: Sequence[str],
    test: tf.data.Dataset,
) -> dict[str, dict]:
    """{format: {path, size_mb, top1, top5, agreement, latency_ms}} for each export present.

    The reference for agreement is the SavedModel's `predict_images` (the Keras model when no
    SavedModel is there); LiteRT models run one image at a time on one thread.
    """
    labels = np.concatenate([batch_labels.numpy() for _, batch_labels in test])
    exports = {}
    saved_model = posixpath.join(model_dir, "saved_model.pb")
    if tf.io.gfile.exists(saved_model):
        signature = tf.saved_model.load(model_dir).signatures["predict_images"]
        index = {name.encode(): i for i, name in enumerate(class_names)}
        ranked = np.concatenate(
            [
                np.vectorize(index.__getitem__)(signature(images=images)["classes"].numpy())
                for images, _ in test
            ]
        )
        exports["saved_model"] = {
            "path": model_dir,
            "size_mb": tflite_export.file_mb(model_dir),
            **evaluate.score_ranked(ranked, labels),
            "agreement": None,  # It is the reference.
            "latency_ms": None,  # TensorFlow's thread pools are fixed at start-up.
        }
    else:
        probabilities = np.concatenate([model(images, training=False) for images, _ in test])
        ranked = evaluate.rank_classes(probabilities, _TOP_K)
    reference = ranked[:, 0]
    for fmt in tflite_export.FORMATS:
        path = posixpath.join(tflite_dir, tflite_export.model_file(fmt))
        if not tf.io.gfile.exists(path):
            continue
        classifier = tflite_export.LiteRTClassifier(path, num_threads=1)
        images_and_labels = ((images.numpy(), batch.numpy()) for images, batch in test)
        probabilities, _, latency_ms = tflite_export.measure(classifier, images_and_labels)
        scores = evaluate.score_ranked(
            evaluate.rank_classes(probabilities, _TOP_K), labels, reference
        )
        exports[f"tflite_{fmt}"] = {
            "path": path,
            "size_mb": tflite_export.file_mb(path),
            **scores,
            "latency_ms": latency_ms,
        }
    return exports


# --- Rebuilding a finished job. ---


def load_finished_job(job_dir: str) -> tuple[TrainConfig, list[str], tf_keras.Model]:
    """The configuration, class names and trained model of the finished job in `job_dir`.

    Raises:
      ValueError: no config.json (not a job folder), or no finished final weights.
    """
    config_path = posixpath.join(job_dir, "config.json")
    if not tf.io.gfile.exists(config_path):
        raise ValueError(f"--job_dir {job_dir} holds no config.json: not a trainer job folder")
    with tf.io.gfile.GFile(config_path) as stream:
        saved = json.load(stream)["flags"]
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in saved.items() if k in fields - {"outputs", "tf_config"}}
    if "export_formats" in values:  # JSON gives a list back.
        values["export_formats"] = tuple(values["export_formats"])
    output_dirs = saved.get("outputs")
    config = TrainConfig(
        **values,
        outputs=OutputDirs(**output_dirs) if output_dirs else resolve_output_dirs(job_dir, {}),
    )
    # The last phase train.create_phases runs: fine-tuning, unless every epoch is frozen.
    phase = "fine_tune" if config.epochs > config.frozen_epochs else "head"
    checkpoint_dir = config.outputs.checkpoint_dir
    if not tf.io.gfile.exists(posixpath.join(checkpoint_dir, f"phase-{phase}.done")):
        raise ValueError(
            f"job {job_dir} has no finished weights (phase {phase!r} is not done in "
            f"{checkpoint_dir}): finish it first by rerunning python -m trainer.task with the "
            "same flags"
        )
    builder = input_pipeline.load_builder(config.dataset, config.data_dir)
    class_names = list(input_pipeline.describe(builder).class_names)
    backbone, _ = backbones.create_backbone(config.backbone, config.image_size)
    model = models.create_model(
        backbone,
        len(class_names),
        config.image_size,
        config.dropout,
        train_batchnorm=config.fine_tune_batchnorm,
    )
    model.load_weights(posixpath.join(checkpoint_dir, f"phase-{phase}", "weights")).expect_partial()
    return config, class_names, model


def update_metrics(job_dir: str, exports: dict[str, dict]) -> None:
    """Sets `exports` in job_dir/metrics.json (created if the job has none)."""
    path = posixpath.join(job_dir, "metrics.json")
    metrics = {}
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as stream:
            metrics = json.load(stream)
    metrics["exports"] = exports
    outputs.write_json_atomic(path, metrics)


# --- Command line. ---


def _define_flags() -> None:
    # Defined only when this module runs as the command: train.py imports it as a library,
    # next to task.py's own --job_dir.
    flags.DEFINE_string("job_dir", None, "Folder of a finished training job.")
    flags.DEFINE_list("formats", list(FORMATS), f"Formats to write: {', '.join(FORMATS)}.")
    flags.DEFINE_integer(
        "representative_images",
        REPRESENTATIVE_IMAGES,
        "Training images that calibrate the int8 model.",
        lower_bound=1,
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: pass --job_dir and --formats")
    values = flags.FLAGS
    if not values.job_dir:
        raise ValueError("--job_dir is required (the folder of a finished training job)")
    _check_formats(values.formats)
    job_dir = values.job_dir
    config, class_names, model = load_finished_job(job_dir)
    exports = export_and_measure(
        model,
        config,
        class_names,
        config.outputs.model_dir,
        job_dir,
        formats=values.formats,
        representative_images=values.representative_images,
    )
    update_metrics(job_dir, exports)
    print(f"Wrote {', '.join(values.formats)}; metrics.json updated in {job_dir}.", flush=True)


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
