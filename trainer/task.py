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

from trainer import cli  # isort: skip - first: it quiets TensorFlow before TensorFlow loads.

import tensorflow as tf
from absl import flags

from infra import storage
from trainer import callbacks, distribute, hypertune, preemption, train
from trainer.config import TrainConfig, config_from_flags, define_flags, resolve_output_dirs

FLAGS = flags.FLAGS
# One flag per TrainConfig option (trainer/config.py holds each default and help text).
define_flags(TrainConfig, FLAGS)
# Where the run writes: not a training input, so not a TrainConfig field.
flags.DEFINE_string(
    "job_dir", None, "Output folder, local or gs://. Default on Vertex AI: the parent of "
    "AIP_MODEL_DIR (the job's base output directory)."
)  # fmt: skip

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
    config = config_from_flags(
        TrainConfig,
        FLAGS,
        outputs=resolve_output_dirs(job_dir, env),
        tf_config=distribute.resolve_tf_config(env),
    )
    return config.validate(), job_dir


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(
            f"unexpected arguments {' '.join(argv[1:])}: flags look like --name=value",
            EXIT_BAD_INPUT,
        )
    try:
        config, job_dir = create_config(dict(os.environ))
        # Before any data work: a machine without its GPUs, or a tuning trial that could not
        # report its metric, would otherwise spend its hours and then fail or mislead.
        distribute.check_gpus(config.min_gpus, len(tf.config.list_physical_devices("GPU")))
        hypertune.check_metric_file()
        # gs:// typos and missing grants fail here in seconds (TF itself would retry for
        # minutes, or hang in makedirs); the job_dir gets one real write probe, local or gs://.
        storage.check_paths(readable=[config.data_dir, config.backbone])
        storage.check_writable(job_dir, what="job_dir")
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
