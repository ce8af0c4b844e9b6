"""The build entry points, run as users run them (subprocesses), and loading the result.

- `python -m tfds_oregon.build` on bad input: exit code 2, ONE line on stderr, nothing left that
  looks like a built dataset (trainer/cli.py's convention).
- The stock `tfds build` command builds the dataset too, where its start-up dependencies are
  installed (TFDS 4.9.10 imports apache_beam and mlcroissant for every CLI command,
  tensorflow/datasets#5463; `pip install -e '.[test]'` installs them).
- The built dataset loads with `tfds.load` after `import tfds_oregon`, and with
  `tfds.builder_from_directory` in a process that never imports project code.
"""

from __future__ import annotations

import importlib.util
import io
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
from PIL import Image

import tfds_oregon
from tests.fixtures.processes import REPO_ROOT as REPO
from tests.fixtures.processes import run_python
from tfds_oregon import archive, build

VERSION = str(tfds_oregon.Builder.VERSION)
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


def _all_unreadable(manual: pathlib.Path) -> None:
    root = "oregon_wildlife/oregon_wildlife"
    _zip(manual / "oregon-wildlife.zip", [f"{root}/elk/a.jpg", f"{root}/raven/b.png"])


def _too_few_photos(manual: pathlib.Path) -> None:
    """Two distinct photos: at least one of the three splits is empty, whatever their hash."""
    manual.mkdir(parents=True)
    with zipfile.ZipFile(manual / "oregon-wildlife.zip", "w") as zf:
        for name in ("elk.jpg", "red_fox.jpg"):
            data = REPO / "tests" / "data" / "real" / {"elk.jpg": "cougar.jpg"}.get(name, name)
            zf.writestr(f"oregon_wildlife/{name[:-4]}/{name}", data.read_bytes())


def _missing_manual_dir(manual: pathlib.Path) -> None:
    pass


@pytest.mark.slow
@pytest.mark.parametrize(
    "make_manual_dir, expected",
    [
        (_no_archive, archive.DOWNLOAD_COMMAND),
        (_missing_manual_dir, "does not exist"),
        (_corrupt_zip, "not a readable zip"),
        (_no_class_folders, "no class folders"),
        (_unknown_classes, "unknown class folders in oregon_wildlife/oregon_wildlife: unicorn"),
        (_all_unreadable, "no readable image in"),
        (_too_few_photos, "split of"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_dataset(tmp_path, make_manual_dir, expected):
    make_manual_dir(tmp_path / "manual")
    data_dir = tmp_path / "tfds"
    result = _run(
        ["-m", "tfds_oregon.build", "--manual_dir", str(tmp_path / "manual"),
         "--data_dir", str(data_dir), "--config", "resized_256"]
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = _own_stderr_lines(result.stderr)
    error_lines = [line for line in lines if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    assert expected in error_lines[0]
    assert "Traceback" not in result.stderr
    assert not list(data_dir.rglob("dataset_info.json"))
    assert not [p for p in data_dir.rglob("*") if "incomplete" in p.name]


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_data_dir_that_cannot_be_written_is_one_line(tmp_path, sample_archive, kind):
    (tmp_path / "manual").mkdir()
    shutil.copy(sample_archive, tmp_path / "manual" / "oregon-wildlife.zip")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    data_dir = blocker if kind == "a file" else blocker / "tfds"
    result = _run(
        ["-m", "tfds_oregon.build", "--manual_dir", str(tmp_path / "manual"),
         "--data_dir", str(data_dir)]
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = [line for line in _own_stderr_lines(result.stderr) if line.startswith("error:")]
    assert "data_dir" in line and str(data_dir) in line
    assert "Traceback" not in result.stderr


def test_wrapper_prints_the_summary_table_and_progress(tmp_path, sample_archive):
    (tmp_path / "manual").mkdir()
    shutil.copy(sample_archive, tmp_path / "manual" / "oregon-wildlife.zip")
    argv = ["-m", "tfds_oregon.build", "--manual_dir", str(tmp_path / "manual"),
            "--data_dir", str(tmp_path / "tfds"), "--config", "resized_256"]  # fmt: skip
    result = _run(argv)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"^total\s+120\s+0\s+0\s+0\s+0\s", out, re.MULTILINE), out
    assert "ignored entries (20): .DS_Store x20" in out
    assert re.search(r"^report: .*class_counts\.png, .*near_duplicates\.png$", out, re.M)
    assert "converting images: 120/120 images in " in out
    assert not [line for line in _own_stderr_lines(result.stderr) if " INFO " in line]
    assert _run([*argv, "--overwrite"]).returncode == 0


def _tfds_cli_importable() -> bool:
    return all(importlib.util.find_spec(m) for m in ("apache_beam", "mlcroissant"))


@pytest.fixture(scope="module")
def tfds_cli_data_dir(tmp_path_factory, sample_archive) -> pathlib.Path:
    """A data_dir built by the stock `tfds build` command, exactly as TFDS documents it."""
    if not _tfds_cli_importable():
        pytest.skip(
            "the stock `tfds` command needs apache_beam and mlcroissant at start-up "
            "(tensorflow/datasets#5463): pip install -e '.[test]' installs them"
        )
    base = tmp_path_factory.mktemp("tfds_cli")
    (base / "manual").mkdir()
    shutil.copy(sample_archive, base / "manual" / "archive.zip")
    tfds_command = pathlib.Path(sys.executable).parent / "tfds"
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [str(tfds_command), "build", "oregon_wildlife/resized_256", "--imports", "tfds_oregon",
         "--manual_dir", str(base / "manual"), "--data_dir", str(base / "tfds")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "tfds"


@pytest.mark.slow
def test_tfds_build_then_load_with_the_package(tfds_cli_data_dir):
    assert "oregon_wildlife" in tfds.list_builders()
    splits = tfds.load("oregon_wildlife/resized_256", data_dir=str(tfds_cli_data_dir))
    sizes = {name: int(ds.cardinality()) for name, ds in splits.items()}
    assert sum(sizes.values()) == 120 and min(sizes.values()) > 0
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
        [sys.executable, "-c", code, str(tfds_cli_data_dir / "oregon_wildlife/resized_256" /
                                         VERSION)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    train = tfds.builder("oregon_wildlife/resized_256", data_dir=str(tfds_cli_data_dir))
    assert loaded == {
        "n": train.info.splits["train"].num_examples,
        "channels": 3,
        "classes": list(tfds_oregon.CLASS_NAMES),
        "imported": [],
    }


def test_built_dataset_fixture_is_loadable(built_dataset_dir):
    """The shared fixture other tests train on: 20 classes x 10 images, split by content."""
    builder = tfds.builder("oregon_wildlife/resized_256", data_dir=built_dataset_dir)
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sum(sizes.values()) == 200 and min(sizes.values()) >= 10
    ds = tfds.load("oregon_wildlife/resized_256", split="train", data_dir=built_dataset_dir)
    labels = {int(ex["label"]) for ex in ds}
    assert labels == set(range(20))
    assert build.stored_summary(builder).totals()["kept"] == 200


def test_report_pictures_show_the_build(built_dataset_dir):
    builder = tfds.builder("oregon_wildlife/resized_256", data_dir=built_dataset_dir)
    for name in ("class_counts.png", "near_duplicates.png"):
        with Image.open(io.BytesIO((builder.data_path / name).read_bytes())) as img:
            assert img.format == "PNG" and min(img.size) > 100
