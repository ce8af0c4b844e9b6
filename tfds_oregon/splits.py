"""Removes duplicate photos, then splits what is left: stratified, deterministic, leak-free.

Deduplication runs on the whole archive before the split, so no photo can sit in two splits:
- copies of one photo inside one class keep the copy whose file name sorts first;
- a photo found under two or more classes has no trustworthy label: every copy is dropped.
"Same photo" means the same decoded pixels (same bytes always decode to the same pixels).

Each class is then ordered by a key derived from the kept file's content (its SHA-256), and cut
into train/validation/test by the fractions. The split depends only on the set of photos: not on
the order of the zip's entries, the machine, the run, or the config (`full` and `resized_256`
split the same way).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable, Mapping

DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}


@dataclasses.dataclass(frozen=True)
class Record:
    """One decodable image: where it came from and what it holds."""

    file_name: str  # Relative to the class folders' parent, e.g. "elk/0a1b...jpg".
    label: str
    byte_hash: str  # SHA-256 of the file's bytes.
    pixel_hash: str  # Digest of the decoded upright RGB pixels.


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """The kept records of each split, and what deduplication dropped.

    Attributes:
      splits: split name -> records, sorted by file name.
      duplicates: file name of each dropped in-class copy -> the file name kept instead.
      cross_class: groups of file names (sorted) holding one photo under several classes.
    """

    splits: dict[str, list[Record]]
    duplicates: dict[str, str]
    cross_class: list[list[str]]
    dropped_labels: dict[str, str]  # Every dropped file name -> its class.


def plan_splits(
    records: Iterable[Record], fractions: Mapping[str, float] = DEFAULT_FRACTIONS
) -> SplitPlan:
    """Deduplicates `records` and assigns the rest to splits (see the module docstring)."""
    _check_fractions(fractions)
    kept, duplicates, cross_class, dropped = deduplicate(records)
    splits: dict[str, list[Record]] = {name: [] for name in fractions}
    for class_records in _by_label(kept).values():
        ordered = sorted(class_records, key=lambda r: (r.byte_hash, r.file_name))
        for name, part in zip(fractions, _cut(ordered, fractions), strict=True):
            splits[name].extend(part)
    for part in splits.values():
        part.sort(key=lambda r: r.file_name)
    return SplitPlan(splits, duplicates, cross_class, dropped)


def deduplicate(
    records: Iterable[Record],
) -> tuple[list[Record], dict[str, str], list[list[str]], dict[str, str]]:
    """Returns (kept, in-class duplicates, cross-class groups, dropped file -> class)."""
    groups: dict[str, list[Record]] = collections.defaultdict(list)
    for record in records:
        groups[record.pixel_hash].append(record)
    kept, duplicates, cross_class, dropped = [], {}, [], {}
    for group in groups.values():
        group.sort(key=lambda r: r.file_name)
        if len({r.label for r in group}) > 1:
            cross_class.append([r.file_name for r in group])
            dropped.update((r.file_name, r.label) for r in group)
            continue
        kept.append(group[0])
        for copy in group[1:]:
            duplicates[copy.file_name] = group[0].file_name
            dropped[copy.file_name] = copy.label
    cross_class.sort()
    return kept, duplicates, cross_class, dropped


def _by_label(records: Iterable[Record]) -> dict[str, list[Record]]:
    by_label: dict[str, list[Record]] = collections.defaultdict(list)
    for record in records:
        by_label[record.label].append(record)
    return dict(sorted(by_label.items()))


def split_counts(n: int, fractions: Mapping[str, float]) -> list[int]:
    """How many of `n` images go to each split.

    Every split but the first rounds half up, and gets at least one image when there are
    enough for every split to have one (TFDS cannot write an empty split, and tiny sample
    archives would otherwise have no validation images); the first (train) takes the rest.
    """
    names = list(fractions)
    floor = 1 if n >= len(names) else 0
    others = [
        max(floor if fractions[name] > 0 else 0, math.floor(n * fractions[name] + 0.5))
        for name in names[1:]
    ]
    while sum(others) > n:  # Tiny n with large held-out fractions: rounding overshoots.
        others[others.index(max(others))] -= 1
    return [n - sum(others), *others]


def _cut(ordered: list[Record], fractions: Mapping[str, float]) -> list[list[Record]]:
    parts, start = [], 0
    for count in split_counts(len(ordered), fractions):
        parts.append(ordered[start : start + count])
        start += count
    return parts


def _check_fractions(fractions: Mapping[str, float]) -> None:
    if not fractions or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative, got {dict(fractions)}")
    if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)}")
