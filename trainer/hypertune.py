"""Reports the tuning metric to Vertex AI hyperparameter tuning, and does nothing elsewhere.

A Vertex AI tuning trial reads the metric from a file of JSON lines that `cloudml-hypertune`
writes: the path comes from `CLOUD_ML_HP_METRIC_FILE` (default /tmp/hypertune/output.metrics)
and the trial from `CLOUD_ML_TRIAL_ID`, both set by Vertex AI for each trial. Outside a trial
neither is set and `report_metric` is a no-op, so the trainer can call it unconditionally.

Only the chief should report: in a multi-worker trial every worker shares the trial ID.
The `--hp_metric_tag` given to `gcloud ai hp-tuning-jobs create` (the `metricId` in the study
spec) must equal `tag`.
"""

from __future__ import annotations

import functools
import math
import os

import hypertune

_TRIAL_ENV_VARS = ("CLOUD_ML_TRIAL_ID", "CLOUD_ML_HP_METRIC_FILE")


def is_tuning_trial() -> bool:
    """True when this process runs as a Vertex AI hyperparameter-tuning trial."""
    return any(os.environ.get(name) for name in _TRIAL_ENV_VARS)


@functools.cache
def _reporter(metric_file: str | None, trial_id: str | None) -> hypertune.HyperTune:
    # One reporter per (file, trial): it keeps the last 100 reports and rewrites the whole file
    # on each one, so a fresh instance per call would keep only the latest line.
    del metric_file, trial_id  # HyperTune reads them from the environment itself.
    return hypertune.HyperTune()


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
