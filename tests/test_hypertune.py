"""trainer/hypertune.py: writes the metric file a Vertex AI tuning trial reads, else nothing."""

import json

import pytest

from trainer import hypertune


@pytest.fixture
def trial(tmp_path, monkeypatch):
    """The environment Vertex AI gives trial 7; returns the metric file's path."""
    path = tmp_path / "hypertune" / "output.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(path))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    return path


def test_reports_in_a_trial_in_the_format_vertex_reads(trial):
    assert hypertune.is_tuning_trial()
    assert hypertune.report_metric("accuracy", 0.5, step=100)
    assert hypertune.report_metric("accuracy", 0.875, step=200)
    entries = [json.loads(line) for line in trial.read_text().splitlines()]
    # One JSON object per line, every report kept, values as strings.
    assert [(e["accuracy"], e["global_step"], e["trial"]) for e in entries] == [
        ("0.5", "100", "7"),
        ("0.875", "200", "7"),
    ]
    assert all(isinstance(e["timestamp"], float) for e in entries)


def test_non_finite_metric_is_rejected(trial):
    with pytest.raises(ValueError, match="accuracy=nan is not finite"):
        hypertune.report_metric("accuracy", float("nan"), step=1)
    assert not trial.exists()


def test_outside_a_trial_is_a_no_op(monkeypatch, tmp_path):
    monkeypatch.delenv("CLOUD_ML_HP_METRIC_FILE", raising=False)
    monkeypatch.delenv("CLOUD_ML_TRIAL_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    assert not hypertune.is_tuning_trial()
    assert hypertune.report_metric("accuracy", 0.5, step=1) is False
    assert list(tmp_path.iterdir()) == []
