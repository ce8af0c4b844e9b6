"""Groups near-duplicate photos, keeps one per group, and splits the groups: leak-free, stable.

1. Grouping: two photos are near-duplicates when their 64-bit perceptual hashes differ in at
   most `threshold` bits (calibrated in the dataset card: re-encodes, rescales, grayscale and
   lossless copies, small crops). Groups are the transitive closure (union-find), so a chain
   of near-copies is one group whatever the order the photos come in.
2. Keeping: a group inside one class keeps its largest photo (most source pixels; ties broken
   by the smallest content hash) and counts the others as duplicates. A group spanning two or
   more classes has no trustworthy label: it keeps none (a cross-class conflict).
3. Splitting: a group's split is a pure function of its identity (the smallest content hash of
   its members) mapped to [0, 1) and compared with the cumulative fractions (0.8, 0.9). So the
   split is the same in every config, in any zip order, on any machine, and adding or removing
   photos moves no other photo. Classes of >= 100 photos land within a few points of 80/10/10;
   tiny classes may get no validation or test example (the summary warns).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
# Hamming distance (of 64 bits) up to which two photos are near-duplicates: see the dataset
# card (tfds_oregon/oregon_wildlife/README.md) and benchmarks/near_duplicates.py.
NEAR_DUPLICATE_BITS = 10
_SPLIT_SALT = b"oregon_wildlife split v2"
_BLOCK = 512  # Rows of the distance matrix computed at once (512 x 14,000 x 8 B = 57 MB).


@dataclasses.dataclass(frozen=True)
class Record:
    """One decodable image: where it came from and what it holds."""

    file_name: str  # Relative to the class folders' parent, e.g. "elk/0a1b...jpg".
    label: str
    byte_hash: str  # SHA-256 of the file's bytes: its identity.
    phash: int  # 64-bit perceptual hash.
    pixels: int  # Source width x height.


@dataclasses.dataclass(frozen=True, order=True)
class Conflict:
    """A group of near-duplicates found under several classes: every copy is dropped."""

    classes: tuple[str, ...]
    file_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """The kept records of each split, and what deduplication dropped.

    Attributes:
      splits: split name -> kept records, sorted by file name.
      dropped: file name of each dropped in-class copy -> the file name kept instead.
      conflicts: groups spanning several classes (all dropped), sorted.
      groups: the multi-photo groups, each as its sorted file names (for reports).
    """

    splits: dict[str, list[Record]]
    dropped: dict[str, str]
    conflicts: list[Conflict]
    groups: list[tuple[str, ...]]


def plan_splits(
    records: Iterable[Record],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    threshold: int = NEAR_DUPLICATE_BITS,
) -> SplitPlan:
    """Groups, deduplicates and splits `records` (see the module docstring)."""
    _check_fractions(fractions)
    records = sorted(records, key=lambda r: r.file_name)
    groups = group_near_duplicates([r.phash for r in records], threshold)
    splits: dict[str, list[Record]] = {name: [] for name in fractions}
    dropped, conflicts, multi = {}, [], []
    for members in groups:
        group = [records[i] for i in members]
        if len(group) > 1:
            multi.append(tuple(r.file_name for r in group))
        labels = sorted({r.label for r in group})
        if len(labels) > 1:
            conflicts.append(Conflict(tuple(labels), tuple(r.file_name for r in group)))
            continue
        keeper = min(group, key=lambda r: (-r.pixels, r.byte_hash, r.file_name))
        dropped.update((r.file_name, keeper.file_name) for r in group if r is not keeper)
        identity = min(r.byte_hash for r in group)
        splits[split_of(identity, fractions)].append(keeper)
    for part in splits.values():
        part.sort(key=lambda r: r.file_name)
    return SplitPlan(splits, dict(sorted(dropped.items())), sorted(conflicts), sorted(multi))


def split_of(identity: str, fractions: Mapping[str, float]) -> str:
    """The split of a group: its identity hashed to [0, 1), against the cumulative fractions."""
    digest = hashlib.sha256(_SPLIT_SALT + identity.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name, fraction in fractions.items():
        cumulative += fraction
        if position < cumulative:
            return name
    return next(name for name, f in reversed(fractions.items()) if f > 0)  # Rounding at 1.0.


def group_near_duplicates(phashes: Sequence[int], threshold: int) -> list[list[int]]:
    """Indices of `phashes` grouped transitively by Hamming distance <= `threshold`.

    Every pair is compared, vectorised: XOR and popcount over blocks of the upper triangle
    (14,000 hashes: ~10^8 pairs, about a second; benchmarks/near_duplicates.py). The pairs
    found are joined with union-find. Groups are sorted lists, in order of their first index.
    """
    hashes = np.array([h & (2**64 - 1) for h in phashes], dtype=np.uint64)
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # Path halving.
            i = parent[i]
        return i

    for start in range(0, len(hashes), _BLOCK):
        block = hashes[start : start + _BLOCK]
        distances = np.bitwise_count(block[:, None] ^ hashes[None, start:])
        rows, columns = np.nonzero(distances <= threshold)
        for i, j in zip(rows + start, columns + start, strict=True):
            if i < j:
                root_i, root_j = find(int(i)), find(int(j))
                if root_i != root_j:
                    parent[max(root_i, root_j)] = min(root_i, root_j)
    groups: dict[int, list[int]] = collections.defaultdict(list)
    for i in range(len(hashes)):
        groups[find(i)].append(i)
    return list(groups.values())


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes."""
    return (a ^ b).bit_count()


def class_split_counts(plan: SplitPlan) -> dict[str, dict[str, int]]:
    """class -> split -> kept examples, for the classes that kept any."""
    counts: dict[str, dict[str, int]] = collections.defaultdict(
        lambda: dict.fromkeys(plan.splits, 0)
    )
    for name, records in plan.splits.items():
        for record in records:
            counts[record.label][name] += 1
    return dict(sorted(counts.items()))


def classes_missing_a_split(plan: SplitPlan) -> dict[str, list[str]]:
    """class -> the splits it has no example in (only classes that kept some photos)."""
    return {
        label: [name for name, n in counts.items() if n == 0]
        for label, counts in class_split_counts(plan).items()
        if 0 in counts.values()
    }


def _check_fractions(fractions: Mapping[str, float]) -> None:
    if not fractions or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative, got {dict(fractions)}")
    if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)}")
