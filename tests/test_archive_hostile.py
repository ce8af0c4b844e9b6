"""End to end through TFDS: a hostile archive built in the test, both configs, exact outcomes.

The archive holds every file of tests/data/hostile (in bald_eagle), near-duplicate variants of
real photos (tests/data/real) planted inside a class and across classes, odd zip members that
used to stop a build (70000x2 PNG, 100 MP header, Deflate64, encrypted, bad CRC), member names
with backslashes, generated photos so that every split has examples, and stray entries. It is
built three times: nested layout in zip order with `full`; flat layout, shuffled, with
`resized_256`; and that again into another data_dir.
"""

from __future__ import annotations

import io
import pathlib
import random
import re
import struct
import zipfile
import zlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from benchmarks import near_duplicates
from tests import test_archive
from tfds_oregon import build, sample
from tfds_oregon.classes import CLASS_NAMES

HOSTILE = pathlib.Path(__file__).parent / "data" / "hostile"
REAL = pathlib.Path(__file__).parent / "data" / "real"
UNREADABLE = {
    "bald_eagle/broken.png": "not an image Pillow can identify",
    "bald_eagle/broken_data_stream.png": "OSError",
    "bald_eagle/truncated_end_chunk.png": "OSError",
    "bald_eagle/truncated_image.png": "OSError",
    "bald_eagle/truncated_jpeg.jpg": "OSError",
    "bald_eagle/bmp_b_shortfile.bmp": "OSError",
    "elk/wide_70000x2.png": "extreme aspect ratio: 70000x2",
    "elk/bomb_10000x10000.png": "too many pixels: 10000x10000",
    "elk/deflate64.jpg": "unsupported zip compression method 9",
    "elk/encrypted.jpg": "encrypted archive member",
    "elk/bad_crc.jpg": "damaged archive member: bad CRC-32",
}
# The same photo, upright after EXIF orientation: one group, one kept.
HOPPER = {"hopper.bmp", "hopper.gif", "hopper_16bit_qtables.jpg", "hopper_gray.jpg",
          "hopper_orientation_6.jpg", "hopper_orientation_8.jpg"}  # fmt: skip
# Raccoon variants: the lossless PNG copy of the original's pixels is an exact duplicate.
RACCOON = {
    "raccoon/r_original.jpg": "kept",
    "raccoon/r_lossless_copy.png": "duplicate",
    "raccoon/r_quality_50.jpg": "near_duplicate",
    "raccoon/r_resized_90.jpg": "near_duplicate",
    "raccoon/r_grayscale.jpg": "near_duplicate",
    "raccoon/r_crop_2.jpg": "near_duplicate",
}
CONFLICTS = [
    (["bobcat", "cougar"], ["bobcat/c_copy.png", "cougar/c_original.jpg"]),
    (["gray_fox", "red_fox"], ["gray_fox/f_quality_75.jpg", "red_fox/f_original.jpg"]),
]
STRAYS = {".DS_Store", "raven/notes.txt", "elk/.DS_Store", "oregon_wildlife.h5"}
_GENERATED = {"elk": 14, "raven": 14, "deer": 10}


def _encode(img: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _real(name: str, width: int) -> Image.Image:
    with Image.open(REAL / name) as img:
        img = img.convert("RGB")
    return img.resize((width, round(img.height * width / img.width)), Image.Resampling.BICUBIC)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _archive_files() -> dict[str, bytes]:
    """class-relative path -> bytes."""
    files = {f"bald_eagle/{p.name}": p.read_bytes() for p in sorted(HOSTILE.iterdir())}
    # Shorter side >= 512: resized_256 decodes it at 1/2 scale, full at full scale.
    raccoon = _real("raccoon.jpg", 900)
    original = _encode(raccoon, quality=90)
    with Image.open(io.BytesIO(original)) as decoded:
        decoded_pixels = decoded.convert("RGB")
    variants = near_duplicates.VARIANTS
    smaller = _real("raccoon.jpg", 880)  # So that the original and its PNG copy are largest.
    files |= {
        "raccoon/r_original.jpg": original,
        "raccoon/r_lossless_copy.png": _encode(decoded_pixels, "PNG"),
        "raccoon/r_quality_50.jpg": _encode(smaller, quality=50),
        "raccoon/r_resized_90.jpg": _encode(variants["resized to 90 %"](raccoon), quality=90),
        "raccoon/r_grayscale.jpg": _encode(variants["grayscale copy"](smaller), quality=90),
        "raccoon/r_crop_2.jpg": _encode(variants["crop 2 % each side"](raccoon), quality=90),
    }
    cougar, fox = _real("cougar.jpg", 480), _real("red_fox.jpg", 400)
    files |= {
        "cougar/c_original.jpg": _encode(cougar, quality=90),
        "bobcat/c_copy.png": _encode(cougar, "PNG"),
        "red_fox/f_original.jpg": _encode(fox, quality=95),
        "gray_fox/f_quality_75.jpg": _encode(fox, quality=75),
    }
    for label, n in _GENERATED.items():
        rng = np.random.default_rng(CLASS_NAMES.index(label))
        for i in range(n):
            image = sample.synthetic_image(CLASS_NAMES.index(label), (64, 48), rng)
            files[f"{label}/g{i:02d}.jpg"] = _encode(image, quality=90)
    files |= {
        "elk/wide_70000x2.png": _encode(Image.new("L", (70_000, 2), 90), "PNG"),
        "elk/bomb_10000x10000.png": _png_header_only(10_000, 10_000),
        "elk/deflate64.jpg": files["elk/g00.jpg"],  # Patched below: method 9.
        "elk/encrypted.jpg": files["elk/g01.jpg"],  # Patched below: encryption flag.
        "elk/bad_crc.jpg": files["elk/g02.jpg"],  # Patched below: CRC-32.
    }
    return files


_PATCHES = {
    "elk/deflate64.jpg": {"method": 9},
    "elk/encrypted.jpg": {"flag_bits": 0x1},
    "elk/bad_crc.jpg": {"crc_xor": 0xFFFF},
}


def _write_zip(path: pathlib.Path, root: str, files: dict[str, bytes], seed: int | None) -> None:
    names = [f"{root}/{name}" for name in files] + [f"{root}/{s}" for s in sorted(STRAYS)]
    names.append("__MACOSX/oregon_wildlife/._elk")
    if seed is not None:
        random.Random(seed).shuffle(names)
    contents = {f"{root}/{name}": data for name, data in files.items()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            # Raccoon entries as a Windows zip tool writes them.
            member = name.replace("/", "\\") if "/raccoon/" in name else name
            zf.writestr(member, contents.get(name, b"\x00stray\x00"))
    for name, patch in _PATCHES.items():
        test_archive._patch_member(path, f"{root}/{name}", **patch)


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, tfds.core.DatasetBuilder]:
    files = _archive_files()
    built = {}
    for key, config, root, seed in [
        ("full", "full", "oregon_wildlife/oregon_wildlife", None),
        ("resized_256", "resized_256", "oregon_wildlife", 7),
    ]:
        base = tmp_path_factory.mktemp(key)
        (base / "manual").mkdir()
        _write_zip(base / "manual" / "oregon-wildlife.zip", root, files, seed)
        built[key] = build.build_dataset(str(base / "manual"), str(base / "tfds"), config)
        if key == "resized_256":  # The same archive again, into another data_dir.
            again = build.build_dataset(str(base / "manual"), str(base / "again"), config)
            built["resized_256 again"] = again
    return built


def _stored_images(builder) -> dict[str, dict[str, bytes]]:
    """split -> file_name -> stored JPEG bytes (undecoded)."""
    out = {}
    for split in ("train", "validation", "test"):
        ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        out[split] = {ex["file_name"].decode(): ex["image"] for ex in tfds.as_numpy(ds)}
    return out


def _kept(builder) -> set[str]:
    return {name for split in _stored_images(builder).values() for name in split}


@pytest.mark.parametrize("config", ["full", "resized_256"])
def test_every_odd_file_is_counted_and_the_build_completes(builds, config):
    summary = build.stored_summary(builds[config])
    assert set(summary.unreadable) == set(UNREADABLE)
    for name, reason in UNREADABLE.items():
        assert summary.unreadable[name].startswith(reason), (name, summary.unreadable[name])
        assert not re.search(r"0x[0-9a-f]{6}", summary.unreadable[name])  # No addresses.
    candidates = len(_archive_files())
    assert sum(summary.totals().values()) == candidates
    assert summary.totals()["kept"] == len(_kept(builds[config]))


@pytest.mark.parametrize("config", ["full", "resized_256"])
def test_near_duplicates_keep_one_photo_and_count_the_rest(builds, config):
    summary = build.stored_summary(builds[config])
    kept = _kept(builds[config])
    assert kept & set(RACCOON) == {"raccoon/r_original.jpg"} or kept & set(RACCOON) == {
        "raccoon/r_lossless_copy.png"
    }  # Same pixels, same size: the tie goes to the smaller content hash.
    keeper = (kept & set(RACCOON)).pop()
    exact_copy = ({"raccoon/r_original.jpg", "raccoon/r_lossless_copy.png"} - {keeper}).pop()
    assert summary.duplicates[exact_copy] == keeper
    for name, role in RACCOON.items():
        if role == "near_duplicate":
            assert summary.near_duplicates[name] == keeper, name
    assert summary.counts["raccoon"] == {
        "kept": 1, "near_duplicate": 4, "duplicate": 1, "conflict": 0, "unreadable": 0
    }  # fmt: skip
    # Hopper, upright after its EXIF orientation, is one photo in six files.
    hopper = {f"bald_eagle/{n}" for n in HOPPER}
    assert len(kept & hopper) == 1


@pytest.mark.parametrize("config", ["full", "resized_256"])
def test_cross_class_copies_keep_no_label(builds, config):
    summary = build.stored_summary(builds[config])
    assert [(c["classes"], c["files"]) for c in summary.conflicts] == CONFLICTS
    conflicting = {f for _, files in CONFLICTS for f in files}
    assert not conflicting & _kept(builds[config])
    for label in ("bobcat", "cougar", "gray_fox", "red_fox"):
        assert summary.counts[label]["conflict"] == 1


def test_full_and_resized_have_identical_membership_and_counts(builds):
    full, resized = (build.stored_summary(builds[c]) for c in ("full", "resized_256"))
    assert full.counts == resized.counts
    assert full.duplicates == resized.duplicates
    assert full.near_duplicates == resized.near_duplicates
    names = {
        config: {split: set(files) for split, files in _stored_images(builds[config]).items()}
        for config in ("full", "resized_256")
    }
    assert names["full"] == names["resized_256"]


def test_rebuilding_the_same_archive_gives_an_identical_summary(builds):
    first = builds["resized_256"].info.metadata["build_summary"]
    second = builds["resized_256 again"].info.metadata["build_summary"]
    assert first == second


def test_report_pictures_are_written_beside_the_metadata(builds):
    folder = pathlib.Path(builds["resized_256"].data_path)
    for name in ("class_counts.png", "near_duplicates.png"):
        data = (folder / name).read_bytes()
        assert data.startswith(b"\x89PNG")
        with Image.open(io.BytesIO(data)) as img:
            assert min(img.size) > 200


@pytest.mark.parametrize("config", ["full", "resized_256"])
def test_every_stored_image_is_a_3_channel_jpeg(builds, config):
    for split in _stored_images(builds[config]).values():
        for name, jpeg in split.items():
            image = tf.io.decode_jpeg(jpeg, channels=0)  # What the JPEG itself holds.
            assert image.shape[-1] == 3, name
            if config == "resized_256":
                assert min(image.shape[:2]) <= 256, name


def test_ignored_entries_are_listed(builds):
    summary = build.stored_summary(builds["full"])
    root = "oregon_wildlife/oregon_wildlife"
    assert set(summary.ignored) == {f"{root}/{s}" for s in STRAYS} | {
        "__MACOSX/oregon_wildlife/._elk"
    }
