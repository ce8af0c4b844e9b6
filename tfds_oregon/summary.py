"""The build summary: what was kept and dropped per class, the split table, what was ignored.

It is stored as JSON in the dataset's `metadata.json` (via `tfds.core.MetadataDict`) so that it
travels with the data, and printed as tables at the end of a build. It holds nothing that
changes between two builds of the same archive (no times, no paths outside the archive).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Collection, Mapping, Sequence

from tfds_oregon import splits
from tfds_oregon.classes import CLASS_NAMES
from tfds_oregon.splits import SplitPlan

METADATA_KEY = "build_summary"
COLUMNS = ("kept", "near_duplicate", "duplicate", "conflict", "unreadable")
_IGNORED_SHOWN = 10
_LISTED = 5  # Conflicts, unreadable files and warnings shown in the printed summary.


@dataclasses.dataclass(frozen=True)
class BuildSummary:
    """Counts per class, and the names behind every count that is not `kept`.

    Attributes:
      counts: class -> column (`COLUMNS`) -> number of files.
      class_splits: class -> split -> kept examples.
      split_sizes: split name -> number of examples.
      unreadable: file name -> why it could not be read or decoded.
      duplicates: exact copy dropped (same bytes or same pixels) -> the file kept instead.
      near_duplicates: near-copy dropped (re-encoded, resized, ...) -> the file kept instead.
      conflicts: groups found under several classes (all dropped): {"classes", "files"}.
      ignored: archive paths that are not image candidates (.DS_Store, .h5, ...).
      warnings: what a user should know (a class with no validation or test example).
      near_duplicate_bits: the perceptual-hash threshold used.
    """

    counts: dict[str, dict[str, int]]
    class_splits: dict[str, dict[str, int]]
    split_sizes: dict[str, int]
    unreadable: dict[str, str]
    duplicates: dict[str, str]
    near_duplicates: dict[str, str]
    conflicts: list[dict[str, list[str]]]
    ignored: list[str]
    warnings: list[str]
    near_duplicate_bits: int

    def to_dict(self) -> dict:
        """A JSON-serialisable copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> BuildSummary:
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})

    def totals(self) -> dict[str, int]:
        return {column: sum(c[column] for c in self.counts.values()) for column in COLUMNS}


def create_summary(
    plan: SplitPlan,
    labels: Mapping[str, str],
    unreadable: Mapping[str, str],
    ignored: Sequence[str],
    exact: Collection[str],
    threshold: int = splits.NEAR_DUPLICATE_BITS,
) -> BuildSummary:
    """Builds the summary of one build.

    Args:
      plan: the split plan (kept records, dropped copies, conflicts).
      labels: file name -> class, for every image candidate (readable or not).
      unreadable: file name -> reason, for the candidates that could not be read.
      ignored: archive paths that were not image candidates.
      exact: the dropped copies that are exact duplicates of their kept photo.
      threshold: the near-duplicate threshold the plan used.
    """
    counts = {name: dict.fromkeys(COLUMNS, 0) for name in CLASS_NAMES}
    for records in plan.splits.values():
        for record in records:
            counts[record.label]["kept"] += 1
    for file_name in plan.dropped:
        counts[labels[file_name]]["duplicate" if file_name in exact else "near_duplicate"] += 1
    for conflict in plan.conflicts:
        for file_name in conflict.file_names:
            counts[labels[file_name]]["conflict"] += 1
    for file_name in unreadable:
        counts[labels[file_name]]["unreadable"] += 1
    class_splits = splits.class_split_counts(plan)
    return BuildSummary(
        counts=counts,
        class_splits=class_splits,
        split_sizes={name: len(records) for name, records in plan.splits.items()},
        unreadable=dict(sorted(unreadable.items())),
        duplicates={k: v for k, v in plan.dropped.items() if k in exact},
        near_duplicates={k: v for k, v in plan.dropped.items() if k not in exact},
        conflicts=[
            {"classes": list(c.classes), "files": list(c.file_names)} for c in plan.conflicts
        ],
        ignored=sorted(ignored),
        warnings=_warnings(plan),
        near_duplicate_bits=threshold,
    )


def _warnings(plan: SplitPlan) -> list[str]:
    return [
        f"class {label} has no {' and no '.join(missing)} example "
        f"({sum(splits.class_split_counts(plan)[label].values())} kept)"
        for label, missing in splits.classes_missing_a_split(plan).items()
    ]


def format_table(summary: BuildSummary) -> str:
    """The summary as fixed-width tables (counts, then splits per class), then the details."""
    split_names = list(summary.split_sizes)
    header = ("class", *COLUMNS, *split_names)
    rows = []
    for name, c in summary.counts.items():
        per_split = summary.class_splits.get(name, dict.fromkeys(split_names, 0))
        kept = max(c["kept"], 1)
        cells = [f"{per_split[s]} {100 * per_split[s] / kept:3.0f}%" for s in split_names]
        rows.append((name, *(str(c[col]) for col in COLUMNS), *cells))
    total_kept = max(summary.totals()["kept"], 1)
    rows.append(
        (
            "total",
            *(str(v) for v in summary.totals().values()),
            *(f"{summary.split_sizes[s]} {100 * summary.split_sizes[s] / total_kept:3.0f}%"
              for s in split_names),
        )
    )  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells)

    out = [line(header), line(["-" * w for w in widths]), *map(line, rows[:-1]), line(rows[-1])]
    out.append("splits: " + ", ".join(f"{k} {v}" for k, v in summary.split_sizes.items()))
    out += _details(summary)
    out.append(_ignored_line(summary.ignored))
    return "\n".join(out)


def _details(summary: BuildSummary) -> list[str]:
    out = []
    if summary.conflicts:
        pairs = collections.Counter(" / ".join(c["classes"]) for c in summary.conflicts)
        shown = ", ".join(f"{pair} x{n}" for pair, n in pairs.most_common(_LISTED))
        out.append(f"cross-class conflicts ({len(summary.conflicts)} groups): {shown}")
    if summary.unreadable:
        reasons = collections.Counter(r.split(":")[0] for r in summary.unreadable.values())
        shown = ", ".join(f"{r} x{n}" for r, n in reasons.most_common(_LISTED))
        out.append(f"unreadable ({len(summary.unreadable)}): {shown}")
    warnings = summary.warnings
    if len(warnings) > _LISTED:  # All of them are in the metadata; the console gets a few.
        warnings = [*warnings[:_LISTED], f"... and {len(warnings) - _LISTED} more like these"]
    out += [f"warning: {w}" for w in warnings]
    return out


def _ignored_line(ignored: Sequence[str]) -> str:
    if not ignored:
        return "ignored entries: none"
    by_name = collections.Counter(path.rsplit("/", 1)[-1] for path in ignored)
    shown = [f"{name} x{n}" if n > 1 else name for name, n in by_name.most_common(_IGNORED_SHOWN)]
    more = len(by_name) - len(shown)
    return (
        f"ignored entries ({len(ignored)}): "
        + ", ".join(shown)
        + (f", +{more} more" if more else "")
    )
