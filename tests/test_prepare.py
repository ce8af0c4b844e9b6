"""tfds_oregon.prepare: the two passes over an archive (scan, then stored bytes per record)."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from tfds_oregon import archive, prepare, sample, splits


def _jpeg(size: tuple[int, int], label: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    sample.synthetic_image(label, size, np.random.default_rng(seed)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture()
def zip_path(tmp_path) -> str:
    files = {
        "ow/elk/big.jpg": _jpeg((640, 480), 8, 0),  # Resized by resized_256.
        "ow/elk/big_copy.jpg": _jpeg((640, 480), 8, 0),  # Same bytes: not cached twice.
        "ow/elk/small.jpg": _jpeg((64, 48), 8, 1),  # Stored as it is.
        "ow/elk/small_copy.jpg": _jpeg((64, 48), 8, 1),  # Same bytes: converted once.
        "ow/raven/a.png": _png(),
        "ow/raven/damaged.jpg": _jpeg((64, 48), 14, 2),
    }
    path = tmp_path / "oregon-wildlife.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("ow/raven/damaged.jpg")
    start = info.header_offset + 30 + len(info.filename) + 40
    raw[start : start + 64] = bytes(64)  # Corrupt the member's deflate stream.
    path.write_bytes(bytes(raw))
    return str(path)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 30), (10, 200, 30, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("cache_bytes", [prepare.CACHE_BYTES, 0])
def test_scan_then_stored_images(zip_path, cache_bytes):
    with archive.Source(zip_path) as source:
        layout = archive.detect_layout(source.files())
        scanned = prepare.scan(source, layout.entries, 256, workers=2, cache_bytes=cache_bytes)
        assert list(scanned.unreadable) == ["raven/damaged.jpg"]
        assert "damaged archive member" in scanned.unreadable["raven/damaged.jpg"]
        assert scanned.as_is == {"elk/small.jpg", "elk/small_copy.jpg"}
        # big_copy is converted again in pass 2, unless both copies raced through pass 1.
        cached = set(scanned.cache) - {"elk/big_copy.jpg"}
        assert cached == (set() if cache_bytes == 0 else {"elk/big.jpg", "raven/a.png"})
        paths = {e.file_name: e.path for e in layout.entries}
        stored = dict(prepare.stored_images(source, scanned.records, paths, scanned, 256))
    by_name = {record.file_name: data for record, data in stored.items()}
    with Image.open(io.BytesIO(by_name["elk/big.jpg"])) as img:
        assert (img.format, img.size) == ("JPEG", (341, 256))
    assert by_name["elk/big_copy.jpg"] == by_name["elk/big.jpg"]  # Converted again in pass 2.
    with archive.Source(zip_path) as source:
        assert by_name["elk/small.jpg"] == source.read("ow/elk/small.jpg")
    records = {r.file_name: r for r in scanned.records}
    assert records["elk/small.jpg"].byte_hash == records["elk/small_copy.jpg"].byte_hash
    assert records["elk/small.jpg"].phash == records["elk/small_copy.jpg"].phash
    assert records["elk/big.jpg"].pixels == 640 * 480  # The source size, not the stored one.


def test_exact_duplicates_are_same_bytes_or_same_pixels(tmp_path):
    photo = sample.synthetic_image(8, (600, 520), np.random.default_rng(3))
    jpeg = io.BytesIO()
    photo.save(jpeg, format="JPEG", quality=90)
    with Image.open(io.BytesIO(jpeg.getvalue())) as decoded:
        png = io.BytesIO()
        decoded.convert("RGB").save(png, format="PNG")  # The JPEG's exact pixels.
    requality = io.BytesIO()
    photo.resize((540, 468)).save(requality, format="JPEG", quality=60)  # Near only; smaller.
    files = {
        "ow/elk/a.jpg": jpeg.getvalue(),
        "ow/elk/b_same_bytes.jpg": jpeg.getvalue(),
        "ow/elk/c_same_pixels.png": png.getvalue(),
        "ow/elk/d_quality_60.jpg": requality.getvalue(),
    }
    path = tmp_path / "oregon-wildlife.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with archive.Source(str(path)) as source:
        layout = archive.detect_layout(source.files())
        scanned = prepare.scan(source, layout.entries, 256, workers=2)
        plan = splits.plan_splits(scanned.records)
        paths = {e.file_name: e.path for e in layout.entries}
        exact = prepare.exact_duplicates(source, plan.dropped, scanned.records, paths)
    # a, b and c tie on size: the keeper is one of them (smallest content hash), never d.
    assert len(plan.dropped) == 3 and "elk/d_quality_60.jpg" in plan.dropped
    assert exact == set(plan.dropped) - {"elk/d_quality_60.jpg"}


def test_ordered_map_keeps_order_and_bounds_work_in_flight():
    pulled = 0

    def items():
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield i

    def jittery_square(x: int) -> int:
        time.sleep(0.002 * (x % 3))  # Later items often finish first.
        return x * x

    consumed = []
    for x, y in prepare.ordered_map(jittery_square, items(), workers=2):
        if x == 0:
            assert pulled <= 4 * 2  # Not the whole input read ahead (each may be a photo).
        consumed.append((x, y))
    assert consumed == [(x, x * x) for x in range(40)]
