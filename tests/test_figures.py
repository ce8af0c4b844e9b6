"""trainer/figures.py: what the figures say (titles, colours, bars) and that the PNGs are sound."""

import matplotlib.colors
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.tiny_classifier import CLASS_NAMES
from trainer import figures

GREEN = matplotlib.colors.to_rgba(figures.RIGHT_COLOR)
RED = matplotlib.colors.to_rgba(figures.WRONG_COLOR)


def _probabilities(ranking, values):
    """20 probabilities: ranking[i] gets values[i], the rest share what is left equally."""
    p = np.full(20, (1.0 - sum(values)) / (20 - len(values)))
    p[list(ranking)] = values
    return p


@pytest.fixture(scope="module")
def examples():
    """Right; wrong with the truth 2nd; wrong with the truth outside the top 7."""
    labels = np.array([15, 9, 0])  # red_fox, gray_fox, bald_eagle
    probabilities = np.stack(
        [
            _probabilities([15, 9], [0.87, 0.05]),
            _probabilities([15, 9], [0.87, 0.10]),
            _probabilities(range(1, 8), [0.3, 0.2, 0.1, 0.09, 0.08, 0.07, 0.06]),
        ]
    )
    images = np.random.default_rng(0).uniform(size=[3, 24, 32, 3]).astype(np.float32)
    return images, probabilities, labels


def test_titles_say_predicted_confidence_and_truth_in_green_or_red(examples):
    figure = figures.create_predictions_figure(*examples, CLASS_NAMES)
    image_axes = figure.axes[0::2]
    titles = [
        (axes.get_title(), matplotlib.colors.to_rgba(axes.title.get_color())) for axes in image_axes
    ]
    assert titles == [
        ("red_fox 87% (red_fox)", GREEN),
        ("red_fox 87% (gray_fox)", RED),
        ("black_bear 30% (bald_eagle)", RED),
    ]


def test_bars_show_top_7_with_truth_green_and_wrong_prediction_red(examples):
    figure = figures.create_predictions_figure(*examples, CLASS_NAMES)
    bar_axes = figure.axes[1::2]

    def bars(axes):
        names = [label.get_text() for label in axes.get_yticklabels()]
        return [
            (n, p.get_width(), p.get_facecolor()) for n, p in zip(names, axes.patches, strict=True)
        ]

    right = bars(bar_axes[0])
    assert len(right) == 7
    assert right[0][:2] == ("red_fox", pytest.approx(0.87)) and right[0][2] == GREEN
    assert right[1][:2] == ("gray_fox", pytest.approx(0.05))
    assert [width for _, width, _ in right] == sorted((w for _, w, _ in right), reverse=True)

    wrong = bars(bar_axes[1])
    assert (wrong[0][0], wrong[0][2]) == ("red_fox", RED)
    assert (wrong[1][0], wrong[1][2]) == ("gray_fox", GREEN)

    truth_outside = bars(bar_axes[2])
    assert len(truth_outside) == 8  # the top 7, then the true class
    assert [name for name, _, _ in truth_outside] == CLASS_NAMES[1:8] + ["bald_eagle"]
    assert truth_outside[-1][2] == GREEN and truth_outside[0][2] == RED
    names = bar_axes[2].get_yticklabels()
    assert matplotlib.colors.to_rgba(names[-1].get_color()) == GREEN  # truth named in green


def test_num_images_limits_the_grid(examples):
    figure = figures.create_predictions_figure(*examples, CLASS_NAMES, num_images=2, top_k=3)
    assert len(figure.axes) == 4
    assert len(figure.axes[1].patches) == 3


def test_mismatched_inputs_raise(examples):
    images, probabilities, labels = examples
    with pytest.raises(ValueError, match="as many images"):
        figures.create_predictions_figure(images, probabilities[:2], labels, CLASS_NAMES)


def _check_png(path, min_size, max_size):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min_size[0] <= image.width <= max_size[0], image.size
        assert min_size[1] <= image.height <= max_size[1], image.size
        image.load()


def test_predictions_png(tmp_path):
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.full(20, 0.3), size=8)
    labels = rng.integers(0, 20, size=8)
    images = rng.uniform(size=[8, 64, 64, 3])
    path = tmp_path / "figures" / "predictions.png"
    figures.plot_predictions(images, probabilities, labels, CLASS_NAMES, str(path))
    _check_png(path, min_size=(1000, 800), max_size=(2500, 2000))


def test_confusion_matrix_png_and_contents(tmp_path):
    confusion = np.diag(np.arange(20) + 1)
    confusion[4, 7] = 3  # columbian_black-tailed_deer taken for deer
    figure = figures.create_confusion_figure(confusion, CLASS_NAMES)
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == CLASS_NAMES
    assert sorted(int(t.get_text()) for t in axes.texts) == sorted(confusion[confusion > 0])
    assert "213 examples, accuracy 98.6%" in axes.get_title()
    path = tmp_path / "confusion_matrix.png"
    figures.plot_confusion_matrix(confusion, CLASS_NAMES, str(path))
    _check_png(path, min_size=(900, 900), max_size=(2500, 2500))


def test_confusion_shape_must_match_names():
    with pytest.raises(ValueError, match=r"confusion shape \(3, 3\) does not match 20 classes"):
        figures.create_confusion_figure(np.eye(3, dtype=int), CLASS_NAMES)
