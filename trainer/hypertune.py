"""Reports the tuning metric to Vertex AI hyperparameter tuning, and does nothing elsewhere.

A Vertex AI tuning trial reads the metric from a file of JSON lines that `cloudml-hypertune`
writes: the path comes from `CLOUD_ML_HP_METRIC_FILE` (default /tmp/hypertune/output.metrics)
and the trial from `CLOUD_ML_TRIAL_ID`, both set by Vertex AI for each trial. Outside a trial
neither is set and `report_metric` is a no-op, so the trainer can call it unconditionally.

The service's path is only writable by root on Vertex AI's training service
(GoogleCloudPlatform/cloudml-hypertune#6: /var/hypertune/), and the training image runs as a
non-root user: infra/Dockerfile creates the metric folders owned by that user, and
`check_metric_file` fails the trial at start-up, in one line, if it still cannot write there,
rather than after hours of training.

`EpochMetricReporter` reports the validation accuracy at every epoch end, so Vertex AI's
automated early stopping can compare running trials with completed ones. Only the chief
reports: in a multi-worker trial every worker shares the trial ID. The study spec's
`metricId` must equal the reported tag.
"""

from __future__ import annotations

import functools
import math
import os

import hypertune
import tf_keras

_TRIAL_ENV_VARS = ("CLOUD_ML_TRIAL_ID", "CLOUD_ML_HP_METRIC_FILE")
# cloudml-hypertune's own default when CLOUD_ML_HP_METRIC_FILE is unset (hypertune/hypertune.py).
DEFAULT_METRIC_FILE = "/tmp/hypertune/output.metrics"


def is_tuning_trial() -> bool:
    """True when this process runs as a Vertex AI hyperparameter-tuning trial."""
    return any(os.environ.get(name) for name in _TRIAL_ENV_VARS)


@functools.cache
def _reporter(metric_file: str | None, trial_id: str | None) -> hypertune.HyperTune:
    # One reporter per (file, trial): it keeps the last 100 reports and rewrites the whole file
    # on each one, so a fresh instance per call would keep only the latest line.
    del metric_file, trial_id  # HyperTune reads them from the environment itself.
    return hypertune.HyperTune()


def metric_file(env: dict | None = None) -> str:
    """Where cloudml-hypertune writes in this trial."""
    env = os.environ if env is None else env
    return env.get("CLOUD_ML_HP_METRIC_FILE") or DEFAULT_METRIC_FILE


def check_metric_file() -> None:
    """In a tuning trial, raises ValueError unless this process can write the metric file.

    Creates its folder (as cloudml-hypertune would, later) so that several reporters never
    race to create it. Outside a trial it does nothing.
    """
    if not is_tuning_trial():
        return
    path = metric_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as error:
        raise ValueError(
            f"this tuning trial cannot write its metric file {path} as uid {os.getuid()} "
            f"({error.strerror}): the image must create that folder for its user "
            "(infra/Dockerfile does; GoogleCloudPlatform/cloudml-hypertune#6)"
        ) from error


def report_metric(tag: str, value: float, step: int) -> bool:
    """Reports `value` of metric `tag` at `step` to the tuning service, if this is a trial.

    Args:
      tag: metric name, as in the tuning job's study spec (e.g. "accuracy").
      value: the metric value; must be finite.
      step: the global training step it belongs to.

    Returns:
      True if the metric was reported (running as a trial), False otherwise.
    """
    if not is_tuning_trial():
        return False
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"hyperparameter-tuning metric {tag}={value} is not finite")
    reporter = _reporter(
        os.environ.get("CLOUD_ML_HP_METRIC_FILE"), os.environ.get("CLOUD_ML_TRIAL_ID")
    )
    reporter.report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=tag, metric_value=value, global_step=int(step)
    )
    return True


class EpochMetricReporter(tf_keras.callbacks.Callback):
    """Reports `logs[monitor]` as metric `tag` at every epoch end, with the epoch (1-based, as
    counted across training phases) as the step: comparable between trials whose batch sizes,
    hence optimizer steps per epoch, differ. A no-op outside a tuning trial."""

    def __init__(self, tag: str = "accuracy", monitor: str = "val_accuracy"):
        super().__init__()
        self._tag = tag
        self._monitor = monitor

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self._monitor)
        if value is not None and math.isfinite(float(value)):
            report_metric(self._tag, float(value), step=epoch + 1)
