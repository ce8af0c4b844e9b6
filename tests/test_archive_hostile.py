"""End to end through TFDS: a hostile archive built in the test gives exact counts and clean data.

The archive holds every file of tests/data/hostile (in bald_eagle), generated photos in five
more classes, duplicates planted inside a class and across classes (same bytes, and same
pixels in other bytes), and stray entries. It is built twice: in the nested layout with the
`full` config, and in the flat layout with its zip entries shuffled with `resized_256`.
"""

from __future__ import annotations

import io
import pathlib
import random
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tfds_oregon import build, images, sample
from tfds_oregon.classes import CLASS_NAMES

HOSTILE = pathlib.Path(__file__).parent / "data" / "hostile"
UNREADABLE = {
    "broken.png",
    "broken_data_stream.png",
    "truncated_end_chunk.png",
    "truncated_image.png",
    "truncated_jpeg.jpg",
    "bmp_b_shortfile.bmp",
}
_ZERO = {"kept": 0, "unreadable": 0, "duplicate": 0, "cross_class_duplicate": 0}


def _encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def _with_comment(jpeg: bytes) -> bytes:
    """The same JPEG (same pixels) with a COM segment after SOI: other bytes."""
    comment = b"re-saved by a scraper"
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def _photos(label: str, n: int, size: tuple[int, int], seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    index = CLASS_NAMES.index(label)
    return [_encode(sample.synthetic_image(index, size, rng)) for _ in range(n)]


def _archive_files() -> tuple[dict[str, bytes], dict[str, dict[str, int]]]:
    """(class-relative path -> bytes, expected counts per class)."""
    files = {f"bald_eagle/{p.name}": p.read_bytes() for p in sorted(HOSTILE.iterdir())}
    elk = _photos("elk", 6, (48, 32), 1)
    raven = _photos("raven", 4, (1200, 800), 2)  # Large: resized_256 decodes these in draft mode.
    deer = _photos("deer", 3, (48, 32), 3)
    seals = _photos("seals", 3, (48, 32), 4)
    extra = sample.synthetic_image(CLASS_NAMES.index("raven"), (48, 32), np.random.default_rng(5))
    files |= {f"elk/e{i:02d}.jpg": data for i, data in enumerate(elk)}
    files |= {f"raven/r{i:02d}.jpg": data for i, data in enumerate(raven)}
    files |= {f"deer/d{i:02d}.jpg": data for i, data in enumerate(deer)}
    files |= {f"seals/s{i:02d}.jpg": data for i, data in enumerate(seals)}
    files |= {
        "elk/z_copy_of_e00.jpg": elk[0],  # Same bytes, same class.
        "elk/z_comment_e01.jpg": _with_comment(elk[1]),  # Same pixels, other bytes.
        "raven/z_comment_r00.jpg": _with_comment(raven[0]),  # Same, decoded in draft mode.
        "raven/z_extra.png": _encode(extra, "PNG"),  # A new photo, kept...
        "raven/z_extra.bmp": _encode(extra, "BMP"),  # ...and its copy in other bytes.
        "columbian_black-tailed_deer/c00.jpg": deer[0],  # Under two classes: both dropped.
        "seals/z_copy_of_s00.jpg": seals[0],
        "sea_lions/l00.jpg": _with_comment(seals[0]),  # Three copies, two classes: all dropped.
    }
    counts = {name: dict(_ZERO) for name in CLASS_NAMES}
    counts["bald_eagle"] |= {"kept": len(list(HOSTILE.iterdir())) - 6, "unreadable": 6}
    counts["elk"] |= {"kept": 6, "duplicate": 2}
    counts["raven"] |= {"kept": 5, "duplicate": 2}
    counts["deer"] |= {"kept": 2, "cross_class_duplicate": 1}
    counts["columbian_black-tailed_deer"] |= {"cross_class_duplicate": 1}
    counts["seals"] |= {"kept": 2, "cross_class_duplicate": 2}
    counts["sea_lions"] |= {"cross_class_duplicate": 1}
    return files, counts


STRAYS = {".DS_Store", "raven/notes.txt", "elk/.DS_Store", "oregon_wildlife.h5"}


def _write_zip(path: pathlib.Path, root: str, files: dict[str, bytes], seed: int | None) -> None:
    names = [f"{root}/{name}" for name in files] + [f"{root}/{s}" for s in sorted(STRAYS)]
    names.append("__MACOSX/oregon_wildlife/._elk")
    if seed is not None:
        random.Random(seed).shuffle(names)
    contents = {f"{root}/{name}": data for name, data in files.items()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.writestr(name, contents.get(name, b"\x00stray\x00"))


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, tfds.core.DatasetBuilder]:
    files, _ = _archive_files()
    built = {}
    for config, root, seed in [
        ("full", "oregon_wildlife/oregon_wildlife", None),
        ("resized_256", "oregon_wildlife", 7),
    ]:
        base = tmp_path_factory.mktemp(config)
        (base / "manual").mkdir()
        _write_zip(base / "manual" / "oregon-wildlife.zip", root, files, seed)
        built[config] = build.build_dataset(str(base / "manual"), str(base / "tfds"), config)
    return built


def _stored_images(builder) -> dict[str, dict[str, bytes]]:
    """split -> file_name -> stored JPEG bytes (undecoded)."""
    out = {}
    for split in ("train", "validation", "test"):
        ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        out[split] = {ex["file_name"].decode(): ex["image"] for ex in tfds.as_numpy(ds)}
    return out


@pytest.mark.parametrize("config", ["full", "resized_256"])
def test_counts_are_exact(builds, config):
    _, expected = _archive_files()
    summary = build.stored_summary(builds[config])
    assert summary.counts == expected
    assert set(summary.unreadable) == {f"bald_eagle/{name}" for name in UNREADABLE}
    assert summary.duplicates["elk/z_comment_e01.jpg"] == "elk/e01.jpg"
    assert sorted(summary.cross_class) == [
        ["columbian_black-tailed_deer/c00.jpg", "deer/d00.jpg"],
        ["sea_lions/l00.jpg", "seals/s00.jpg", "seals/z_copy_of_s00.jpg"],
    ]
    root = "oregon_wildlife/oregon_wildlife" if config == "full" else "oregon_wildlife"
    assert set(summary.ignored) == {f"{root}/{s}" for s in STRAYS} | {
        "__MACOSX/oregon_wildlife/._elk"
    }
    stored = _stored_images(builds[config])
    assert sum(map(len, stored.values())) == sum(c["kept"] for c in expected.values())


@pytest.mark.parametrize("config", ["full", "resized_256"])
def test_every_stored_image_is_a_3_channel_jpeg(builds, config):
    for split in _stored_images(builds[config]).values():
        for name, jpeg in split.items():
            image = tf.io.decode_jpeg(jpeg, channels=0)  # What the JPEG itself holds.
            assert image.shape[-1] == 3, name
            if config == "resized_256":
                assert min(image.shape[:2]) <= 256, name


@pytest.mark.parametrize("name", ["hopper_orientation_6.jpg", "hopper_orientation_8.jpg"])
def test_exif_rotated_photos_come_out_upright(builds, name):
    stored = {k: v for split in _stored_images(builds["full"]).values() for k, v in split.items()}
    pixels = tf.io.decode_jpeg(stored[f"bald_eagle/{name}"]).numpy().astype(np.float32)
    upright = np.asarray(Image.open(HOSTILE / "hopper.bmp").convert("RGB"), np.float32)
    assert np.abs(pixels - upright).mean() < 8


def test_split_ignores_layout_entry_order_and_config(builds):
    names = {
        config: {split: set(files) for split, files in _stored_images(builder).items()}
        for config, builder in builds.items()
    }
    assert names["full"] == names["resized_256"]


@pytest.mark.parametrize("config", ["full", "resized_256"])
def test_no_photo_in_two_splits(builds, config):
    seen: dict[str, str] = {}
    for split, files in _stored_images(builds[config]).items():
        for name, jpeg in files.items():
            pixel_hash = images.convert(jpeg).pixel_hash
            assert seen.setdefault(pixel_hash, split) == split, name
