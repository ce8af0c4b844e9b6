"""Writes a SYNTHETIC sample archive in the exact layout of the Kaggle Oregon Wildlife zip.

The images are generated, not photos: each class has its own hue and its own stripe
orientation and frequency, and every image gets its own brightness, saturation, stripe phase,
angle jitter and noise. A small CNN learns the classes easily, so tests and the demo can check
that training works without the real 4.4 GB download. At realistic sizes (e.g. 2400x1600)
the noise gives JPEGs of photo-like weight (~300 KB), which the benchmarks rely on.

    python -m tfds_oregon.sample --out runs/manual/oregon-wildlife.zip --per_class 12

Layout, as in the Kaggle download: `oregon_wildlife/oregon_wildlife/<class>/<18 hex>.jpg`
(`--layout nested`) or `oregon_wildlife/<class>/<18 hex>.jpg` (`--layout flat`), with a
macOS `.DS_Store` in every class folder.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile

from trainer import cli  # noqa: F401  # isort: skip - first: quiets TensorFlow before it loads.

import numpy as np
from PIL import Image

from tfds_oregon.classes import CLASS_NAMES

LAYOUTS = {"nested": "oregon_wildlife/oregon_wildlife", "flat": "oregon_wildlife"}
_DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(2048 - 8)
_ORIENTATIONS = (0.0, 45.0, 90.0, 135.0)  # Degrees; class i uses i % 4.
_CYCLES = (2.0, 3.5, 5.0, 7.0, 10.0)  # Stripes across the image; class i uses i // 4.


def synthetic_image(label: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One RGB image of class `label`: class hue and stripes, per-image jitter and noise."""
    width, height = size
    angle = np.deg2rad(_ORIENTATIONS[label % 4] + rng.uniform(-6, 6))
    cycles = _CYCLES[(label // 4) % len(_CYCLES)] * rng.uniform(0.9, 1.1)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(width, height)
    stripes = np.sin(
        2 * np.pi * cycles * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi)
    )
    # Blotchy low-frequency texture plus faint grain: varies every image, and makes large JPEGs
    # as heavy as photos (~300 KB at 2400x1600) where pure white noise would double that.
    blotches = rng.normal(0.0, 0.05, (max(1, height // 16), max(1, width // 16)))
    texture = np.asarray(
        Image.fromarray(blotches.astype(np.float32), mode="F").resize(size, Image.BILINEAR)
    )
    noise = texture + rng.normal(0.0, 0.005, (height, width)).astype(np.float32)
    value = rng.uniform(0.6, 0.95) * (0.62 + 0.3 * stripes) + noise
    saturation = np.full_like(value, rng.uniform(0.55, 0.9)) + noise
    hue = np.full_like(value, (label / len(CLASS_NAMES) + rng.uniform(-0.01, 0.01)) % 1.0)
    channels = [np.clip(c * 255, 0, 255).astype(np.uint8) for c in (hue, saturation, value)]
    hsv = Image.merge("HSV", [Image.fromarray(c, mode="L") for c in channels])
    return hsv.convert("RGB")


def write_sample_archive(
    path: str | os.PathLike,
    per_class: int,
    *,
    layout: str = "nested",
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
) -> str:
    """Writes a zip of `per_class` synthetic JPEGs for each of the 20 classes.

    Args:
      path: the zip to write (written under a temporary name, then renamed).
      per_class: images per class.
      layout: "nested" (the current Kaggle zip) or "flat" (older downloads).
      image_size: (width, height) of every image.
      seed: the same seed writes the same archive.

    Returns:
      `path`, as a string.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    if per_class < 1 or min(image_size) < 8:
        raise ValueError(f"need per_class >= 1 and sides >= 8 px, got {per_class}, {image_size}")
    path = os.fspath(path)
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    incomplete = f"{path}.incomplete"
    try:
        with zipfile.ZipFile(incomplete, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            _write_classes(zf, LAYOUTS[layout], per_class, image_size, rng)
    except BaseException:
        os.remove(incomplete)  # Never leave a half-written archive behind.
        raise
    os.replace(incomplete, path)
    return path


def _write_classes(
    zf: zipfile.ZipFile,
    root: str,
    per_class: int,
    image_size: tuple[int, int],
    rng: np.random.Generator,
) -> None:
    for label, name in enumerate(CLASS_NAMES):
        folder = f"{root}/{name}"
        zf.writestr(f"{folder}/.DS_Store", _DS_STORE)
        for _ in range(per_class):
            file_name = f"{folder}/{rng.bytes(9).hex()}.jpg"
            zf.writestr(file_name, _jpeg(synthetic_image(label, image_size, rng)))


def _jpeg(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT, e.g. 320x240, got {text!r}")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a zip of SYNTHETIC images in the exact Kaggle Oregon Wildlife layout."
    )
    parser.add_argument(
        "--out", required=True, help="zip to write, e.g. manual/oregon-wildlife.zip"
    )
    parser.add_argument(
        "--per_class", type=int, required=True, help="images per class (20 classes)"
    )
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="nested")
    parser.add_argument("--size", type=_parse_size, default=(320, 240), help="WxH, default 320x240")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = write_sample_archive(
            args.out, args.per_class, layout=args.layout, image_size=args.size, seed=args.seed
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = args.per_class * len(CLASS_NAMES)
    print(
        f"wrote {path}: {total} SYNTHETIC images ({args.per_class} per class, {args.layout} layout)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
