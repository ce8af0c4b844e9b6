"""Calibrates the near-duplicate threshold, and times grouping 14,000 hashes.

    python -m benchmarks.near_duplicates [--hashes 14000]

Real photos only: tests/data/real (6 wildlife photos), Pillow's flower.jpg, frozenpond.mpo and
hopper.bmp (tests/data/hostile), matplotlib's sample photo of a parcel
(Minduka_Present_Blue_Pack.png). From each, the variants a scraped archive holds are generated
(`VARIANTS`: JPEG quality 50-95, resized 50-100 %, a lossless PNG copy, a grayscale copy, small
crops) and compared with the original: recall per variant = share within the threshold.
False positives: every pair of distinct photos, plus every pair of the four non-overlapping
quarters of each photo (related scenes, different pixels), plus the synthetic sample images
(`tfds_oregon.sample`, 20 classes x 10), which the tests and the demo build. Prints Markdown.
"""

from __future__ import annotations

import argparse
import io
import itertools
import pathlib
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from tfds_oregon import images, sample, splits

_REPO = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = [
    *sorted((_REPO / "tests" / "data" / "real").glob("*.jpg")),
    _REPO / "tests" / "data" / "hostile" / "flower.jpg",
    _REPO / "tests" / "data" / "hostile" / "frozenpond.mpo",
    _REPO / "tests" / "data" / "hostile" / "hopper.bmp",
]
_MATPLOTLIB_PHOTO = "Minduka_Present_Blue_Pack.png"


def _encode(img: Image.Image, fmt: str, **kwargs) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _resize(img: Image.Image, fraction: float) -> Image.Image:
    size = (max(8, round(img.width * fraction)), max(8, round(img.height * fraction)))
    return img.resize(size, Image.Resampling.BICUBIC)


def _crop(img: Image.Image, fraction: float, centred: bool) -> Image.Image:
    """Cuts `fraction` of each side off (centred) or of the right and bottom only."""
    dx, dy = round(img.width * fraction), round(img.height * fraction)
    if centred:
        return img.crop((dx, dy, img.width - dx, img.height - dy))
    return img.crop((0, 0, img.width - dx, img.height - dy))


VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "lossless PNG copy": lambda img: _encode(img, "PNG"),
    "JPEG quality 95": lambda img: _encode(img, "JPEG", quality=95),
    "JPEG quality 75": lambda img: _encode(img, "JPEG", quality=75),
    "JPEG quality 50": lambda img: _encode(img, "JPEG", quality=50),
    "resized to 90 %": lambda img: _resize(img, 0.9),
    "resized to 75 %": lambda img: _resize(img, 0.75),
    "resized to 50 %": lambda img: _resize(img, 0.5),
    "grayscale copy": lambda img: img.convert("L").convert("RGB"),
    "crop 2 % each side": lambda img: _crop(img, 0.02, True),
    "crop 5 % each side": lambda img: _crop(img, 0.05, True),
    "crop 5 % right+bottom": lambda img: _crop(img, 0.05, False),
    "resized 50 % + JPEG 50": lambda img: _encode(_resize(img, 0.5), "JPEG", quality=50),
}


def load_photos() -> dict[str, Image.Image]:
    """name -> upright RGB photo, for every real photo available."""
    paths = list(PHOTOS)
    try:
        from matplotlib import cbook

        paths.append(pathlib.Path(cbook.get_sample_data(_MATPLOTLIB_PHOTO, asfileobj=False)))
    except (ImportError, OSError, ValueError):
        pass
    return {p.stem: images.decode_upright(p.read_bytes()).image for p in paths}


def quarters(img: Image.Image) -> list[Image.Image]:
    """The four non-overlapping quarters of a photo."""
    w, h = img.width // 2, img.height // 2
    return [img.crop((x, y, x + w, y + h)) for x in (0, w) for y in (0, h)]


def variant_distances(photos: dict[str, Image.Image]) -> dict[str, list[int]]:
    """variant -> Hamming distance to its original, one per photo."""
    return {
        name: [
            splits.hamming(images.perceptual_hash(img), images.perceptual_hash(make(img)))
            for img in photos.values()
        ]
        for name, make in VARIANTS.items()
    }


def distinct_distances(photos: dict[str, Image.Image]) -> dict[str, list[int]]:
    """Hamming distances of pairs that are NOT the same photo, by kind of pair."""
    whole = [images.perceptual_hash(img) for img in photos.values()]
    parts = [[images.perceptual_hash(q) for q in quarters(img)] for img in photos.values()]
    rng = np.random.default_rng(0)
    synthetic = [
        images.perceptual_hash(sample.synthetic_image(label, (96, 72), rng))
        for label in range(20)
        for _ in range(10)
    ]
    flat_parts = [h for p in parts for h in p]
    return {
        "distinct photos": [splits.hamming(a, b) for a, b in itertools.combinations(whole, 2)],
        "quarters of photos": [
            splits.hamming(a, b) for a, b in itertools.combinations(flat_parts, 2)
        ],
        "synthetic sample images": [
            splits.hamming(a, b) for a, b in itertools.combinations(synthetic, 2)
        ],
    }


def calibration_table(thresholds: list[int]) -> str:
    photos = load_photos()
    recall = variant_distances(photos)
    false = distinct_distances(photos)
    head = "| pairs | n | " + " | ".join(f"<= {t}" for t in thresholds) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(thresholds)]
    for name, distances in recall.items():
        cells = [f"{np.mean(np.array(distances) <= t):.0%}" for t in thresholds]
        lines.append(f"| recall: {name} | {len(distances)} | " + " | ".join(cells) + " |")
    for name, distances in false.items():
        cells = [f"{np.mean(np.array(distances) <= t):.2%}" for t in thresholds]
        lines.append(f"| false positives: {name} | {len(distances)} | " + " | ".join(cells) + " |")
    lines.append(f"\n{len(photos)} real photos: {', '.join(photos)}.")
    return "\n".join(lines)


def grouping_table(n: int, threshold: int) -> str:
    """Grouping time for `n` random hashes with 5 % planted near-copies, against a bare XOR."""
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, n, dtype=np.int64)]
    for i in range(0, n // 20):  # Near-copies: 1-4 bits flipped.
        flips = rng.choice(64, rng.integers(1, 5), replace=False)
        hashes[-1 - i] = hashes[i] ^ int(sum(1 << int(b) for b in flips))
    start = time.perf_counter()
    groups = splits.group_near_duplicates(hashes, threshold)
    seconds = time.perf_counter() - start
    array = np.array(hashes, dtype=np.uint64)
    start = time.perf_counter()
    for i in range(0, n, 512):
        np.bitwise_count(array[i : i + 512, None] ^ array[None, i:])
    bare = time.perf_counter() - start
    multi = sum(len(g) > 1 for g in groups)
    return (
        "| measurement | seconds |\n|---|---:|\n"
        f"| group {n} hashes (threshold {threshold}; {multi} groups of 2+) | {seconds:.2f} |\n"
        f"| bare: XOR + popcount of the same pairs, no grouping | {bare:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashes", type=int, default=14_000)
    args = parser.parse_args()
    print(calibration_table([4, 6, 8, 10, 12, 14]))
    print()
    print(grouping_table(args.hashes, splits.NEAR_DUPLICATE_BITS))


if __name__ == "__main__":
    main()
