"""The build summary: what was kept and dropped per class, and which entries were ignored.

It is stored as JSON in the dataset's `metadata.json` (via `tfds.core.MetadataDict`) so that it
travels with the data, and printed as a table at the end of a build.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence

from tfds_oregon.classes import CLASS_NAMES
from tfds_oregon.splits import SplitPlan

METADATA_KEY = "build_summary"
_COLUMNS = ("kept", "unreadable", "duplicate", "cross_class_duplicate")
_IGNORED_SHOWN = 10


@dataclasses.dataclass(frozen=True)
class BuildSummary:
    """Counts per class, and the names behind every count that is not `kept`.

    Attributes:
      counts: class -> column ("kept", "unreadable", ...) -> number of files.
      split_sizes: split name -> number of examples.
      unreadable: file name -> why it could not be decoded.
      duplicates: dropped in-class copy -> the file kept instead.
      cross_class: groups of file names holding one photo under several classes (all dropped).
      ignored: archive paths that are not image candidates (.DS_Store, .h5, ...).
    """

    counts: dict[str, dict[str, int]]
    split_sizes: dict[str, int]
    unreadable: dict[str, str]
    duplicates: dict[str, str]
    cross_class: list[list[str]]
    ignored: list[str]

    def to_dict(self) -> dict:
        """A JSON-serialisable copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> BuildSummary:
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})

    def totals(self) -> dict[str, int]:
        return {column: sum(c[column] for c in self.counts.values()) for column in _COLUMNS}


def create_summary(
    plan: SplitPlan,
    labels: Mapping[str, str],
    unreadable: Mapping[str, str],
    ignored: Sequence[str],
) -> BuildSummary:
    """Builds the summary of one build.

    Args:
      plan: the split plan (kept records and dropped duplicates).
      labels: file name -> class, for every image candidate (readable or not).
      unreadable: file name -> reason, for the candidates that could not be decoded.
      ignored: archive paths that were not image candidates.
    """
    counts = {name: dict.fromkeys(_COLUMNS, 0) for name in CLASS_NAMES}
    for records in plan.splits.values():
        for record in records:
            counts[record.label]["kept"] += 1
    for file_name in unreadable:
        counts[labels[file_name]]["unreadable"] += 1
    for file_name in plan.duplicates:
        counts[labels[file_name]]["duplicate"] += 1
    for group in plan.cross_class:
        for file_name in group:
            counts[labels[file_name]]["cross_class_duplicate"] += 1
    return BuildSummary(
        counts=counts,
        split_sizes={name: len(records) for name, records in plan.splits.items()},
        unreadable=dict(sorted(unreadable.items())),
        duplicates=dict(sorted(plan.duplicates.items())),
        cross_class=[list(group) for group in plan.cross_class],
        ignored=sorted(ignored),
    )


def format_table(summary: BuildSummary) -> str:
    """The summary as a fixed-width table, then the splits and the ignored entries."""
    header = ("class", *_COLUMNS)
    rows = [(name, *(str(c[col]) for col in _COLUMNS)) for name, c in summary.counts.items()]
    rows.append(("total", *(str(v) for v in summary.totals().values())))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells)

    out = [line(header), line(["-" * w for w in widths]), *map(line, rows[:-1]), line(rows[-1])]
    out.append("splits: " + ", ".join(f"{k} {v}" for k, v in summary.split_sizes.items()))
    out.append(_ignored_line(summary.ignored))
    return "\n".join(out)


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
