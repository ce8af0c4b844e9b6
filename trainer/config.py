"""The run configuration: one frozen dataclass, read by train.py, whose fields define the flags.

Each option is written once, as a `TrainConfig` field made by `option(default, help)`;
`define_flags` turns those fields into absl flags (type from the annotation) and
`config_from_flags` reads them back. A dataclass rather than ml_collections config files (as
flax does): the options are a flat, typed list that train.py reads as attributes, the presets
already are `--flagfile`s (which Vertex AI's tuning trials override with `--name=value`), a
frozen dataclass refuses a misspelt option, and no new dependency is needed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping

from absl import flags

from trainer import backbones, distribute, input_pipeline

OPTIMIZERS = ("adamw", "sgd")
EXPORT_FORMATS = ("saved_model", "tflite")  # issue 11: what trainer.export can write.
# TrainConfig fields that are not flags: task.py derives them from job_dir and the environment.
DERIVED_FIELDS = ("outputs", "tf_config")
# The flags `define_flags` defines belong to its caller (e.g. trainer.task), so that
# `python -m trainer.task --helpshort` lists them, as absl documents for DEFINE helpers.
flags.disclaim_key_flags()


def option(default, help: str, **flag_kwargs) -> dataclasses.Field:  # noqa: A002 - absl's name.
    """A TrainConfig field that is also a command-line flag: its ONE definition.

    `define_flags` makes `--<field name>` from it, with this default and help; `flag_kwargs`
    (e.g. `lower_bound`, or `enum_values` for a str) go to the absl flag definition.
    """
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag_kwargs})


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass `cls` made by `option`, in definition order."""
    return [field for field in dataclasses.fields(cls) if "help" in field.metadata]


class _IntegralParser(flags.IntegerParser):
    """absl's integer parser that also takes integral floats such as "64.0".

    Vertex AI hyperparameter tuning passes the trial's value of an INTEGER parameter as a
    double (https://github.com/googleapis/python-aiplatform/issues/866: integer_value_spec
    returns 200.0), so `--batch_size=64.0` must mean 64; "64.5" is still an error.
    """

    def convert(self, argument: int | str) -> int:
        try:
            return super().convert(argument)
        except ValueError:
            try:
                value = float(argument)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value.is_integer()):
                raise ValueError(f"{argument!r} is not a whole number") from None
            return int(value)


class _EnumParser(flags.EnumParser):
    """absl's enum parser; `aliases` maps the old boolean spellings of a flag that used to be
    a bool (`--cache` is "true", `--nocache` "false") to values, so old flagfiles still work."""

    def __init__(self, enum_values, aliases: Mapping[str, str]):
        super().__init__(list(enum_values))
        self.aliases = dict(aliases)

    def parse(self, argument):
        return super().parse(self.aliases.get(str(argument).lower(), argument))


def define_flags(cls: type, flag_values: flags.FlagValues) -> None:
    """Defines one absl flag per `option` field of dataclass `cls`, typed by its annotation
    (str, int, float or bool, optionally `| None`, or tuple[str, ...] as a list flag)."""
    hints = typing.get_type_hints(cls)
    for field in option_fields(cls):
        kind = _flag_type(cls, field.name, hints[field.name])
        kwargs = dict(field.metadata["flag"])
        name, default, help_text = field.name, field.default, field.metadata["help"]
        if kind is int:
            bounds = {k: kwargs.pop(k) for k in ("lower_bound", "upper_bound") if k in kwargs}
            parser = _IntegralParser(**bounds)
            flags.DEFINE(
                parser, name, default, help_text, flag_values, flags.ArgumentSerializer(), **kwargs
            )
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values, **kwargs)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values, **kwargs)
        elif kind is tuple:  # tuple[str, ...]: a comma-separated list flag.
            flags.DEFINE_list(name, list(default), help_text, flag_values=flag_values, **kwargs)
        elif "enum_values" in kwargs:
            parser = _EnumParser(kwargs.pop("enum_values"), kwargs.pop("boolean_aliases", {}))
            flag = flags.Flag(
                parser, flags.ArgumentSerializer(), name, default, help_text,
                boolean=bool(parser.aliases), **kwargs,
            )  # fmt: skip
            flags.DEFINE_flag(flag, flag_values)
        else:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values, **kwargs)


def _flag_type(cls: type, name: str, annotation) -> type:
    if annotation == tuple[str, ...]:
        return tuple
    types = [t for t in typing.get_args(annotation) if t is not type(None)] or [annotation]
    if len(types) != 1 or types[0] not in (str, int, float, bool):
        raise TypeError(
            f"{cls.__name__}.{name}: a flag must be str, int, float, bool or tuple[str, ...]"
        )
    return types[0]


def config_from_flags(cls: type, flag_values: flags.FlagValues, **derived):
    """An instance of `cls` with every `option` field read from the parsed `flag_values`, and
    the other fields from `derived`."""
    values = {field.name: flag_values[field.name].value for field in option_fields(cls)}
    # List flags give lists; the frozen config keeps tuples (hashable, as their defaults).
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values, **derived)


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
    """Everything `train.train_and_evaluate` needs; each `option` field is also a flag.

    To add an option: add a field here, `name: type = option(default, "help")`, and use it in
    train.py; task.py makes `--name` from it (README, "Extending").
    """

    # --- Where the run reads. (job_dir, where it writes, is task.py's: not a training input.)
    data_dir: str | None = option(
        None,
        "TFDS data_dir holding the built dataset (default: $TFDS_DATA_DIR or "
        "~/tensorflow_datasets).",
    )
    dataset: str = option(input_pipeline.DEFAULT_DATASET, "TFDS name/config of the dataset.")
    train_split: str = option("train", "TFDS split to train on.")
    validation_split: str = option("validation", "Split for validation.")
    test_split: str = option("test", "Split for the final test metrics.")
    # --- What it trains.
    backbone: str = option(
        backbones.DEFAULT_HANDLE,
        "Feature-vector backbone: TF Hub or Kaggle Models handle, gs:// or local SavedModel "
        "folder, or keras:FAMILY_VARIANT[:untrained], a tf_keras application that runs "
        f"entirely in mixed precision ({backbones.describe_keras_handles()}).",
    )
    image_size: int = option(224, "Input height and width in pixels.")
    dropout: float = option(0.2, "Dropout rate before the classifier.")
    # --- How long and how.
    batch_size: int = option(64, "Batch size PER REPLICA (GPU).")
    epochs: int = option(10, "Total epochs, both phases included.")
    frozen_epochs: int = option(
        3,
        "First epochs that train the head only, with the backbone frozen; the rest fine-tune "
        "the backbone too.",
    )
    steps_per_epoch: int = option(
        0, "Cap on steps per epoch for smoke runs; 0 = one full pass over the training split."
    )
    learning_rate: float = option(
        0.01,
        "Peak learning rate PER 256 IMAGES, scaled to the global batch B (per-replica batch x "
        "replicas): x B/256 for sgd, x sqrt(B/256) for adamw (schedules.scale_learning_rate).",
    )
    warmup_epochs: float = option(1.0, "Linear warm-up of each phase.")
    optimizer: str = option("adamw", "adamw or sgd (Nesterov momentum 0.9).")
    weight_decay: float | None = option(
        None,
        "Decoupled weight decay, multiplied by the learning rate as tf_keras does; default: "
        "0.05 for adamw, 4e-5 for sgd (see train.DEFAULT_WEIGHT_DECAY); 0 = off.",
    )
    label_smoothing: float = option(0.1, "Label smoothing, in [0, 1).")
    fine_tune_layers: int = option(
        0,
        "Backbone layers to unfreeze in phase 2, counted from the top; 0 = all (needed for "
        "hub SavedModel backbones).",
    )
    fine_tune_lr_factor: float = option(
        0.1, "Phase-2 learning rate as a fraction of --learning_rate."
    )
    fine_tune_batchnorm: bool = option(
        False,
        "Let BatchNorm update its statistics while fine-tuning (default: inference mode, as "
        "small batches hurt).",
    )
    early_stopping_patience: int = option(
        0, "Stop a phase after this many epochs without better val_accuracy; 0 = off."
    )
    # --- Hardware.
    precision: str = option(
        "auto",
        "auto|float32|mixed_float16|mixed_bfloat16; auto = mixed_float16 on GPUs with compute "
        "capability >= 7.0, float32 otherwise.",
    )
    strategy: str = option(
        "auto",
        "auto|default|mirrored|multi_worker; auto = multi_worker if TF_CONFIG/CLUSTER_SPEC "
        "lists several workers, mirrored on several GPUs, else default.",
    )
    seed: int = option(0, "Seed for weights, file order, shuffling, crops.")
    cache: str = option(
        "none",
        "Keep training/evaluation images in memory after the first epoch: none, encoded "
        "(the JPEG bytes) or decoded (uint8 pixels, ~200 KB per 256 px image: later epochs "
        "only crop and resize). --cache and --nocache still mean encoded and none.",
        enum_values=input_pipeline.CACHE_MODES,
        boolean_aliases={"true": "encoded", "false": "none"},
    )
    jit_compile: str = option(
        "auto",
        "Compile the train step with XLA: on, off, or auto = on with one GPU and the "
        "default strategy only (XLA with Mirrored/MultiWorker strategies has known bugs).",
        enum_values=("auto", "on", "off"),
    )
    steps_per_execution: int = option(
        1,
        "Train steps per tf.function call: more cuts the per-step host overhead on fast "
        "GPUs; callbacks then see every this many steps.",
    )
    startup_timeout: int = option(
        distribute.DEFAULT_STARTUP_TIMEOUT,
        "Several workers: seconds to wait at start-up for every worker to join before "
        "failing with an error.",
    )
    worker_heartbeat_timeout: int = option(
        distribute.DEFAULT_HEARTBEAT_TIMEOUT,
        "Several workers: seconds without a heartbeat after which a worker counts as lost and "
        "every worker stops with an error, instead of waiting for it forever.",
    )
    min_gpus: int = option(
        0,
        "Stop at start-up, before any data work, when TensorFlow sees fewer GPUs than this "
        "(infra.submit sets it to the machine's GPU count: a broken CUDA stack would otherwise "
        "train on the CPU).",
        lower_bound=0,
    )
    # --- What the end of the run exports (`python -m trainer.export` can add others later).
    export_formats: tuple[str, ...] = option(
        EXPORT_FORMATS,
        "Formats written at the end of the run: saved_model (serving), tflite (LiteRT "
        "float32/float16/int8 for phones).",
    )
    # --- Not flags: task.py derives them from job_dir and the environment (DERIVED_FIELDS).
    outputs: OutputDirs | None = None
    tf_config: dict | None = None

    def validate(self) -> TrainConfig:
        """Raises ValueError naming every bad value; returns self for chaining."""
        problems = []
        for name in (
            "batch_size",
            "epochs",
            "image_size",
            "worker_heartbeat_timeout",
            "steps_per_execution",
            "startup_timeout",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("frozen_epochs", "steps_per_epoch", "fine_tune_layers", "min_gpus"):
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
        for name in ("weight_decay", "warmup_epochs", "early_stopping_patience"):
            if (getattr(self, name) or 0) < 0:  # weight_decay None: the optimizer's default.
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        choices = {
            "precision": distribute.PRECISIONS,
            "strategy": distribute.STRATEGIES,
            "optimizer": OPTIMIZERS,
            "cache": input_pipeline.CACHE_MODES,
            "jit_compile": ("auto", "on", "off"),
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
