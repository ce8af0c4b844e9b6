"""The run configuration: one frozen dataclass built by task.py from flags, read by train.py."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from trainer import backbones, distribute, input_pipeline

OPTIMIZERS = ("adamw", "sgd")
EXPORT_FORMATS = ("saved_model", "tflite")  # issue 11: what trainer.export can write.


def option(default, help: str, **flag_kwargs) -> dataclasses.Field:  # noqa: A002 - absl's name.
    """A TrainConfig field that is also a command-line flag: its ONE definition.

    task.py generates `--<field name>` from it, with this default and help; `flag_kwargs`
    (e.g. `lower_bound`) go to the absl flag definition.
    """
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag_kwargs})


@dataclasses.dataclass(frozen=True)
class OutputDirs:
    """Where a run writes. On Vertex AI the AIP_* variables choose; else folders in job_dir."""

    model_dir: str
    checkpoint_dir: str
    tensorboard_dir: str


def resolve_output_dirs(job_dir: str, env: Mapping[str, str]) -> OutputDirs:
    """Model, checkpoint and TensorBoard folders: AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and
    AIP_TENSORBOARD_LOG_DIR when Vertex AI sets them, else job_dir/{model,checkpoints,logs}."""
    return OutputDirs(
        model_dir=env.get("AIP_MODEL_DIR") or os.path.join(job_dir, "model"),
        checkpoint_dir=env.get("AIP_CHECKPOINT_DIR") or os.path.join(job_dir, "checkpoints"),
        tensorboard_dir=env.get("AIP_TENSORBOARD_LOG_DIR") or os.path.join(job_dir, "logs"),
    )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `train.train_and_evaluate` needs. See trainer/task.py for each field's help."""

    data_dir: str | None  # None: TFDS's default data_dir.
    dataset: str = input_pipeline.DEFAULT_DATASET
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    backbone: str = backbones.DEFAULT_HANDLE
    image_size: int = 224
    batch_size: int = 64  # Per replica.
    epochs: int = 10
    frozen_epochs: int = 3
    steps_per_epoch: int = 0  # 0: one pass over the training split.
    learning_rate: float = 0.01  # Per 256 images.
    warmup_epochs: float = 1.0
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    dropout: float = 0.2
    fine_tune_layers: int = 0
    fine_tune_lr_factor: float = 0.1
    fine_tune_batchnorm: bool = False
    early_stopping_patience: int = 0
    precision: str = "auto"
    strategy: str = "auto"
    seed: int = 0
    cache: bool = False
    worker_heartbeat_timeout: int = distribute.DEFAULT_HEARTBEAT_TIMEOUT  # Seconds.
    # issue 11: what the end of the run exports (trainer.export.FORMATS); `python -m
    # trainer.export` writes any of them later from the finished job.
    export_formats: tuple[str, ...] = option(
        EXPORT_FORMATS,
        "Formats written at the end of the run: saved_model (serving), tflite (LiteRT "
        "float32/float16/int8 for phones). `python -m trainer.export` adds others later.",
    )
    outputs: OutputDirs | None = None
    tf_config: dict | None = None

    def validate(self) -> TrainConfig:
        """Raises ValueError naming every bad value; returns self for chaining."""
        problems = []
        for name in ("batch_size", "epochs", "image_size", "worker_heartbeat_timeout"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("frozen_epochs", "steps_per_epoch", "fine_tune_layers"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.frozen_epochs > self.epochs:
            problems.append(f"frozen_epochs={self.frozen_epochs} exceeds epochs={self.epochs}")
        for name in ("learning_rate", "fine_tune_lr_factor"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        for name in ("dropout", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1)")
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            problems.append("weight_decay and warmup_epochs must be >= 0")
        choices = {
            "precision": distribute.PRECISIONS,
            "strategy": distribute.STRATEGIES,
            "optimizer": OPTIMIZERS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r} is not one of {allowed}")
        if unknown := sorted(set(self.export_formats) - set(EXPORT_FORMATS)):
            problems.append(f"export_formats {unknown} are not among {EXPORT_FORMATS}")
        if problems:
            raise ValueError("Invalid configuration: " + "; ".join(problems) + ".")
        return self

    def to_dict(self) -> dict:
        """JSON-ready copy of every field."""
        return dataclasses.asdict(self)
