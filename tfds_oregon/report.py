"""Pictures of a build, written beside its JSON summary (in the dataset's version folder).

- `class_counts.png`: per class, a stacked bar of kept / near-duplicate / duplicate /
  conflict / unreadable files;
- `near_duplicates.png`: a contact sheet, one row per group: every cross-class conflict first,
  then the largest near-duplicate groups; each thumbnail titled with its class and file name,
  the kept photo marked.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # Files only: no display needed (a build may run on a headless VM).
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from tfds_oregon.summary import COLUMNS, BuildSummary  # noqa: E402

CLASS_COUNTS = "class_counts.png"
NEAR_DUPLICATES = "near_duplicates.png"
PICTURES = (CLASS_COUNTS, NEAR_DUPLICATES)
_COLOURS = {
    "kept": "#4c9f70",
    "near_duplicate": "#f2b134",
    "duplicate": "#ed6a3a",
    "conflict": "#b8336a",
    "unreadable": "#7a7a7a",
}
_MAX_ROWS = 24  # Conflicts first, then the largest groups.
_MAX_COLUMNS = 6
_THUMB_INCHES = 1.6


def write_report(
    summary: BuildSummary,
    groups: Sequence[Sequence[str]],
    thumbnail: Callable[[str], Image.Image | None],
    out_dir: str,
) -> list[str]:
    """Writes both pictures into `out_dir` (local or gs://); returns their paths.

    Args:
      summary: the build's summary.
      groups: every group of 2+ near-duplicates, as file names.
      thumbnail: file name -> small RGB image (None if it cannot be read again).
      out_dir: where to write.
    """
    paths = [posixpath.join(out_dir, name) for name in PICTURES]
    _save(class_counts_figure(summary), paths[0])
    _save(contact_sheet(summary, groups, thumbnail), paths[1])
    return paths


def class_counts_figure(summary: BuildSummary) -> plt.Figure:
    """Horizontal stacked bars, one per class, of the summary's columns."""
    names = list(summary.counts)
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(names) + 1.4), layout="constrained")
    left = [0] * len(names)
    for column in COLUMNS:
        values = [summary.counts[name][column] for name in names]
        ax.barh(names, values, left=left, color=_COLOURS[column], label=column.replace("_", "-"))
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("files")
    totals = summary.totals()
    ax.set_title(
        "oregon_wildlife build: "
        + ", ".join(f"{totals[c]} {c.replace('_', '-')}" for c in COLUMNS),
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8, ncols=len(COLUMNS) // 2 + 1)
    return fig


def contact_sheet(
    summary: BuildSummary,
    groups: Sequence[Sequence[str]],
    thumbnail: Callable[[str], Image.Image | None],
) -> plt.Figure:
    """One row per group (conflicts, then the largest groups), one titled thumbnail per file."""
    kept = set(summary.near_duplicates.values()) | set(summary.duplicates.values())
    rows = [("conflict: " + " / ".join(c["classes"]), c["files"]) for c in summary.conflicts]
    conflicting = {f for c in summary.conflicts for f in c["files"]}
    in_class = sorted(
        (g for g in groups if not set(g) & conflicting), key=lambda g: (-len(g), list(g))
    )
    rows += [(f"near-duplicates ({len(g)})", list(g)) for g in in_class]
    more = max(0, len(rows) - _MAX_ROWS)
    rows = rows[:_MAX_ROWS]
    if not rows:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no near-duplicates and no cross-class conflicts", ha="center")
        return fig
    columns = min(_MAX_COLUMNS, max(len(files) for _, files in rows))
    fig, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(_THUMB_INCHES * columns, (_THUMB_INCHES + 0.45) * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for row, (title, files) in zip(axes, rows, strict=True):
        row[0].set_ylabel(title, fontsize=7)
        for ax, name in zip(row, [*files[:columns], *[None] * columns], strict=False):
            ax.set_xticks([])
            ax.set_yticks([])
            if name is None:
                ax.axis("off")
                continue
            image = thumbnail(name)
            if image is not None:
                ax.imshow(image)
            label, _, base = name.partition("/")
            mark = " (kept)" if name in kept else ""
            ax.set_title(f"{label}\n{base[:22]}{mark}", fontsize=6)
    if more:
        fig.suptitle(f"+{more} more groups not shown (see the JSON summary)", fontsize=8)
    return fig


def _save(fig: plt.Figure, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())
