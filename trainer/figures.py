"""Figures a person would rather look at than read: the confusion matrix and sample predictions.

Figures are built as `matplotlib.figure.Figure` objects and rendered by the Agg canvas into an
in-memory PNG, never through pyplot: no display is needed, no global figure state leaks between
calls, and the PNG is then written atomically to a local or gs:// path by `outputs`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainer import outputs

RIGHT_COLOR = "tab:green"
WRONG_COLOR = "tab:red"
_OTHER_COLOR = "0.75"
_DPI = 100


def render_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, rendered by Agg, cropped to what was drawn (no label cut off)."""
    FigureCanvasAgg(figure)  # attaches itself to the figure
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.15)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- confusion matrix


def create_confusion_figure(confusion: np.ndarray, class_names: Sequence[str]) -> Figure:
    """A confusion-matrix heat map: colour = share of the true class's row, text = counts.

    Rows are true classes, columns predicted classes; the title gives the overall accuracy.
    """
    confusion = np.asarray(confusion)
    num_classes = len(class_names)
    if confusion.shape != (num_classes, num_classes):
        raise ValueError(f"confusion shape {confusion.shape} does not match {num_classes} classes")
    support = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)
    side = max(6.0, 0.5 * num_classes + 3.0)
    figure = Figure(figsize=(side + 1.5, side), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.04, label="share of the true class")
    ticks = np.arange(num_classes)
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    total = int(confusion.sum())
    accuracy = np.trace(confusion) / total if total else 0.0
    axes.set_title(f"Confusion matrix: {total} examples, accuracy {accuracy:.1%}")
    font_size = 8 if num_classes <= 25 else 6
    for (row, column), count in np.ndenumerate(confusion):
        if count:
            color = "white" if shares[row, column] > 0.5 else "black"
            axes.text(
                column, row, str(count), ha="center", va="center", fontsize=font_size, color=color
            )
    return figure


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], path: str) -> None:
    """Draws the confusion matrix (see `create_confusion_figure`) into a PNG at `path`."""
    outputs.write_bytes_atomic(path, render_png(create_confusion_figure(confusion, class_names)))


# ----------------------------------------------------------------------------- predictions


def prediction_title(probabilities: np.ndarray, label: int, class_names: Sequence[str]) -> str:
    """'predicted confidence% (true)', e.g. 'red_fox 87% (gray_fox)'."""
    predicted = int(np.argmax(probabilities))
    confidence = 100 * probabilities[predicted]
    return f"{class_names[predicted]} {confidence:.0f}% ({class_names[label]})"


def _bar_classes(probabilities: np.ndarray, label: int, top_k: int) -> list[int]:
    # The top-k classes, most probable first; the true class is added last if it is not among
    # them, so its bar is always visible.
    ranked = [int(i) for i in np.argsort(-probabilities, kind="stable")[:top_k]]
    return ranked if label in ranked else [*ranked, int(label)]


def _draw_image(axes, image: np.ndarray, title: str, color: str) -> None:
    axes.imshow(np.clip(image, 0.0, 1.0))
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_color(color)
        spine.set_linewidth(3)
    axes.set_title(title, color=color, fontsize=10)


def _draw_bars(axes, probabilities, label, class_names, top_k) -> None:
    classes = _bar_classes(probabilities, label, top_k)
    predicted = classes[0]
    colors = [
        RIGHT_COLOR if c == label else WRONG_COLOR if c == predicted else _OTHER_COLOR
        for c in classes
    ]
    positions = np.arange(len(classes))
    axes.barh(positions, probabilities[classes], color=colors)
    axes.set_yticks(positions, labels=[class_names[c] for c in classes], fontsize=8)
    for tick_label, color in zip(axes.get_yticklabels(), colors, strict=True):
        # Coloured names keep the truth visible even when its bar is too short to see.
        tick_label.set_color("black" if color == _OTHER_COLOR else color)
    axes.invert_yaxis()  # most probable on top
    axes.set_xlim(0.0, 1.0)
    axes.set_xticks([0.0, 0.5, 1.0], labels=["0", "50%", "100%"], fontsize=7)
    axes.grid(axis="x", alpha=0.3)
    axes.tick_params(axis="y", length=0)


def create_predictions_figure(
    images: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    num_images: int = 8,
    top_k: int = 7,
) -> Figure:
    """Sample predictions, drawn like the original MobileNet V2 notebook's figure.

    Each photo is titled "predicted confidence% (true)", green when right and red when wrong,
    beside a bar chart of its `top_k` class probabilities: the true class's bar is green, a
    wrong prediction's bar red. A true class outside the top k gets an extra, last bar.

    Args:
      images: float [N, H, W, 3] in [0, 1].
      probabilities: [N, C] model outputs.
      labels: [N] true classes.
      class_names: the C class names.
      num_images: how many of the N examples to draw (the first ones).
      top_k: bars per example.
    """
    count = min(num_images, len(images))
    if count < 1 or not len(images) == len(probabilities) == len(labels):
        raise ValueError(
            f"need at least one example and as many images ({len(images)}) as probability "
            f"rows ({len(probabilities)}) and labels ({len(labels)}); num_images={num_images}"
        )
    columns = min(count, 2)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(7.5 * columns, 3.2 * rows), dpi=_DPI, layout="constrained")
    grid = figure.add_gridspec(rows, 2 * columns, width_ratios=[1.0, 1.1] * columns)
    for i in range(count):
        row, column = divmod(i, columns)
        p, label = np.asarray(probabilities[i], np.float64), int(labels[i])
        color = RIGHT_COLOR if int(np.argmax(p)) == label else WRONG_COLOR
        title = prediction_title(p, label, class_names)
        _draw_image(figure.add_subplot(grid[row, 2 * column]), images[i], title, color)
        _draw_bars(figure.add_subplot(grid[row, 2 * column + 1]), p, label, class_names, top_k)
    return figure


def plot_predictions(
    images: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str,
    num_images: int = 8,
    top_k: int = 7,
) -> None:
    """Draws sample predictions (see `create_predictions_figure`) into a PNG at `path`."""
    figure = create_predictions_figure(
        images, probabilities, labels, class_names, num_images=num_images, top_k=top_k
    )
    outputs.write_bytes_atomic(path, render_png(figure))
