"""The run configuration: every TrainConfig option is a flag with its help and default, read
back into the config, validation names every bad value, and integer flags take the integral
doubles that Vertex AI hyperparameter tuning passes (through the real entry point)."""

from __future__ import annotations

import dataclasses

import pytest
from absl import flags

from tests.fixtures.processes import REPO_ROOT, Finished, run_module
from trainer import config, task
from trainer.config import TrainConfig


def _flag_values(*argv: str) -> flags.FlagValues:
    """A fresh FlagValues with TrainConfig's flags, parsed from `argv`."""
    flag_values = flags.FlagValues()
    config.define_flags(TrainConfig, flag_values)
    flag_values(["prog", *argv])
    return flag_values


def test_every_config_field_is_a_flag_with_help_and_the_same_default():
    fields = dataclasses.fields(TrainConfig)
    options = [field for field in fields if field.name not in config.DERIVED_FIELDS]
    assert [field.name for field in config.option_fields(TrainConfig)] == [
        field.name for field in options
    ]
    # Listed as the entry point's own flags, so `python -m trainer.task --helpshort` shows them.
    key_flags = {flag.name for flag in task.FLAGS.get_key_flags_for_module(task.__name__)}
    assert {field.name for field in options} | {"job_dir"} <= key_flags
    for field in options:
        flag = task.FLAGS[field.name]  # The flags the real entry point parses.
        assert flag.help.strip(), field.name
        # A tuple[str, ...] option is a list flag; the config holds it as a tuple.
        default = tuple(flag.default) if isinstance(flag.default, list) else flag.default
        assert default == field.default, field.name
        assert type(default) is type(field.default), field.name


def test_flags_are_typed_by_the_annotation_and_read_back_into_the_config():
    parsed = _flag_values(
        "--batch_size=32",
        "--learning_rate=0.5",
        "--fine_tune_batchnorm",
        "--backbone=keras:mobilenet_v2_035",
        "--data_dir=/data",
    )
    built = config.config_from_flags(TrainConfig, parsed, outputs=None, tf_config=None)
    assert built == TrainConfig(
        data_dir="/data",
        batch_size=32,
        learning_rate=0.5,
        fine_tune_batchnorm=True,
        backbone="keras:mobilenet_v2_035",
    )
    assert isinstance(built.batch_size, int) and isinstance(built.learning_rate, float)


@pytest.mark.parametrize("flagfile", sorted((REPO_ROOT / "trainer" / "flagfiles").glob("*.cfg")))
def test_every_flagfile_parses_into_a_valid_config(flagfile):
    parsed = _flag_values(f"--flagfile={flagfile}", "--data_dir=d")
    built = config.config_from_flags(TrainConfig, parsed, outputs=None, tf_config=None)
    assert built.validate() is built


def test_a_later_flag_overrides_the_flagfile():
    """absl reads flags in order, so a hyperparameter-tuning trial's `--name=value` after
    `--flagfile` wins over the preset."""
    parsed = _flag_values(
        f"--flagfile={REPO_ROOT}/trainer/flagfiles/gpu_1.cfg", "--batch_size=16.0"
    )
    assert parsed.batch_size == 16 and parsed.epochs == 10 and parsed.cache == "decoded"


@pytest.mark.parametrize("value, parsed", [("64", 64), ("64.0", 64), ("6.4e1", 64), ("0x40", 64)])
def test_integer_flags_take_integral_numbers(value, parsed):
    assert _flag_values(f"--batch_size={value}").batch_size == parsed


@pytest.mark.parametrize("value", ["64.5", "abc", "inf", "nan", ""])
def test_integer_flags_reject_other_values(value):
    with pytest.raises(flags.IllegalFlagValueError, match="is not a whole number"):
        _flag_values(f"--batch_size={value}")


def test_validation_names_every_bad_value():
    bad = TrainConfig(
        data_dir="d",
        batch_size=0,
        epochs=2,
        frozen_epochs=3,
        steps_per_epoch=-1,
        learning_rate=0.0,
        dropout=1.0,
        label_smoothing=-0.1,
        weight_decay=-1e-4,
        warmup_epochs=-1.0,
        early_stopping_patience=-2,
        optimizer="lamb",
        precision="fp8",
        strategy="tpu",
    )
    with pytest.raises(ValueError) as error:
        bad.validate()
    message = str(error.value)
    assert "\n" not in message
    for fragment in (
        "batch_size=0",
        "steps_per_epoch=-1",
        "frozen_epochs=3 exceeds epochs=2",
        "learning_rate=0.0",
        "dropout=1.0",
        "label_smoothing=-0.1",
        "weight_decay=-0.0001",
        "warmup_epochs=-1.0",
        "early_stopping_patience=-2",
        "optimizer='lamb'",
        "precision='fp8'",
        "strategy='tpu'",
    ):
        assert fragment in message
    TrainConfig(data_dir="d").validate()  # The defaults are valid.


def test_entry_point_takes_integral_doubles_and_rejects_fractions(tmp_path):
    """Vertex AI passes an INTEGER hyperparameter's trial value as a double, "64.0"
    (https://github.com/googleapis/python-aiplatform/issues/866)."""
    # An integral double becomes the integer: --epochs=0.0 fails validation as epochs=0 (an
    # int), and --batch_size=64.0 passes it, so validation stops the run before any work.
    run = run_module(
        "trainer.task", f"--job_dir={tmp_path / 'job'}", "--batch_size=64.0", "--epochs=0.0"
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr[-2000:]
    assert lines[-1].startswith("error: Invalid configuration: epochs=0 must be >= 1")
    assert "batch_size" not in lines[-1]
    # A fractional one is a one-line flag error, before the configuration is even built.
    run = run_module("trainer.task", f"--job_dir={tmp_path / 'job'}", "--batch_size=64.5")
    assert run.returncode == 2, run.stderr[-2000:]
    # Everything it prints but TensorFlow's start-up lines (the console's business, not ours).
    assert Finished(run.returncode, run.stderr).lines == [
        "error: flag --batch_size=64.5: '64.5' is not a whole number (--helpshort lists the flags)"
    ]
    assert not (tmp_path / "job").exists()
