"""`python -m trainer.predict` as a user runs it: real photos, bad files, a 100-megapixel JPEG."""

import os
import pathlib
import re
import struct
import subprocess
import sys
import zlib

import pytest
import tensorflow as tf
from PIL import Image

from tests.fixtures.processes import REPO_ROOT as REPO
from tests.fixtures.tiny_classifier import CLASS_NAMES, create_tiny_classifier
from trainer import export

REAL = sorted((REPO / "tests" / "data" / "real").glob("*.jpg"))
CLASS_LINE = re.compile(r"^  +(\d+)\. (\S+) +(\d+\.\d\d)%$")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("predict") / "export")
    return export.export_serving_model(create_tiny_classifier(32), CLASS_NAMES, path, image_size=32)


def run_predict(*args):
    """Runs the CLI; returns (exit code, stdout, our stderr lines, peak RSS in MiB)."""
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainer.predict", *map(str, args)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=devnull,
        )
        stdout, stderr = process.communicate(timeout=120)
    # TensorFlow logs to stderr too; the tool's own lines start with "error:" or "Classified".
    ours = [
        line for line in stderr.decode().splitlines() if line.startswith(("error:", "Classified"))
    ]
    return process.returncode, stdout.decode(), ours


# Peak RSS of a child includes its parent's RSS at fork time, and pytest is big (TensorFlow, the
# test image), so a small launcher process runs the tool and reports its children's peak.
_LAUNCHER = (
    "import resource, subprocess, sys; "
    "code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def run_predict_measuring_rss(*args):
    """As run_predict, but returns (exit code, stdout, the tool's peak resident memory in MiB)."""
    command = [sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "trainer.predict"]
    result = subprocess.run(
        [*command, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    peak_kib = int(result.stderr.splitlines()[-1])
    return result.returncode, result.stdout, peak_kib / 1024


def parse_table(stdout):
    """{file: [(class, percent)]} from the printed table, checking its layout on the way."""
    table = {}
    for line in stdout.splitlines():
        match = CLASS_LINE.match(line)
        if match is None:
            current = table.setdefault(line, [])
            continue
        assert int(match[1]) == len(current) + 1
        current.append((match[2], float(match[3])))
    return table


@pytest.fixture(scope="module")
def real_run(model_dir):
    return run_predict_measuring_rss("--model_dir", model_dir, "--top_k", "3", *REAL)


def test_real_photos_print_top_k_like_the_endpoint(real_run, model_dir):
    code, stdout, _ = real_run
    assert code == 0
    table = parse_table(stdout)
    assert list(table) == [str(p) for p in REAL]
    assert len(stdout.splitlines()) == len(REAL) * 4  # a file line, then 3 class lines
    serving = tf.saved_model.load(model_dir).signatures["serving_default"]
    for path, rows in table.items():
        expected = serving(image_bytes=tf.constant([pathlib.Path(path).read_bytes()]))
        names = [n.decode() for n in expected["classes"][0, :3].numpy()]
        percents = [round(100 * p, 2) for p in expected["probabilities"][0, :3].numpy()]
        assert rows == list(zip(names, percents, strict=True))
    assert len({rows[0][0] for rows in table.values()}) > 1  # the photos are told apart


@pytest.fixture(scope="module")
def tflite_path(tmp_path_factory):
    """The same tiny model as `model_dir`, as model_float32.tflite with labels.txt beside it."""
    from trainer import tflite_export

    folder = str(tmp_path_factory.mktemp("predict_tflite") / "tflite")
    paths = tflite_export.write_models(
        create_tiny_classifier(32), CLASS_NAMES, 32, folder, formats=("float32",)
    )
    return paths["float32"]


def test_tflite_model_prints_what_the_saved_model_prints(real_run, tflite_path):
    code, stdout, _ = run_predict("--model_dir", tflite_path, "--top_k", "3", *REAL)
    assert code == 0
    assert parse_table(stdout) == parse_table(real_run[1])


def test_predict_agrees_with_evaluation_on_rotated_and_transparent_files(
    model_dir, tflite_path, tmp_path
):
    """Files sent as they are: the model turns them upright and composites transparency like
    the builder, so predict prints evaluation's result on the dataset's copy of each file."""
    from tests import test_serving_parity as parity
    from trainer import input_pipeline

    variants = {**parity.rotated_variants(), **parity.transparent_variants()}
    names = ["orientation_6_MM.jpg", "orientation_8_II.jpg", *parity.transparent_variants()]
    for name in names:
        (tmp_path / name).write_bytes(variants[name])
    paths = [tmp_path / name for name in names]
    model = create_tiny_classifier(32)
    expected = {}
    for path in paths:
        stored = parity.stored_copy(path.read_bytes())
        image = input_pipeline.preprocess_for_eval(tf.constant(stored), 32)
        probabilities = model(image[None], training=False).numpy()[0]
        top = probabilities.argsort(kind="stable")[::-1][:3]
        expected[str(path)] = [
            (CLASS_NAMES[i], round(100 * float(probabilities[i]), 2)) for i in top
        ]
    for model_path in (model_dir, tflite_path):
        code, stdout, _ = run_predict("--model_dir", model_path, "--top_k", "3", *paths)
        assert code == 0
        assert parse_table(stdout) == expected, model_path


def _header_only_png(width, height):
    """A PNG that claims width x height but holds one row: enough for the size check."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\0" * (1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def test_bad_files_get_one_line_each_and_exit_2(model_dir, tmp_path):
    bad = {
        "notes.jpg": b"these are not pixels\n",
        "empty.png": b"",
        "huge.png": _header_only_png(20000, 10000),
        "truncated.jpg": REAL[0].read_bytes()[:20000],
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    files = [tmp_path / name for name in bad] + [tmp_path / "missing.jpg", REAL[0]]
    code, stdout, ours = run_predict("--model_dir", model_dir, *files)
    assert code == 2  # bad input (README, "Exit codes"), after classifying the good file
    assert list(parse_table(stdout)) == [str(REAL[0])]  # the good file is still classified
    errors = [line for line in ours if line.startswith("error:")]
    expected = [
        f"error: {tmp_path}/notes.jpg: unusable image (not an image Pillow can identify)",
        f"error: {tmp_path}/empty.png: empty file: not an image",
        # The builder's own limit (tfds_oregon.images.MAX_PIXELS), checked on the header.
        f"error: {tmp_path}/huge.png: unusable image (too many pixels: 20000x10000 > 89478485)",
        f"error: {tmp_path}/truncated.jpg: cannot decode the image (OSError: image file is "
        "truncated",
        f"error: {tmp_path}/missing.jpg: no such file",
    ]
    assert len(errors) == len(expected)
    for error, start in zip(errors, expected, strict=True):
        assert error.startswith(start)
    assert ours[-1] == "Classified 1 of 6 images" + ours[-1].removeprefix(
        "Classified 1 of 6 images"
    )


def test_missing_model_dir_is_one_line(tmp_path):
    code, stdout, ours = run_predict("--model_dir", tmp_path / "nope", REAL[0])
    assert (code, stdout) == (2, "")
    assert ours == [
        f"error: --model_dir {tmp_path}/nope holds no saved_model.pb: pass the folder written by "
        "the trainer's serving export (<job_dir>/model) or a .tflite file"
    ]


def test_100_megapixel_jpeg_uses_bounded_memory(model_dir, real_run, tmp_path):
    path = tmp_path / "huge.jpg"
    # Flat colour compresses to ~2 MB; decoding it in full would take 324 MB as uint8 RGB.
    Image.new("RGB", (12000, 9000), (120, 90, 60)).save(path, quality=80)
    code, stdout, peak_mib = run_predict_measuring_rss("--model_dir", model_dir, path)
    assert code == 0
    assert len(parse_table(stdout)[str(path)]) == 5
    baseline_mib = real_run[2]  # the same tool on six ordinary photos
    print(f"peak RSS: {peak_mib:.0f} MiB for 100 MP, {baseline_mib:.0f} MiB for the photos")
    assert peak_mib < baseline_mib + 150, (peak_mib, baseline_mib)


_EXPORT_SCRIPT = (
    "import sys; "
    "from tests.fixtures.tiny_classifier import CLASS_NAMES, create_tiny_classifier; "
    "from trainer import export; "
    "export.export_serving_model(create_tiny_classifier(32), CLASS_NAMES, sys.argv[1], "
    "image_size=32)"
)


@pytest.mark.slow
def test_export_and_predict_on_gcs(gcs_emulator):
    """Export to gs://, then classify a gs:// photo with the gs:// model, as on Vertex AI."""
    root = f"gs://{gcs_emulator.bucket}/predict-test"
    env = gcs_emulator.subprocess_env()
    exported = subprocess.run(
        [sys.executable, "-c", _EXPORT_SCRIPT, f"{root}/export"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    objects = gcs_emulator.list(root)
    assert f"{root}/export/saved_model.pb" in objects
    assert f"{root}/export/assets/labels.txt" in objects
    assert not [name for name in objects if ".tmp-" in name]
    gcs_emulator.upload(f"{root}/photos/cougar.jpg", REAL[1])
    result = subprocess.run(
        [sys.executable, "-m", "trainer.predict", "--model_dir", f"{root}/export"]
        + [f"{root}/photos/cougar.jpg"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = parse_table(result.stdout)[f"{root}/photos/cougar.jpg"]
    assert len(rows) == 5 and all(name in CLASS_NAMES for name, _ in rows)
