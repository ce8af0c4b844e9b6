"""tfds_oregon.sample: the synthetic archive has the Kaggle layout and learnable classes."""

from __future__ import annotations

import colorsys
import io
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests import test_build_cli
from tfds_oregon import CLASS_NAMES, images, sample, splits

REPO = pathlib.Path(__file__).resolve().parents[1]

_NAME = re.compile(r"^[0-9a-f]{18}\.jpg$")


@pytest.mark.parametrize(
    "layout, root", [("nested", "oregon_wildlife/oregon_wildlife/"), ("flat", "oregon_wildlife/")]
)
def test_archive_has_the_kaggle_layout(tmp_path, layout, root):
    path = sample.write_sample_archive(tmp_path / "a.zip", 3, layout=layout, image_size=(40, 30))
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        first = zf.read(next(n for n in names if n.endswith(".jpg")))
    assert all(name.startswith(root) for name in names)
    relative = [name[len(root) :].split("/") for name in names]
    assert {folder for folder, _ in relative} == set(CLASS_NAMES)
    for name in CLASS_NAMES:
        files = sorted(f for folder, f in relative if folder == name)
        assert files[0] == ".DS_Store" and len(files) == 4
        assert all(_NAME.match(f) for f in files[1:])
    with Image.open(io.BytesIO(first)) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (40, 30))
    assert not list(tmp_path.glob("*.incomplete"))


def test_same_seed_same_images(tmp_path):
    contents = []
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        path = sample.write_sample_archive(
            tmp_path / f"{name}.zip", 1, image_size=(16, 12), seed=seed
        )
        with zipfile.ZipFile(path) as zf:
            contents.append({n: zf.read(n) for n in zf.namelist()})
    assert contents[0] == contents[1] != contents[2]


def test_classes_differ_in_hue_more_than_images_within_a_class():
    """Nearest class-mean hue classifies unseen images perfectly: a CNN has an easy job."""

    def mean_hue(img: Image.Image) -> float:
        r, g, b = np.asarray(img, np.float32).reshape(-1, 3).mean(0) / 255
        return colorsys.rgb_to_hsv(r, g, b)[0]

    rng = np.random.default_rng(0)
    hues = np.array(
        [[mean_hue(sample.synthetic_image(c, (32, 24), rng)) for _ in range(6)] for c in range(20)]
    )
    centres = np.angle(np.exp(2j * np.pi * hues[:, :3]).mean(1)) / (2 * np.pi) % 1  # Circular.
    distance = np.abs(hues[:, 3:, None] - centres[None, None, :])
    predicted = np.minimum(distance, 1 - distance).argmin(-1)
    assert (predicted == np.arange(20)[:, None]).all()


def test_realistic_size_gives_photo_weight_jpegs():
    img = sample.synthetic_image(5, (2400, 1600), np.random.default_rng(0))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    assert 150_000 < len(buffer.getvalue()) < 600_000


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "tfds_oregon.sample", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_writes_the_archive(tmp_path):
    out = tmp_path / "manual" / "oregon-wildlife.zip"
    result = _run_cli("--out", str(out), "--per_class", "1", "--size", "24x16", "--layout", "flat")
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC" in result.stdout
    with zipfile.ZipFile(out) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".jpg")]) == 20


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--size", "big"], "--size must be WIDTHxHEIGHT"),
        (["--size", "4x4"], "sides >= 8 px"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_exit_2(tmp_path, args, expected):
    out = tmp_path / "x.zip"
    result = _run_cli("--out", str(out), "--per_class", "1", *args)
    assert result.returncode == 2
    # Importing the package registers the TFDS builder, so TensorFlow loads and its C++
    # runtime prints a few lines before any log setting applies (as in test_build_cli).
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not test_build_cli._TF_NATIVE_LOG.match(line)
    ]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not out.exists()


def test_no_two_sample_images_are_near_duplicates():
    """The builder drops near-duplicates: the sample archive must not contain any."""
    rng = np.random.default_rng(0)
    hashes = [
        images.perceptual_hash(sample.synthetic_image(label, (64, 48), rng))
        for label in range(20)
        for _ in range(10)
    ]
    groups = splits.group_near_duplicates(hashes, splits.NEAR_DUPLICATE_BITS)
    assert len(groups) == len(hashes)
