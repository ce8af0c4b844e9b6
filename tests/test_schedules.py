"""Warm-up + cosine schedule and the batch-scaling rules (linear for SGD, sqrt for AdamW)."""

import numpy as np
import pytest
import tf_keras

from trainer import schedules


def test_warmup_rises_linearly_then_cosine_decays_to_the_floor():
    schedule = schedules.WarmupCosineDecay(
        0.1, total_steps=110, warmup_steps=10, final_fraction=0.01
    )
    values = np.array([float(schedule(step)) for step in range(0, 130)])
    np.testing.assert_allclose(values[:10], 0.1 * np.arange(1, 11) / 10, rtol=1e-6)
    assert values[10] == pytest.approx(0.1)
    assert values[60] == pytest.approx(0.1 * (0.01 + 0.99 * 0.5), rel=1e-5)  # halfway
    assert np.all(np.diff(values[10:111]) <= 1e-9)  # never rises after the warm-up
    np.testing.assert_allclose(values[110:], 0.001, rtol=1e-5)  # holds the floor afterwards


def test_schedule_round_trips_through_keras_serialization():
    schedule = schedules.WarmupCosineDecay(0.05, total_steps=100, warmup_steps=7)
    restored = tf_keras.optimizers.schedules.deserialize(
        tf_keras.optimizers.schedules.serialize(schedule)
    )
    assert isinstance(restored, schedules.WarmupCosineDecay)
    assert [float(restored(s)) for s in (0, 7, 50)] == [float(schedule(s)) for s in (0, 7, 50)]


def test_optimizer_with_schedule_round_trips():
    optimizer = tf_keras.optimizers.AdamW(schedules.WarmupCosineDecay(0.01, 20, 2))
    restored = tf_keras.optimizers.AdamW.from_config(optimizer.get_config())
    assert float(restored.learning_rate) == pytest.approx(float(optimizer.learning_rate))


@pytest.mark.parametrize("total, warmup", [(0, 0), (10, 11), (10, -1)])
def test_bad_step_counts_raise(total, warmup):
    with pytest.raises(ValueError, match="warmup_steps"):
        schedules.WarmupCosineDecay(0.1, total_steps=total, warmup_steps=warmup)


def test_learning_rate_scales_linearly_for_sgd_and_with_the_square_root_for_adamw():
    assert schedules.scale_learning_rate(0.1, 256, "sgd") == pytest.approx(0.1)
    assert schedules.scale_learning_rate(0.1, 64, "sgd") == pytest.approx(0.025)
    assert schedules.scale_learning_rate(0.1, 1024, "sgd") == pytest.approx(0.4)
    assert schedules.scale_learning_rate(0.1, 256, "adamw") == pytest.approx(0.1)
    assert schedules.scale_learning_rate(0.1, 64, "adamw") == pytest.approx(0.05)
    assert schedules.scale_learning_rate(0.1, 1024, "adamw") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="global batch 0"):
        schedules.scale_learning_rate(0.1, 0)
    with pytest.raises(ValueError, match="optimizer 'adam'"):
        schedules.scale_learning_rate(0.1, 64, "adam")
