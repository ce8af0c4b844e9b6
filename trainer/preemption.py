"""Surviving preemption: save the training state on SIGTERM, resume from it on restart.

Vertex AI, Spot VMs and Kubernetes stop a machine by sending SIGTERM, then SIGKILL after a
grace period (30 s on Spot VMs). `BackupAndRestoreOnPreemption` replaces Keras'
`BackupAndRestore` in `fit`:

- at every epoch end it backs up the model, the optimizer (so its step count and learning-rate
  schedule continue) and the epoch, like `BackupAndRestore`;
- its SIGTERM handler only sets a flag; after the step in flight, every worker backs up the
  state with the step inside the epoch and raises `Preempted`, which `trainer.task` turns into
  exit code 143 (128 + SIGTERM, what the signal itself would have given);
- on restart with the same folder it restores the state and `fit` continues with the next step
  of the interrupted epoch (Keras resumes mid-epoch when `save_freq` is an int).

Several workers (MultiWorkerMirroredStrategy). Usually one VM is preempted, so only one worker
receives SIGTERM, but saving is collective: every worker must save at the same step or they
deadlock. So every 10 steps the workers all-reduce their flags (one scalar: about 2 ms, but the
host waits for the step to finish) and all save when any is set. We chose this
over `tf.distribute.experimental.PreemptionCheckpointHandler`, which agrees on the step through
coordination-service keys, because (TF 2.21, failure_handling.py):
- its keys ('RUN_TO_CHECKPOINT', ...) are global to the process and a finished handler leaves
  them set, so the second `fit` of our two-phase training could not use a second handler;
- it replaces the SIGTERM handler for good, and its save loop is driven through private
  methods (`_run_counter`, `_check_preemption_and_maybe_checkpoint`), as Keras does;
- Keras' own `save_before_preemption` switches it on only on GCP (it asks the metadata server),
  so it would behave differently on a laptop, in CI and on other clouds.

A worker that dies without warning (SIGKILL, a crashed VM) cannot save; the others then fail
within the coordination service's heartbeat timeout (`--worker_heartbeat_timeout`, see
trainer/distribute.py), and a restart resumes from the last epoch's backup.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import tensorflow as tf
import tf_keras
from absl import logging

from trainer import callbacks

# 128 + SIGTERM: what a shell reports for a process that SIGTERM ended.
EXIT_CODE = 128 + signal.SIGTERM

# Keras resumes inside an epoch only when BackupAndRestore's `save_freq` is an int; this class
# never saves by batch count (it overrides `on_train_batch_end`), so the value is not used.
_RESUME_MID_EPOCH = 1


class Preempted(Exception):
    """Training stopped on SIGTERM after saving its state; restart to resume."""

    def __init__(self, epoch: int, step: int, optimizer_step: int):
        self.epoch, self.step, self.optimizer_step = epoch, step, optimizer_step
        super().__init__(
            f"preempted: state saved at epoch {epoch} step {step} (optimizer step "
            f"{optimizer_step}); restart with the same --job_dir to resume"
        )


def create_preemption_vote(strategy: tf.distribute.Strategy) -> Callable[[bool], bool]:
    """Returns `vote(local_flag) -> bool`: True when this or any other worker was signalled.

    Under MultiWorkerMirroredStrategy the vote is an all-reduce, so every worker must call it
    at the same step; elsewhere all replicas share one process and the local flag is the answer.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool

    @tf.function
    def count_signalled(flag: tf.Tensor) -> tf.Tensor:
        # Each replica contributes its worker's flag; any non-zero sum means "save now".
        return strategy.reduce("SUM", strategy.run(tf.identity, args=(flag,)), axis=None)

    def vote(local_flag: bool) -> bool:
        return float(count_signalled(tf.constant(float(local_flag)))) > 0

    return vote


def resume_point(backup_dir: str, initial_epoch: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epoch, step) at which `fit` resumes from the backup in `backup_dir`, as Keras decides
    it (tf_keras WorkerTrainingState.maybe_load_initial_counters_from_ckpt with an int
    save_freq): the step after the saved one, or step 0 of the next epoch after an epoch's
    last step. (initial_epoch, 0) without a backup.

    The input pipeline needs it before `fit` starts: Keras shortens the resumed epoch but
    would feed it from the start of the data; the pipeline skips the steps already trained.
    """
    checkpoint = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if checkpoint is None:
        return initial_epoch, 0
    reader = tf.train.load_checkpoint(checkpoint)
    saved = {}
    for key in reader.get_variable_to_shape_map():
        for name in ("ckpt_saved_epoch", "ckpt_saved_batch"):
            if key.startswith(f"{name}/"):
                saved[name] = int(reader.get_tensor(key))
    epoch, batch = saved["ckpt_saved_epoch"], saved["ckpt_saved_batch"]
    if batch < 0:
        return (epoch + 1, 0) if epoch >= 0 else (initial_epoch, 0)
    return (epoch + 1, 0) if batch == steps_per_epoch - 1 else (epoch, batch + 1)


class BackupAndRestoreOnPreemption(tf_keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that also saves mid-epoch on SIGTERM, then raises `Preempted`.

    Put it LAST in `fit`'s callbacks: its epoch-end backup (and exit, when SIGTERM came during
    the epoch's last step or its validation) then follows every other callback's record of the
    epoch (checkpoint, history, TensorBoard), so a restart never repeats or loses one.

    Args:
      backup_dir: folder (local or gs://) for this `fit`'s backup; reuse it on restart and
        give every `fit` its own. Under MultiWorkerMirroredStrategy only the chief's copy is
        kept (Keras writes the other workers' to temporary folders it removes).
      vote_every: with several workers, agree on the flags every this many steps: each vote
        makes the host wait for the step to finish. (One worker checks every step: it is free.)
    """

    def __init__(self, backup_dir: str, vote_every: int = 10):
        super().__init__(backup_dir, save_freq=_RESUME_MID_EPOCH, delete_checkpoint=False)
        self._vote_every = vote_every
        self._signalled = False
        self._previous_handler = None
        self._vote: Callable[[bool], bool] = bool

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)  # Restores the backup, if any.
        self._log_resume()
        strategy = self.model.distribute_strategy
        self._vote = create_preemption_vote(strategy)
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            self._vote_every = 1
        self._signalled = False
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            # None: a handler installed outside Python; put back the default on train end.
            self._previous_handler = signal.SIG_DFL if previous is None else previous
        else:  # Python only lets the main thread install signal handlers.
            logging.warning("fit() runs outside the main thread: SIGTERM will not be caught.")

    def _on_sigterm(self, signum: int, frame) -> None:
        # Signal handlers run between two Python bytecodes: only set a flag, act after the step.
        del signum, frame
        self._signalled = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # Deliberately not BackupAndRestore's: it would also back up by batch count.
        if batch >= self.params["steps"] - 1:
            return  # The epoch's last step: on_epoch_end backs up and votes.
        if (batch + 1) % self._vote_every:
            return  # Every worker skips the same steps: votes stay collective.
        if not self._vote(self._signalled) or not callbacks.loss_is_finite(logs):
            return  # (Never save diverged weights over the last good state: StopOnNaN reports.)
        self._backup(epoch=self._current_epoch, batch=batch)
        self._stop(self._current_epoch, batch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not callbacks.loss_is_finite(logs):
            return  # Keep the last good backup; StopOnNaN reports the divergence.
        # Record the epoch's last step, so that a restart begins the next epoch at step 0.
        last_step = self.params["steps"] - 1
        self._training_state._ckpt_saved_batch.assign(last_step)
        self._backup(epoch=epoch)
        if self._vote(self._signalled):
            self._stop(epoch, last_step)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._restore_signal_handler()
        super().on_train_end(logs)
        if self._signalled:
            # SIGTERM came after the last chance to save: let it end the process as it would
            # have without us; a restart resumes from the backup of the last epoch.
            signal.raise_signal(signal.SIGTERM)

    def _stop(self, epoch: int, batch: int) -> None:
        self._restore_signal_handler()
        raise Preempted(epoch + 1, batch + 1, self._optimizer_step())

    def _restore_signal_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _optimizer_step(self) -> int:
        return int(tf_keras.backend.get_value(self.model.optimizer.iterations))

    def _log_resume(self) -> None:
        """Says where a restored run picks up (the backup's epoch and step, both 1-based)."""
        epoch = int(self._training_state._ckpt_saved_epoch.numpy())
        batch = int(self._training_state._ckpt_saved_batch.numpy())
        if epoch < 0:
            return
        message = (
            f"resuming: state restored at epoch {epoch + 1} step {batch + 1} (optimizer step "
            f"{self._optimizer_step()}) from {self.backup_dir}"
        )
        logging.info(message)
        print(message, flush=True)
