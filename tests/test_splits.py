"""tfds_oregon.splits: near-duplicate groups (union-find), one keeper per group, stable splits."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random

import numpy as np
import pytest

from tfds_oregon import splits

T = splits.NEAR_DUPLICATE_BITS


def _record(label: str, i: int, phash: int | None = None, pixels: int = 100) -> splits.Record:
    byte_hash = hashlib.sha256(f"{label}/{i}".encode()).hexdigest()
    if phash is None:
        phash = int.from_bytes(hashlib.sha256(byte_hash.encode()).digest()[:8], "big")
    return splits.Record(f"{label}/{i:04d}.jpg", label, byte_hash, phash, pixels)


def _flip(h: int, bits: list[int]) -> int:
    return h ^ sum(1 << b for b in bits)


def _where(plan: splits.SplitPlan) -> dict[str, str]:
    """file name -> split, for every kept record."""
    return {r.file_name: name for name, records in plan.splits.items() for r in records}


def test_groups_are_transitive_whatever_the_order():
    base = 0x0123_4567_89AB_CDEF
    a, b = base, _flip(base, list(range(T)))  # a~b
    c = _flip(b, list(range(T, 2 * T)))  # b~c, but a and c are 2T bits apart.
    far = ~base & (2**64 - 1)
    for order in itertools.permutations([a, b, c, far]):
        groups = splits.group_near_duplicates(list(order), T)
        sizes = sorted(len(g) for g in groups)
        assert sizes == [1, 3], order


def test_grouping_matches_brute_force_on_random_hashes():
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, 1200, dtype=np.int64)]
    for i in range(0, 1200, 7):  # Plant near-copies at distances 0..T+2 (some just too far).
        bits = rng.choice(64, i % (T + 3), replace=False).tolist()
        hashes[(i * 31) % 1200] = _flip(hashes[i], bits)
    groups = splits.group_near_duplicates(hashes, T)
    found = {frozenset(g) for g in groups}
    # Brute force: connected components of the "within T bits" graph.
    parent = list(range(len(hashes)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(len(hashes)), 2):
        if splits.hamming(hashes[i], hashes[j]) <= T:
            parent[root(j)] = root(i)
    expected: dict[int, set[int]] = {}
    for i in range(len(hashes)):
        expected.setdefault(root(i), set()).add(i)
    assert found == {frozenset(g) for g in expected.values()}
    assert sum(len(g) > 1 for g in groups) > 50  # The planted copies were found.


def test_group_keeps_its_largest_photo_and_ties_go_to_the_smallest_content_hash():
    base = 0xF0F0_F0F0_0F0F_0F0F
    group = [
        _record("elk", 1, base, pixels=640 * 480),
        _record("elk", 2, _flip(base, [1, 2]), pixels=1600 * 1200),  # Largest: kept.
        _record("elk", 3, _flip(base, [5]), pixels=800 * 600),
    ]
    plan = splits.plan_splits(group)
    assert list(_where(plan)) == ["elk/0002.jpg"]
    assert plan.dropped == {"elk/0001.jpg": "elk/0002.jpg", "elk/0003.jpg": "elk/0002.jpg"}
    tie = [_record("elk", i, _flip(base, [i]), pixels=100) for i in range(4)]
    kept = min(tie, key=lambda r: r.byte_hash)
    assert list(_where(splits.plan_splits(tie))) == [kept.file_name]


def test_group_across_classes_keeps_none_and_names_the_class_pair():
    base = 0x1234_5678_9ABC_DEF0
    records = [
        _record("gray_fox", 1, base),
        _record("red_fox", 1, _flip(base, [3, 9])),
        _record("red_fox", 2, _flip(base, [3, 9, 12])),
        *[_record("red_fox", i) for i in range(10, 20)],
    ]
    plan = splits.plan_splits(records)
    assert plan.conflicts == [
        splits.Conflict(("gray_fox", "red_fox"), ("gray_fox/0001.jpg", "red_fox/0001.jpg",
                                                  "red_fox/0002.jpg"))
    ]  # fmt: skip
    assert not {"gray_fox/0001.jpg", "red_fox/0001.jpg", "red_fox/0002.jpg"} & set(_where(plan))
    assert len(_where(plan)) == 10


def test_split_ignores_input_order():
    records = [_record(label, i) for label in ("elk", "raven", "seals") for i in range(40)]
    reference = _where(splits.plan_splits(records))
    for seed in range(3):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        assert _where(splits.plan_splits(shuffled)) == reference


def test_adding_or_removing_photos_moves_no_other_photo():
    records = [_record("elk", i) for i in range(300)]
    before = _where(splits.plan_splits(records))
    after_adding = _where(
        splits.plan_splits(records + [_record("elk", i) for i in range(300, 310)])
    )
    after_removing = _where(splits.plan_splits(records[10:]))
    assert {k: after_adding[k] for k in before} == before
    assert after_removing == {k: v for k, v in before.items() if k in after_removing}
    assert len(after_removing) == 290


def test_split_depends_on_content_not_names():
    records = [_record("elk", i) for i in range(50)]
    renamed = [dataclasses.replace(r, file_name="elk/x" + r.file_name[4:]) for r in records]

    def by_hash(plan):
        return {r.byte_hash: name for name, rs in plan.splits.items() for r in rs}

    assert by_hash(splits.plan_splits(renamed)) == by_hash(splits.plan_splits(records))


def test_large_classes_stay_close_to_80_10_10():
    records = [_record(label, i) for label in ("deer", "elk", "raven") for i in range(700)]
    counts = splits.class_split_counts(splits.plan_splits(records))
    for label, per_split in counts.items():
        shares = {name: n / 700 for name, n in per_split.items()}
        assert abs(shares["train"] - 0.8) < 0.04, (label, shares)
        assert abs(shares["validation"] - 0.1) < 0.03, (label, shares)
        assert abs(shares["test"] - 0.1) < 0.03, (label, shares)


def test_class_without_a_held_out_example_is_named():
    records = [_record("elk", i) for i in range(100)]
    lonely = next(
        _record("ringtail", i) for i in range(100)
        if splits.split_of(_record("ringtail", i).byte_hash, splits.DEFAULT_FRACTIONS) == "train"
    )  # fmt: skip
    plan = splits.plan_splits([*records, lonely])
    assert splits.classes_missing_a_split(plan) == {"ringtail": ["validation", "test"]}


@pytest.mark.parametrize("fractions", [{"train": 0.8, "test": 0.1}, {"train": 1.2, "test": -0.2}])
def test_bad_fractions_are_named(fractions):
    with pytest.raises(ValueError, match="split fractions"):
        splits.plan_splits([], fractions)
