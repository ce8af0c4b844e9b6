r"""Fine-tunes MobileNet V2 on Oregon Wildlife: `python -m trainer.task`.

  python -m trainer.task --data_dir=$HOME/tensorflow_datasets --job_dir=runs/first \
      --flagfile=trainer/flagfiles/gpu_1.cfg

Presets for each kind of machine are in trainer/flagfiles/. On Vertex AI the AIP_MODEL_DIR,
AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR variables choose where the model, checkpoints
and TensorBoard logs go; TF_CONFIG (or Vertex's CLUSTER_SPEC) describes a multi-worker job.
"""

from __future__ import annotations

import os
import posixpath
import sys
import uuid

from trainer import cli  # isort: skip - first: it quiets TensorFlow before TensorFlow loads.

import tensorflow as tf
from absl import flags

from infra import storage
from trainer import callbacks, distribute, preemption, train
from trainer.config import TrainConfig, resolve_output_dirs

_DEFAULTS = TrainConfig(data_dir="")

# --- Where the run reads and writes. ---
flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir holding the built dataset (default: $TFDS_DATA_DIR or "
    "~/tensorflow_datasets)."
)  # fmt: skip
flags.DEFINE_string(
    "job_dir", None, "Output folder, local or gs://. Default on Vertex AI: the parent of "
    "AIP_MODEL_DIR (the job's base output directory)."
)  # fmt: skip
flags.DEFINE_string("dataset", _DEFAULTS.dataset, "TFDS name/config of the dataset.")
flags.DEFINE_string("train_split", _DEFAULTS.train_split, "TFDS split to train on.")
flags.DEFINE_string("validation_split", _DEFAULTS.validation_split, "Split for validation.")
flags.DEFINE_string("test_split", _DEFAULTS.test_split, "Split for the final test metrics.")
# --- What it trains. ---
flags.DEFINE_string(
    "backbone", _DEFAULTS.backbone, "Feature-vector backbone: TF Hub or Kaggle Models handle, "
    "gs:// or local SavedModel folder, or keras:mobilenet_v2_130[:untrained] (tf_keras "
    "application; runs entirely in mixed precision)."
)  # fmt: skip
flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Input height and width in pixels.")
flags.DEFINE_float("dropout", _DEFAULTS.dropout, "Dropout rate before the classifier.")
# --- How long and how. ---
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Batch size PER REPLICA (GPU).")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Total epochs, both phases included.")
flags.DEFINE_integer(
    "frozen_epochs", _DEFAULTS.frozen_epochs, "First epochs that train the head only, with the "
    "backbone frozen; the rest fine-tune the backbone too."
)  # fmt: skip
flags.DEFINE_integer(
    "steps_per_epoch", _DEFAULTS.steps_per_epoch, "Cap on steps per epoch for smoke runs; "
    "0 = one full pass over the training split."
)  # fmt: skip
flags.DEFINE_float(
    "learning_rate", _DEFAULTS.learning_rate, "Peak learning rate PER 256 IMAGES; scaled "
    "linearly to the global batch (per-replica batch x replicas)."
)  # fmt: skip
flags.DEFINE_float("warmup_epochs", _DEFAULTS.warmup_epochs, "Linear warm-up of each phase.")
flags.DEFINE_string("optimizer", _DEFAULTS.optimizer, "adamw or sgd (Nesterov momentum 0.9).")
flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay, "Decoupled weight decay; 0 = off.")
flags.DEFINE_float("label_smoothing", _DEFAULTS.label_smoothing, "Label smoothing, in [0, 1).")
flags.DEFINE_integer(
    "fine_tune_layers", _DEFAULTS.fine_tune_layers, "Backbone layers to unfreeze in phase 2, "
    "counted from the top; 0 = all (needed for hub SavedModel backbones)."
)  # fmt: skip
flags.DEFINE_float(
    "fine_tune_lr_factor", _DEFAULTS.fine_tune_lr_factor, "Phase-2 learning rate as a "
    "fraction of --learning_rate."
)  # fmt: skip
flags.DEFINE_bool(
    "fine_tune_batchnorm", _DEFAULTS.fine_tune_batchnorm, "Let BatchNorm update its "
    "statistics while fine-tuning (default: inference mode, as small batches hurt)."
)  # fmt: skip
flags.DEFINE_integer(
    "early_stopping_patience", _DEFAULTS.early_stopping_patience, "Stop a phase after this "
    "many epochs without better val_accuracy; 0 = off."
)  # fmt: skip
# --- Hardware. ---
flags.DEFINE_string(
    "precision", _DEFAULTS.precision, "auto|float32|mixed_float16|mixed_bfloat16; auto = "
    "mixed_float16 on GPUs with compute capability >= 7.0, float32 otherwise."
)  # fmt: skip
flags.DEFINE_string(
    "strategy", _DEFAULTS.strategy, "auto|default|mirrored|multi_worker; auto = multi_worker "
    "if TF_CONFIG/CLUSTER_SPEC lists several workers, mirrored on several GPUs, else default."
)  # fmt: skip
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed for weights, file order, shuffling, crops.")
flags.DEFINE_bool("cache", _DEFAULTS.cache, "Cache the encoded images in memory after epoch 1.")
flags.DEFINE_integer(
    "worker_heartbeat_timeout", _DEFAULTS.worker_heartbeat_timeout, "Several workers: seconds "
    "without a heartbeat after which a worker counts as lost and every worker stops with an "
    "error, instead of waiting for it forever."
)  # fmt: skip

# --- issue 11: to be generated from config.option ---
flags.DEFINE_list(
    "export_formats", list(_DEFAULTS.export_formats), "Formats written at the end of the run: "
    "saved_model (serving), tflite (LiteRT float32/float16/int8 for phones)."
)  # fmt: skip

FLAGS = flags.FLAGS

# Exit codes: what whoever restarts the job should do next (README, "Reliability").
EXIT_BAD_INPUT = cli.EXIT_BAD_INPUT  # Fix the flags or data named in the error line, run again.
EXIT_DIVERGED = 3  # The loss became NaN/inf: lower --learning_rate (or use float32).
EXIT_LOST_WORKER = 75  # EX_TEMPFAIL: a worker was lost; restart all workers to resume.
# preemption.EXIT_CODE (143): SIGTERM, state saved; restart with the same --job_dir to resume.


def create_config(env: dict[str, str]) -> tuple[TrainConfig, str]:
    """The validated TrainConfig and job_dir from the parsed flags and the environment."""
    job_dir = FLAGS.job_dir
    if not job_dir and env.get("AIP_MODEL_DIR"):
        job_dir = posixpath.dirname(env["AIP_MODEL_DIR"].rstrip("/"))
    if not job_dir:
        raise ValueError("--job_dir is required (a local folder or gs:// path for the outputs).")
    fields = {name: FLAGS[name].value for name in _flag_fields()}
    config = TrainConfig(
        **fields,
        outputs=resolve_output_dirs(job_dir, env),
        tf_config=distribute.resolve_tf_config(env),
    )
    return config.validate(), job_dir


def _flag_fields() -> list[str]:
    skip = {"outputs", "tf_config"}
    return [name for name in TrainConfig.__dataclass_fields__ if name not in skip]


def check_writable(job_dir: str) -> None:
    """Fails fast, before any training, when job_dir cannot be written."""
    probe = posixpath.join(job_dir, f".write-test-{uuid.uuid4().hex[:8]}")
    try:
        tf.io.gfile.makedirs(job_dir)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"job_dir {job_dir} is not writable: {message}") from error


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(
            f"unexpected arguments {' '.join(argv[1:])}: flags look like --name=value",
            EXIT_BAD_INPUT,
        )
    try:
        config, job_dir = create_config(dict(os.environ))
        # gs:// typos and missing grants fail here in seconds (TF itself would retry for
        # minutes, or hang in makedirs); local paths are checked by what follows.
        storage.check_paths(readable=[config.data_dir, config.backbone], writable=[job_dir])
        check_writable(job_dir)
        train.train_and_evaluate(config, job_dir)
    except ValueError as error:
        cli.fail(str(error), EXIT_BAD_INPUT)
    except callbacks.TrainingDivergedError as error:
        cli.fail(str(error), EXIT_DIVERGED)
    except preemption.Preempted as stop:
        print(stop, file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_CODE)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        if distribute.count_workers(config.tf_config) < 2:  # Only training raises it: set.
            raise
        cli.fail(
            f"lost contact with another worker ({_peer_failure(error)}); restart all workers "
            "with the same --job_dir to resume",
            EXIT_LOST_WORKER,
        )


def _peer_failure(error: tf.errors.OpError) -> str:
    """What a failed collective op says about the other worker, from its long message
    ('Collective ops is aborted by: <reason>', possibly continued on the next line)."""
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "aborted by:" in line:
            reason = line.split("aborted by:", 1)[1].strip()
            if reason.endswith(":") and i + 1 < len(lines):
                reason = f"{reason} {lines[i + 1]}"
            return reason
    return lines[0] if lines else type(error).__name__


if __name__ == "__main__":
    cli.run(main, bad_input=())
