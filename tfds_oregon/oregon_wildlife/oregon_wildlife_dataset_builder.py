"""oregon_wildlife: 20 species of Oregon wildlife, scraped photos from Kaggle, cleaned.

Glue only: `archive` finds and reads the download, `prepare` decodes every image once (two
passes, as TFDS asks for splits before examples), `splits` deduplicates and splits, `summary`
records what happened.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds
from absl import logging

from tfds_oregon import archive, prepare, splits, summary
from tfds_oregon.classes import CLASS_NAMES
from trainer import progress


@dataclasses.dataclass
class OregonWildlifeConfig(tfds.core.BuilderConfig):
    """A config: how big the stored images are, and how the photos are split.

    Attributes:
      short_side: shrink images whose shorter side is longer to this (aspect kept, never
        upscaled); None stores full resolution.
      split_fractions: (train, validation, test), applied per class.
    """

    short_side: int | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for the Kaggle Oregon Wildlife archive (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: every file decoded to an upright RGB JPEG, unreadable files "
        "skipped, duplicates and cross-class copies removed, stratified 80/10/10 splits.",
    }
    BUILDER_CONFIGS = [
        OregonWildlifeConfig(name="full", description="Images at their original resolution."),
        OregonWildlifeConfig(
            name="resized_256",
            short_side=256,
            description="Shorter side shrunk to 256 pixels, aspect ratio kept, never upscaled.",
        ),
    ]
    DEFAULT_CONFIG_NAME = "full"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download the archive from Kaggle (needs a Kaggle account and an API token in
    ~/.kaggle/kaggle.json) straight into the manual directory:

        {archive.DOWNLOAD_COMMAND} -p <manual_dir>

    which leaves <manual_dir>/oregon-wildlife.zip (older downloads are called archive.zip;
    both work, as does the extracted oregon_wildlife/ folder). Do not unzip it: the build
    reads the zip in place. Then build with --manual_dir=<manual_dir>.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://www.kaggle.com/datasets/virtualdvid/oregon-wildlife",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        source_path = archive.locate(dl_manager.manual_dir)
        short_side = self.builder_config.short_side
        with archive.Source(source_path) as source:
            layout = archive.detect_layout(source.files())
            scanned = prepare.scan(source, layout.entries, short_side)
        fractions = dict(
            zip(("train", "validation", "test"), self.builder_config.split_fractions, strict=True)
        )
        plan = splits.plan_splits(scanned.records, fractions)
        build_summary = summary.create_summary(
            plan,
            labels={entry.file_name: entry.label for entry in layout.entries},
            unreadable=scanned.unreadable,
            ignored=layout.ignored,
        )
        self.info.metadata[summary.METADATA_KEY] = build_summary.to_dict()
        logging.info(
            "Build summary of %s:\n%s", self.info.full_name, summary.format_table(build_summary)
        )
        paths = {entry.file_name: entry.path for entry in layout.entries}
        # TFDS cannot write an empty split (archives of fewer than 3 images per class).
        return {
            name: self._generate_examples(source_path, records, paths, scanned, name)
            for name, records in plan.splits.items()
            if records
        }

    def _generate_examples(
        self,
        source_path: str,
        records: list[splits.Record],
        paths: dict[str, str],
        scanned: prepare.ScanResult,
        split: str,
    ):
        """Yields (file name, example) for the kept `records` of one split."""
        with archive.Source(source_path) as source:
            stored = prepare.stored_images(
                source, records, paths, scanned, self.builder_config.short_side
            )
            desc = f"Writing the {split} split"
            for record, jpeg in progress.track(stored, desc, total=len(records), unit="images"):
                yield (
                    record.file_name,
                    {
                        "image": jpeg,
                        "label": record.label,
                        "file_name": record.file_name,
                    },
                )
