"""Builds the oregon_wildlife dataset from the Kaggle archive and prints the build summary.

    python -m tfds_oregon.build --manual_dir ~/oregon --data_dir ~/tensorflow_datasets \\
        --config resized_256

The same as `tfds build oregon_wildlife --imports tfds_oregon --manual_dir ... --data_dir ...`,
plus the summary table (kept / unreadable / duplicate / cross-class duplicate per class) and,
on bad input, one line on stderr that says what to do instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys

from trainer import cli  # noqa: F401  # isort: skip - first: quiets TensorFlow before it loads.

import tensorflow_datasets as tfds

from infra import storage
from tfds_oregon import archive, summary
from tfds_oregon.oregon_wildlife.oregon_wildlife_dataset_builder import Builder

CONFIG_NAMES = tuple(config.name for config in Builder.BUILDER_CONFIGS)


def build_dataset(
    manual_dir: str, data_dir: str, config: str = "full", overwrite: bool = False
) -> tfds.core.DatasetBuilder:
    """Builds `oregon_wildlife/<config>` into `data_dir` (a no-op when already built).

    Raises:
      archive.SourceError: the archive in `manual_dir` is missing or unusable.
    """
    builder = tfds.builder(f"oregon_wildlife/{config}", data_dir=data_dir)
    # Not `builder.is_prepared()`: it logs a warning whenever the dataset is not built yet.
    built = (builder.data_path / "dataset_info.json").exists()
    if overwrite or not built:
        archive.locate(manual_dir)  # Fail before TFDS creates any folder.
    mode = (
        tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
        if overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode)
    builder.download_and_prepare(download_config=download_config)
    return builder


def stored_summary(builder: tfds.core.DatasetBuilder) -> summary.BuildSummary:
    """The summary a build stored in the dataset's metadata."""
    return summary.BuildSummary.from_dict(builder.info.metadata[summary.METADATA_KEY])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manual_dir", required=True, help="folder holding oregon-wildlife.zip")
    parser.add_argument("--data_dir", required=True, help="TFDS data_dir to build into")
    parser.add_argument(
        "--config",
        choices=CONFIG_NAMES,
        default="resized_256",
        help="resized_256 (the trainer's default input, several times cheaper to read) or full",
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild if already built")
    args = parser.parse_args(argv)
    # TFDS's tqdm bars print one line per update in a log; prepare.py reports its own progress.
    tfds.disable_progress_bar()
    try:
        # gs:// typos and missing grants fail here in seconds; TF itself would hang on them.
        storage.check_paths(readable=[args.manual_dir], writable=[args.data_dir])
        builder = build_dataset(args.manual_dir, args.data_dir, args.config, args.overwrite)
    except (archive.SourceError, ValueError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # Always one line.
        return 1
    print(summary.format_table(stored_summary(builder)))
    print(f"dataset: {builder.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
