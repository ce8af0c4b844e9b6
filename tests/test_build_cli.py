"""The build entry points, run as users run them (subprocesses), and loading the result.

- `python -m tfds_oregon.build` on bad input: exit code 1, ONE line on stderr, nothing left that
  looks like a built dataset.
- The `tfds build` command's own code path builds the dataset too. (TFDS 4.9.10's `tfds`
  console script imports apache_beam at start-up for its `convert_format` command, so the
  test runs the `build` command's module directly: same parsing, same build.)
- The built dataset loads with `tfds.load` after `import tfds_oregon`, and with
  `tfds.builder_from_directory` in a process that never imports project code.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import tensorflow_datasets as tfds

import tfds_oregon
from tests.fixtures.processes import REPO_ROOT as REPO
from tests.fixtures.processes import run_python
from tfds_oregon import archive, build

# TensorFlow's C++ runtime prints these at import, before any of its log settings apply.
_TF_NATIVE_LOG = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} |To enable the following)"
)


def _run(args: list[str], cwd: pathlib.Path = REPO) -> subprocess.CompletedProcess:
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    return run_python(*args, cwd=cwd, env=env, timeout=180)


def _own_stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line and not _TF_NATIVE_LOG.match(line)]


def _zip(path: pathlib.Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"\xff\xd8 not really a jpeg")


def _no_archive(manual: pathlib.Path) -> None:
    manual.mkdir()
    (manual / "notes.txt").write_text("the zip is still downloading")


def _corrupt_zip(manual: pathlib.Path) -> None:
    manual.mkdir()
    (manual / "oregon-wildlife.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 300)


def _no_class_folders(manual: pathlib.Path) -> None:
    _zip(manual / "oregon-wildlife.zip", ["photo.jpg", "oregon_wildlife/.DS_Store"])


def _unknown_classes(manual: pathlib.Path) -> None:
    root = "oregon_wildlife/oregon_wildlife"
    _zip(manual / "archive.zip", [f"{root}/elk/a.jpg", f"{root}/unicorn/b.jpg"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "make_manual_dir, expected",
    [
        (_no_archive, archive.DOWNLOAD_COMMAND),
        (_corrupt_zip, "not a readable zip"),
        (_no_class_folders, "no class folders"),
        (_unknown_classes, "unknown class folders in oregon_wildlife/oregon_wildlife: unicorn"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_dataset(tmp_path, make_manual_dir, expected):
    make_manual_dir(tmp_path / "manual")
    data_dir = tmp_path / "tfds"
    result = _run(
        ["-m", "tfds_oregon.build", "--manual_dir", str(tmp_path / "manual"),
         "--data_dir", str(data_dir), "--config", "resized_256"]
    )  # fmt: skip
    assert result.returncode == 1
    lines = _own_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not list(data_dir.rglob("dataset_info.json"))
    assert not [p for p in data_dir.rglob("*") if "incomplete" in p.name]


def test_wrapper_prints_the_summary_table(tmp_path, sample_archive, capsys):
    (tmp_path / "manual").mkdir()
    shutil.copy(sample_archive, tmp_path / "manual" / "oregon-wildlife.zip")
    argv = ["--manual_dir", str(tmp_path / "manual"), "--data_dir", str(tmp_path / "tfds")]
    assert build.main([*argv, "--config", "resized_256"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^total\s+120\s+0\s+0\s+0$", out, re.MULTILINE), out
    assert "ignored entries (20): .DS_Store x20" in out
    assert build.main([*argv, "--config", "resized_256", "--overwrite"]) == 0


@pytest.fixture(scope="module")
def tfds_cli_data_dir(tmp_path_factory, sample_archive) -> pathlib.Path:
    base = tmp_path_factory.mktemp("tfds_cli")
    (base / "manual").mkdir()
    shutil.copy(sample_archive, base / "manual" / "archive.zip")
    code = (
        "import sys, simple_parsing\n"
        "from tensorflow_datasets.scripts.cli import build\n"
        "simple_parsing.parse(build.Args, args=sys.argv[1:]).execute()\n"
    )
    result = _run(
        ["-c", code, "oregon_wildlife/resized_256", "--imports", "tfds_oregon",
         "--manual_dir", str(base / "manual"), "--data_dir", str(base / "tfds")]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "tfds"


@pytest.mark.slow
def test_tfds_build_then_load_with_the_package(tfds_cli_data_dir):
    assert "oregon_wildlife" in tfds.list_builders()
    splits = tfds.load("oregon_wildlife/resized_256", data_dir=str(tfds_cli_data_dir))
    sizes = {name: int(ds.cardinality()) for name, ds in splits.items()}
    assert sizes == {"train": 80, "validation": 20, "test": 20}
    example = next(iter(splits["validation"]))
    assert example["image"].shape[-1] == 3
    assert (
        tfds_oregon.CLASS_NAMES[int(example["label"])]
        == example["file_name"].numpy().decode().split("/")[0]
    )


@pytest.mark.slow
def test_load_from_directory_without_project_code(tfds_cli_data_dir, tmp_path):
    code = (
        "import json, sys\n"
        "import tensorflow_datasets as tfds\n"
        "builder = tfds.builder_from_directory(sys.argv[1])\n"
        "ds = builder.as_dataset(split='train', as_supervised=True)\n"
        "image, label = next(iter(ds))\n"
        "print(json.dumps({'n': int(ds.cardinality()), 'channels': int(image.shape[-1]),\n"
        "  'classes': builder.info.features['label'].names,\n"
        "  'imported': sorted(m for m in sys.modules if m.startswith('tfds_oregon'))}))\n"
    )
    # Run from an empty folder without PYTHONPATH: the project is not importable there.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tfds_cli_data_dir / "oregon_wildlife/resized_256/1.0.0")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {
        "n": 80,
        "channels": 3,
        "classes": list(tfds_oregon.CLASS_NAMES),
        "imported": [],
    }


def test_built_dataset_fixture_is_loadable(built_dataset_dir):
    """The shared fixture other tests train on: 20 classes x 10 images, 8/1/1 per class."""
    builder = tfds.builder("oregon_wildlife/resized_256", data_dir=built_dataset_dir)
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sizes == {"train": 160, "validation": 20, "test": 20}
    ds = tfds.load("oregon_wildlife/resized_256", split="test", data_dir=built_dataset_dir)
    labels = sorted(int(ex["label"]) for ex in ds)
    assert labels == list(range(20))
    assert build.stored_summary(builder).totals()["kept"] == 200
