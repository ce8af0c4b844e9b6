"""Preemption: SIGTERM mid-epoch saves the state and exits 143; a restart resumes from it.

Runs the real `python -m trainer.task` three times on a tiny model: once uninterrupted, once
stopped by SIGTERM (as Vertex AI and Spot VMs send it) during the fine-tuning phase, and once
restarted with the same --job_dir. Then the two workers of a small MultiWorkerMirroredStrategy
job (tests/fixtures/processes.py run as a script), of which only one gets SIGTERM: both must
save, at the same step.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time

import pytest
import tensorflow as tf

from tests.fixtures.processes import (
    finish,
    free_ports,
    relative_files,
    run_trainer,
    running,
    tiny_training_flags,
    wait_until,
)

pytestmark = pytest.mark.slow

STEPS = 30  # Per epoch; epochs 2-4 fine-tune, so the fine-tuning optimizer ends at 90.
EXIT_PREEMPTED = 143
_PREEMPTED = re.compile(
    r"^preempted: state saved at epoch (\d+) step (\d+) \(optimizer step (\d+)\); "
    r"restart with the same --job_dir to resume$"
)


def optimizer_step(checkpoint: str) -> int:
    """The optimizer's `iterations` in a tf_keras weights checkpoint or backup (model/...)."""
    reader = tf.train.load_checkpoint(checkpoint)
    keys = reader.get_variable_to_shape_map()
    (key,) = [k for k in keys if k.endswith("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")]
    return int(reader.get_tensor(key))


@pytest.fixture(scope="module")
def flags(learnable_data_dir, tiny_backbone):
    def make(job_dir):
        # No dropout: its masks come from TF's stateful RNG, whose state no checkpoint holds,
        # so after a restart they differ from an uninterrupted run's (README, "Preemption").
        return tiny_training_flags(
            learnable_data_dir, tiny_backbone, str(job_dir), epochs=4, steps_per_epoch=STEPS,
            dropout=0.0,
        )  # fmt: skip

    return make


@pytest.fixture(scope="module")
def uninterrupted(flags, tmp_path_factory):
    job_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_trainer(flags(job_dir / "job"), job_dir / "log.txt", timeout=400)
    assert result.returncode == 0, result.output[-3000:]
    return job_dir / "job"


def test_sigterm_mid_epoch_saves_and_restart_resumes_like_an_uninterrupted_run(
    flags, uninterrupted, tmp_path
):
    job_dir = tmp_path / "job"
    epochs = job_dir / "checkpoints" / "epochs"
    with running(flags(job_dir), tmp_path / "preempted.txt") as process:
        wait_until(
            (epochs / "epoch-002.index").exists, 400, "the second epoch", processes=[process]
        )
        time.sleep(0.5)  # Into epoch 3 (an epoch takes a few seconds); epoch 4 is spare.
        process.send_signal(signal.SIGTERM)
        preempted = finish(process, tmp_path / "preempted.txt", timeout=60)

    # It saved, said so in one line, exited 143, and left nothing that looks finished.
    assert preempted.returncode == EXIT_PREEMPTED, preempted.output[-3000:]
    saved = [m for m in map(_PREEMPTED.match, preempted.lines) if m]
    assert len(saved) == 1, preempted.lines[-5:]
    epoch, step, saved_step = map(int, saved[0].groups())
    print(f"preempted at epoch {epoch} step {step}")
    assert epoch in (2, 3) and 1 <= step <= STEPS
    assert saved_step == (epoch - 2) * STEPS + step  # The fine-tuning phase's optimizer.
    backup = str(job_dir / "checkpoints" / "backup" / "fine_tune" / "chief")
    assert optimizer_step(tf.train.latest_checkpoint(backup)) == saved_step
    assert not (job_dir / "metrics.json").exists()
    assert not (job_dir / "model").exists()
    assert not (epochs / "epoch-004.index").exists()

    # The restart continues from that step: no step lost or repeated, same artefacts.
    resumed = run_trainer(flags(job_dir), tmp_path / "resumed.txt", timeout=400)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert (
        f"resuming: state restored at epoch {epoch} step {step} (optimizer step {saved_step})"
        in resumed.output
    )
    assert "Epoch 1/4" not in resumed.output  # The finished head phase was not trained again.
    assert optimizer_step(str(epochs / "epoch-004")) == 3 * STEPS
    assert optimizer_step(str(uninterrupted / "checkpoints/epochs/epoch-004")) == 3 * STEPS
    assert relative_files(job_dir, skip=["logs/"]) == relative_files(uninterrupted, ["logs/"])
    history = json.loads((job_dir / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]

    # The restart trained the same batches at the same steps (the input pipeline skipped the
    # steps trained before SIGTERM): it ends where the uninterrupted run ends, up to rounding.
    ours = json.loads((job_dir / "metrics.json").read_text())
    reference = json.loads((uninterrupted / "metrics.json").read_text())
    for name in ("loss", "top1", "top5", "validation_loss", "validation_accuracy"):
        assert ours[name] == pytest.approx(reference[name], rel=1e-5, abs=1e-6), name


def test_sigterm_to_one_worker_makes_every_worker_save_at_the_same_step(tmp_path):
    backup = tmp_path / "backup"

    def run_workers(run: str, signal_worker_1: bool) -> list:
        args = [",".join(map(str, free_ports(2))), str(backup)]
        logs = [tmp_path / f"{run}_{index}.txt" for index in (0, 1)]
        with contextlib.ExitStack() as stack:
            workers = [
                stack.enter_context(
                    running([str(index), *args], logs[index], module="tests.fixtures.processes")
                )
                for index in (0, 1)
            ]
            if signal_worker_1:  # Only worker 1, as when one Spot VM is reclaimed.
                saved = backup / "chief" / "checkpoint"
                wait_until(saved.exists, 120, "the first epoch's backup", processes=workers)
                workers[1].send_signal(signal.SIGTERM)
            return [finish(w, log, timeout=120) for w, log in zip(workers, logs, strict=True)]

    preempted = run_workers("preempted", signal_worker_1=True)
    lines = [[line for line in p.lines if line.startswith("preempted:")] for p in preempted]
    assert [p.returncode for p in preempted] == [EXIT_PREEMPTED] * 2, preempted[0].output[-2000:]
    assert len(lines[0]) == 1 and lines[0] == lines[1]  # The same epoch and step on both.
    epoch, step, saved_step = map(int, _PREEMPTED.match(lines[0][0]).groups())
    assert epoch == 2 and saved_step == 40 + step

    resumed = run_workers("resumed", signal_worker_1=False)
    for result in resumed:
        assert result.returncode == 0, result.output[-2000:]
        assert f"resuming: state restored at epoch 2 step {step} " in result.output
        assert "done: optimizer step 120" in result.lines
