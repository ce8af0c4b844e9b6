"""tfds_oregon.splits: deduplication and a stratified, deterministic, leak-free split."""

from __future__ import annotations

import random

import pytest

from tfds_oregon import splits


def _record(label: str, i: int, pixels: str | None = None) -> splits.Record:
    return splits.Record(
        f"{label}/{i:03d}.jpg", label, f"bytes-{label}-{i}", pixels or f"px-{label}-{i}"
    )


def _names(plan: splits.SplitPlan) -> dict[str, list[str]]:
    return {name: [r.file_name for r in records] for name, records in plan.splits.items()}


def test_split_is_stratified_80_10_10():
    records = [_record(label, i) for label in ("elk", "raven") for i in range(20)]
    plan = splits.plan_splits(records)
    for name, expected in {"train": 16, "validation": 2, "test": 2}.items():
        for label in ("elk", "raven"):
            assert sum(r.label == label for r in plan.splits[name]) == expected


def test_split_ignores_input_order():
    records = [_record(label, i) for label in ("elk", "raven", "seals") for i in range(13)]
    reference = _names(splits.plan_splits(records))
    for seed in range(5):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        assert _names(splits.plan_splits(shuffled)) == reference


def test_split_depends_on_content_not_names():
    records = [_record("elk", i) for i in range(10)]
    renamed = [
        splits.Record(f"elk/x{r.file_name[4:]}", "elk", r.byte_hash, r.pixel_hash) for r in records
    ]
    by_content = {
        n: [r.byte_hash for r in rs] for n, rs in splits.plan_splits(records).splits.items()
    }
    by_content_renamed = {
        n: [r.byte_hash for r in rs] for n, rs in splits.plan_splits(renamed).splits.items()
    }
    assert {n: set(v) for n, v in by_content.items()} == {
        n: set(v) for n, v in by_content_renamed.items()
    }


def test_in_class_copies_keep_the_first_name_and_cross_class_copies_all_go():
    records = [_record("elk", i) for i in range(5)] + [
        _record("elk", 10, pixels="px-elk-1"),  # Same photo as elk/001 (other bytes).
        _record("deer", 0, pixels="px-shared"),
        _record("elk", 11, pixels="px-shared"),
        _record("elk", 12, pixels="px-shared"),
    ]
    plan = splits.plan_splits(records)
    kept = [r.file_name for rs in plan.splits.values() for r in rs]
    assert sorted(kept) == [f"elk/{i:03d}.jpg" for i in range(5)]
    assert plan.duplicates == {"elk/010.jpg": "elk/001.jpg"}
    assert plan.cross_class == [["deer/000.jpg", "elk/011.jpg", "elk/012.jpg"]]


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, [0, 0, 0]),
        (1, [1, 0, 0]),
        (5, [3, 1, 1]),
        (6, [4, 1, 1]),
        (10, [8, 1, 1]),
        (728, [582, 73, 73]),
    ],
)
def test_split_counts(n, expected):
    assert splits.split_counts(n, splits.DEFAULT_FRACTIONS) == expected


def test_split_counts_never_negative():
    counts = splits.split_counts(1, {"train": 0.0, "validation": 0.5, "test": 0.5})
    assert min(counts) == 0 and sum(counts) == 1


@pytest.mark.parametrize("fractions", [{"train": 0.8, "test": 0.1}, {"train": 1.2, "test": -0.2}])
def test_bad_fractions_are_named(fractions):
    with pytest.raises(ValueError, match="split fractions"):
        splits.plan_splits([], fractions)
