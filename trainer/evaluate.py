"""Evaluates a classifier on a dataset: accuracy, loss, per-class scores, confusion, samples.

One pass over the dataset collects everything the run summary and the figures need. Metrics are
accumulated in NumPy on the host (float64 sums, integer counts), so they are exact whatever the
batch size, and the last, partial batch counts like any other.

Definitions:
  top1, topK: fraction of examples whose true class is among the K most probable ones. Ties
    are broken by class index (the lower index ranks first), as `np.argmax` does, so top1
    always equals the trace of the confusion matrix over its sum.
  loss: mean cross-entropy -log p(true class), probabilities clipped to [1e-7, 1] like Keras;
    no label smoothing, whatever the training loss used.
  per_class precision: correct / predicted as the class; recall: correct / support. A class
    that is never predicted (or has no examples) gets precision (or recall) 0.0, not NaN.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from trainer import progress

_EPSILON = 1e-7  # tf_keras.backend.epsilon(): the clip sparse_categorical_crossentropy uses.


@dataclasses.dataclass
class EvaluationResult:
    """What `evaluate_model` found.

    Attributes:
      metrics: JSON-ready dict: `top1`, `top{k}`, `loss`, `num_examples`, and `per_class`
        {class name: {precision, recall, support}}.
      confusion: int64 [C, C] counts; rows are true classes, columns predicted classes.
      images: float32 [N, H, W, 3] in [0, 1], a few examples for the predictions figure: the
        first wrong ones (at most half, unless too few are right), then the first right ones.
      probabilities: float32 [N, C] the model's output for `images`.
      labels: int64 [N] true classes of `images`.
    """

    metrics: dict
    confusion: np.ndarray
    images: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass
class _Totals:
    """Running sums over batches."""

    num_classes: int
    top_k: int
    confusion: np.ndarray = dataclasses.field(init=False)
    top_k_correct: int = 0
    loss_sum: float = 0.0

    def __post_init__(self):
        self.confusion = np.zeros([self.num_classes, self.num_classes], np.int64)

    def add(self, probabilities: np.ndarray, labels: np.ndarray) -> None:
        # A stable sort of -p ranks equal probabilities by class index, matching np.argmax.
        ranked = np.argsort(-probabilities, axis=1, kind="stable")
        np.add.at(self.confusion, (labels, ranked[:, 0]), 1)
        self.top_k_correct += int((ranked[:, : self.top_k] == labels[:, None]).any(axis=1).sum())
        p_true = probabilities[np.arange(len(labels)), labels].astype(np.float64)
        self.loss_sum += float(-np.log(np.clip(p_true, _EPSILON, 1.0)).sum())


class _SampleKeeper:
    """Keeps the first `num_samples` right and wrong examples, to show a mix of both."""

    def __init__(self, num_samples: int):
        self.num_samples = num_samples
        self.kept = {True: [], False: []}  # correct? -> [(image, probabilities, label)]

    def add(self, images: np.ndarray, probabilities: np.ndarray, labels: np.ndarray) -> None:
        correct = probabilities.argmax(axis=1) == labels
        for i in range(len(labels)):
            group = self.kept[bool(correct[i])]
            if len(group) < self.num_samples:
                group.append((images[i], probabilities[i], labels[i]))

    @property
    def full(self) -> bool:
        return all(len(group) >= self.num_samples for group in self.kept.values())

    def samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        wrong, right = self.kept[False], self.kept[True]
        num_wrong = min(len(wrong), max(self.num_samples // 2, self.num_samples - len(right)))
        chosen = wrong[:num_wrong] + right[: self.num_samples - num_wrong]
        images, probabilities, labels = zip(*chosen, strict=True)
        return (
            np.stack(images).astype(np.float32),
            np.stack(probabilities).astype(np.float32),
            np.asarray(labels, np.int64),
        )


def evaluate_model(
    model: tf_keras.Model,
    dataset: tf.data.Dataset,
    class_names: Sequence[str],
    top_k: int = 5,
    num_samples: int = 8,
) -> EvaluationResult:
    """Runs `model` over `dataset` once and scores its predictions.

    Args:
      model: maps float32 [B, H, W, 3] images in [0, 1] to [B, C] softmax probabilities.
      dataset: finite, yields (images, integer labels) batches.
      class_names: the C class names, in label order.
      top_k: K of the top-K accuracy, reported as metrics[f"top{top_k}"].
      num_samples: how many examples to keep for the predictions figure.

    Returns:
      An `EvaluationResult`; see the module docstring for the metric definitions.

    Raises:
      ValueError: `top_k` exceeds the number of classes, `num_samples` < 1, the model's output
        width differs from len(class_names), it outputs NaN, a label is out of range, or the
        dataset is empty.
    """
    num_classes = len(class_names)
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be at least 1")
    if not 1 <= top_k <= num_classes:
        raise ValueError(f"top_k={top_k} must be between 1 and the {num_classes} classes")
    predict = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    totals, keeper = _Totals(num_classes, top_k), _SampleKeeper(num_samples)
    batches = int(dataset.cardinality())
    for images, labels in progress.track(
        dataset, "Evaluating", total=batches if batches > 0 else None, unit="batches"
    ):
        probabilities = tf.cast(predict(images), tf.float32).numpy()
        labels = _check_batch(probabilities, labels.numpy().astype(np.int64), num_classes)
        totals.add(probabilities, labels)
        if not keeper.full:
            keeper.add(images.numpy(), probabilities, labels)
    num_examples = int(totals.confusion.sum())
    if num_examples == 0:
        raise ValueError("the evaluation dataset yielded no examples")
    metrics = {
        "top1": float(np.trace(totals.confusion) / num_examples),
        f"top{top_k}": totals.top_k_correct / num_examples,
        "loss": totals.loss_sum / num_examples,
        "num_examples": num_examples,
        "per_class": per_class_scores(totals.confusion, class_names),
    }
    logging.info(
        "Evaluated %d examples: top1 %.4f, top%d %.4f, loss %.4f",
        num_examples,
        metrics["top1"],
        top_k,
        metrics[f"top{top_k}"],
        metrics["loss"],
    )
    return EvaluationResult(metrics, totals.confusion, *keeper.samples())


def _check_batch(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = labels.reshape(-1)
    if probabilities.shape != (len(labels), num_classes):
        raise ValueError(
            f"model output shape {probabilities.shape} does not match {len(labels)} labels "
            f"and {num_classes} class names"
        )
    if not np.isfinite(probabilities).all():
        raise ValueError("the model output NaN or infinite probabilities: its weights diverged")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = sorted({int(x) for x in labels if not 0 <= x < num_classes})
        raise ValueError(f"labels {bad} are outside [0, {num_classes}) (the class names)")
    return labels


def per_class_scores(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, dict]:
    """{name: {precision, recall, support}} from a confusion matrix (rows = true classes).

    A class never predicted gets precision 0.0; a class without examples gets recall 0.0.
    """
    correct = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }


def score_ranked(
    ranked: np.ndarray, labels: np.ndarray, reference_top1: np.ndarray | None = None
) -> dict:
    """Top-1, top-K and agreement of one exported model's predictions on a labelled split.

    Args:
      ranked: int [N, K] class indices, most probable first (K >= 1).
      labels: int [N] true classes.
      reference_top1: int [N] another model's top-1 on the same examples, in the same order.

    Returns:
      {"top1", f"top{K}", "agreement"}: agreement is the fraction of examples whose top-1
      equals `reference_top1` (None without a reference).
    """
    ranked, labels = np.asarray(ranked), np.asarray(labels).reshape(-1)
    if len(ranked) != len(labels) or not len(labels):
        raise ValueError(f"{len(ranked)} predictions for {len(labels)} labels")
    top_k = ranked.shape[1]
    agreement = None
    if reference_top1 is not None:
        agreement = float(np.mean(ranked[:, 0] == np.asarray(reference_top1)))
    return {
        "top1": float(np.mean(ranked[:, 0] == labels)),
        f"top{top_k}": float(np.mean((ranked == labels[:, None]).any(axis=1))),
        "agreement": agreement,
    }


def rank_classes(probabilities: np.ndarray, top_k: int) -> np.ndarray:
    """int [N, top_k]: class indices by decreasing probability, ties by class index."""
    return np.argsort(-np.asarray(probabilities), axis=1, kind="stable")[:, :top_k]


def format_exports_table(exports: dict[str, dict]) -> str:
    """The metrics.json `exports` table as Markdown: format, MB, top-1, top-5, agreement, ms."""

    def number(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        "| format | MB | top-1 | top-5 | top-1 agreement with SavedModel | median ms (1 thread) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in exports.items():
        cells = [
            name,
            number(row.get("size_mb"), 2),
            number(row.get("top1"), 4),
            number(row.get("top5"), 4),
            number(row.get("agreement"), 4),
            number(row.get("latency_ms"), 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
