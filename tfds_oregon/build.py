"""Builds the oregon_wildlife dataset from the Kaggle archive and prints the build summary.

    python -m tfds_oregon.build --manual_dir ~/oregon --data_dir ~/tensorflow_datasets \\
        --config resized_256

The same as `tfds build oregon_wildlife --imports tfds_oregon --manual_dir ... --data_dir ...`,
plus a quiet console (one progress line every few seconds instead of TFDS's bars), the
summary tables (kept / near-duplicate / duplicate / conflict / unreadable and the split of
each class) and the report pictures' paths; on bad input, one `error:` line, exit 2.
"""

from trainer import cli  # isort: skip - first: quiets TensorFlow before it is imported.

import os
import posixpath

import tensorflow_datasets as tfds
from absl import flags

from infra import storage
from tfds_oregon import archive, report, summary
from tfds_oregon.oregon_wildlife.oregon_wildlife_dataset_builder import Builder

CONFIG_NAMES = tuple(config.name for config in Builder.BUILDER_CONFIGS)


def build_dataset(
    manual_dir: str, data_dir: str, config: str = "full", overwrite: bool = False
) -> tfds.core.DatasetBuilder:
    """Builds `oregon_wildlife/<config>` into `data_dir` (a no-op when already built).

    Raises:
      archive.SourceError: the archive in `manual_dir` is missing or unusable.
      ValueError: `data_dir` cannot be written.
    """
    check_data_dir(data_dir)
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


def check_data_dir(data_dir: str) -> None:
    """A local `data_dir` must be a folder we can write (gs:// is checked by `storage`).

    Raises:
      ValueError: it is a file, or it cannot be created or written.
    """
    if storage.is_gcs(data_dir):
        return
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir} is a file: pass a folder to build into")
    try:
        os.makedirs(data_dir, exist_ok=True)
        probe = os.path.join(data_dir, f".write-test-{os.getpid()}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ValueError(
            f"cannot write to data_dir {data_dir} ({e.strerror}): pass a folder you can write"
        ) from None


def stored_summary(builder: tfds.core.DatasetBuilder) -> summary.BuildSummary:
    """The summary a build stored in the dataset's metadata."""
    return summary.BuildSummary.from_dict(builder.info.metadata[summary.METADATA_KEY])


def define_flags() -> None:
    """The command's flags; defined only when run as a command, so that importing this module
    (the tests and benchmarks call `build_dataset`) adds no global flag that could clash."""
    flags.DEFINE_string(
        "manual_dir", None, "Folder holding oregon-wildlife.zip (local or gs://).", required=True
    )
    flags.DEFINE_string(
        "data_dir", None, "TFDS data_dir to build into (local or gs://).", required=True
    )
    flags.DEFINE_enum(
        "config",
        "resized_256",
        CONFIG_NAMES,
        "resized_256 (the trainer's default input, several times cheaper to read) or full.",
    )
    flags.DEFINE_bool("overwrite", False, "Rebuild even if already built.")


def main(argv: list[str]) -> int:
    args = flags.FLAGS
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])} (all options are flags)")
    tfds.disable_progress_bar()  # Our own progress line replaces TFDS's bars.
    # gs:// typos and missing grants fail here in seconds; TF itself would hang on them.
    storage.check_paths(readable=[args.manual_dir], writable=[args.data_dir])
    builder = build_dataset(args.manual_dir, args.data_dir, args.config, args.overwrite)
    print(summary.format_table(stored_summary(builder)))
    pictures = [posixpath.join(str(builder.data_path), n) for n in report.PICTURES]
    print(f"report: {', '.join(pictures)}")
    print(f"dataset: {builder.data_path}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
