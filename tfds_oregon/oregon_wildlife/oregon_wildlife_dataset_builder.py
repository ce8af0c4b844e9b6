"""oregon_wildlife: 20 species of Oregon wildlife, scraped photos from Kaggle, cleaned.

Glue only: `archive` finds and reads the download, `prepare` decodes every image once (two
passes, as TFDS asks for splits before examples), `splits` groups near-duplicates and splits,
`summary` and `report` record what happened.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from tfds_oregon import archive, images, prepare, report, splits, summary
from tfds_oregon.classes import CLASS_NAMES
from trainer import progress

_THUMBNAIL = (160, 160)


@dataclasses.dataclass
class OregonWildlifeConfig(tfds.core.BuilderConfig):
    """A config: how big the stored images are, and how the photos are split.

    Attributes:
      short_side: shrink images whose shorter side is longer to this (aspect kept, never
        upscaled); None stores full resolution.
      split_fractions: (train, validation, test): each near-duplicate group's share.
    """

    short_side: int | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for the Kaggle Oregon Wildlife archive (manual download)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: every file decoded to an upright RGB JPEG, unreadable files "
        "skipped, duplicates and cross-class copies removed, stratified 80/10/10 splits.",
        "2.0.0": "Near-duplicates (re-encoded, resized, grayscale, lossless or slightly "
        "cropped copies) are grouped by a 64-bit perceptual hash (Hamming distance <= 10, "
        "transitively); a group keeps its largest photo, a group spanning two classes keeps "
        "none. Each group's split is a hash of its identity against 0.8/0.9, the same in "
        "`full` and `resized_256` and unchanged when other photos are added or removed. "
        "No file stops a build (oversized, encrypted, Deflate64 or damaged members, pixel "
        "bombs, extreme aspect ratios are counted as unreadable). Splits are not comparable "
        "with 1.0.0's: 1.0.0 cut each class at sorted positions and kept near-duplicates, "
        "so some 1.0.0 test photos had copies in train.",
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
        names = ("train", "validation", "test")
        fractions = dict(zip(names, self.builder_config.split_fractions, strict=True))
        with archive.Source(source_path) as source:
            # --- Pass 1: read, identify and convert every image candidate.
            layout = archive.detect_layout(source.files())
            scanned = prepare.scan(source, layout.entries, short_side)
            _check_readable(source_path, layout, scanned)
            # --- Group near-duplicates, keep one per group, split the groups.
            plan = splits.plan_splits(scanned.records, fractions)
            _check_splits(source_path, plan)
            paths = {entry.file_name: entry.path for entry in layout.entries}
            exact = prepare.exact_duplicates(source, plan.dropped, scanned.records, paths)
            # --- Record what happened: JSON in metadata.json, pictures beside it.
            build_summary = summary.create_summary(
                plan,
                labels={entry.file_name: entry.label for entry in layout.entries},
                unreadable=scanned.unreadable,
                ignored=layout.ignored,
                exact=exact,
            )
            self.info.metadata[summary.METADATA_KEY] = build_summary.to_dict()
            report.write_report(
                build_summary,
                plan.groups,
                lambda name: _thumbnail(source, paths[name]),
                str(self.data_path),  # The build's temporary folder, renamed when done.
            )
        missing = splits.classes_missing_a_split(plan)
        if missing:  # The stock `tfds build` prints no summary: say it here, in one line.
            logging.warning(
                "oregon_wildlife: %d classes have no validation or no test example (%s); see "
                "info.metadata['%s']",
                len(missing),
                ", ".join(missing),
                summary.METADATA_KEY,
            )
        return {
            name: self._generate_examples(source_path, records, paths, scanned, name)
            for name, records in plan.splits.items()
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


def _check_readable(source_path: str, layout: archive.Layout, scanned: prepare.ScanResult):
    """An archive with no readable image is bad input, not an empty dataset."""
    if scanned.records:
        return
    example = next(iter(scanned.unreadable.items()), None)
    detail = f", e.g. {example[0]}: {example[1]}" if example else ""
    raise archive.SourceError(
        f"no readable image in {source_path}: {len(layout.entries)} image files, all "
        f"unreadable{detail}; the download is damaged: delete it and download again with "
        f"`{archive.DOWNLOAD_COMMAND}`"
    )


def _check_splits(source_path: str, plan: splits.SplitPlan) -> None:
    """A split without any example cannot be written (and could not be evaluated)."""
    empty = [name for name, records in plan.splits.items() if not records]
    if empty:
        kept = sum(len(records) for records in plan.splits.values())
        raise archive.SourceError(
            f"the {' and '.join(empty)} split of {source_path} would be empty: only {kept} "
            "distinct photos are left after removing duplicates and conflicts; use the full "
            f"archive (`{archive.DOWNLOAD_COMMAND}`)"
        )


def _thumbnail(source: archive.Source, path: str) -> Image.Image | None:
    try:
        image = images.decode_upright(source.read(path), _THUMBNAIL[0]).image
    except (archive.UnreadableMemberError, images.UnreadableImageError):
        return None
    image.thumbnail(_THUMBNAIL)
    return image
