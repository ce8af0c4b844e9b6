"""trainer/evaluate.py on hand-built examples whose metrics are known exactly."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from trainer import evaluate

NAMES = ["fox", "wolf", "deer", "elk", "nutria"]  # nutria: no examples, never predicted
# (true label, model probabilities); the expected outcome is noted on each row.
EXAMPLES = [
    (0, [0.7, 0.1, 0.1, 0.1, 0.0]),  # right
    (1, [0.5, 0.3, 0.1, 0.1, 0.0]),  # wrong (fox), 2nd
    (2, [0.1, 0.2, 0.3, 0.4, 0.0]),  # wrong (elk), 2nd
    (3, [0.4, 0.3, 0.2, 0.1, 0.0]),  # wrong (fox), 4th
    (0, [0.25, 0.25, 0.25, 0.25, 0.0]),  # a tie: the lowest index (fox) wins, so right
]


class ProbabilitiesInPixels(tf_keras.Model):
    """Returns channel 0 of each image's first row: the test writes the probabilities there."""

    def call(self, images, training=False):
        return images[:, 0, :, 0]


def _dataset(examples, batch_size=2):
    labels = np.array([label for label, _ in examples], np.int64)
    probabilities = np.array([p for _, p in examples], np.float32)
    images = np.zeros([len(examples), 2, probabilities.shape[1], 3], np.float32)
    images[:, 0, :, 0] = probabilities
    images[:, 1] = np.arange(len(examples))[:, None, None] / 10  # tells the examples apart
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


@pytest.fixture(scope="module")
def result():
    return evaluate.evaluate_model(
        ProbabilitiesInPixels(), _dataset(EXAMPLES), NAMES, top_k=2, num_samples=4
    )


def test_accuracy_and_loss(result):
    metrics = result.metrics
    assert metrics["num_examples"] == 5  # batches of 2, 2 and 1
    assert metrics["top1"] == pytest.approx(2 / 5)
    assert metrics["top2"] == pytest.approx(4 / 5)  # all but the 4th-ranked one
    expected_loss = -np.mean(np.log([0.7, 0.3, 0.3, 0.1, 0.25]))
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_loss_equals_keras_cross_entropy(result):
    labels = [label for label, _ in EXAMPLES]
    probabilities = [p for _, p in EXAMPLES]
    keras_loss = tf_keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    assert result.metrics["loss"] == pytest.approx(float(keras_loss), rel=1e-5)


def test_confusion_rows_are_true_classes(result):
    expected = np.zeros([5, 5], np.int64)
    expected[0, 0] = 2
    expected[1, 0] = 1
    expected[2, 3] = 1
    expected[3, 0] = 1
    np.testing.assert_array_equal(result.confusion, expected)


def test_per_class_scores_are_zero_not_nan_without_predictions_or_support(result):
    per_class = result.metrics["per_class"]
    assert per_class["fox"] == {"precision": 0.5, "recall": 1.0, "support": 2}
    assert per_class["elk"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert per_class["wolf"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert per_class["nutria"] == {"precision": 0.0, "recall": 0.0, "support": 0}


def test_samples_mix_wrong_and_right(result):
    # 3 wrong and 2 right examples, 4 kept: the first 2 wrong, then both right ones.
    np.testing.assert_array_equal(result.labels, [1, 2, 0, 0])
    np.testing.assert_allclose(result.probabilities[0], EXAMPLES[1][1])
    np.testing.assert_allclose(result.images[:, 1, 0, 0], [0.1, 0.2, 0.0, 0.4])
    assert result.images.dtype == np.float32 and result.images.shape == (4, 2, 5, 3)


def test_few_wrong_examples_leave_room_for_right_ones():
    examples = [(0, [0.9, 0.1, 0.0, 0.0, 0.0])] * 6 + [(1, [0.9, 0.1, 0.0, 0.0, 0.0])]
    result = evaluate.evaluate_model(ProbabilitiesInPixels(), _dataset(examples), NAMES, top_k=1)
    np.testing.assert_array_equal(result.labels, [1, 0, 0, 0, 0, 0, 0])
    assert result.metrics["top1"] == pytest.approx(6 / 7)


@pytest.mark.parametrize(
    ("examples", "names", "top_k", "message"),
    [
        (EXAMPLES, NAMES, 6, "top_k=6 must be between 1 and the 5 classes"),
        (EXAMPLES, NAMES[:4], 2, r"model output shape \(2, 5\) does not match 2 labels and 4"),
        ([(7, [1.0, 0, 0, 0, 0])], NAMES, 1, r"labels \[7\] are outside \[0, 5\)"),
        ([], NAMES, 1, "no examples"),
        ([(0, [np.nan, 0, 0, 0, 0])], NAMES, 1, "NaN or infinite probabilities"),
    ],
    ids=["top_k", "output_width", "label_range", "empty", "nan"],
)
def test_bad_inputs_raise_value_error(examples, names, top_k, message):
    if examples:
        dataset = _dataset(examples)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(
            (np.zeros([0, 2, 5, 3], np.float32), np.zeros([0], np.int64))
        ).batch(2)
    with pytest.raises(ValueError, match=message):
        evaluate.evaluate_model(ProbabilitiesInPixels(), dataset, names, top_k=top_k)


def test_score_ranked_counts_top1_topk_and_agreement_by_hand():
    ranked = np.array([[2, 0, 1], [1, 2, 0], [0, 1, 2], [2, 1, 0]])
    labels = np.array([2, 2, 1, 0])
    reference = np.array([2, 0, 0, 2])
    scores = evaluate.score_ranked(ranked, labels, reference)
    # top-1 right: example 0 only; in the top 3: all; same top-1 as the reference: 0, 2, 3.
    assert scores == {"top1": 0.25, "top3": 1.0, "agreement": 0.75}
    assert evaluate.score_ranked(ranked[:, :2], labels)["top2"] == 0.75
    assert evaluate.score_ranked(ranked, labels)["agreement"] is None


def test_rank_classes_breaks_ties_by_class_index_like_argmax():
    probabilities = np.array([[0.2, 0.4, 0.4], [0.5, 0.1, 0.4]])
    np.testing.assert_array_equal(evaluate.rank_classes(probabilities, 2), [[1, 2], [0, 2]])


def test_exports_table_has_one_row_per_format_and_dashes_for_missing_numbers():
    table = evaluate.format_exports_table(
        {
            "saved_model": {"size_mb": 9.5, "top1": 0.5, "top5": 0.75, "agreement": None},
            "tflite_int8": {"size_mb": 0.6321, "top1": 0.5, "top5": 1.0, "agreement": 0.9,
                            "latency_ms": 0.4912},
        }
    )  # fmt: skip
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| format | MB | top-1 | top-5 |")
    assert lines[2] == "| saved_model | 9.50 | 0.5000 | 0.7500 | - | - |"
    assert lines[3] == "| tflite_int8 | 0.63 | 0.5000 | 1.0000 | 0.9000 | 0.49 |"
