"""The `oregon_wildlife` TFDS dataset. Importing this package registers it."""

# First: `python -m tfds_oregon.<cli>` imports this package, and with it TensorFlow, before the
# CLI module itself; cli quiets TensorFlow's start-up lines only if it runs before that.
from trainer import cli  # noqa: F401  # isort: skip
from tfds_oregon.classes import CLASS_NAMES
from tfds_oregon.oregon_wildlife import oregon_wildlife_dataset_builder

Builder = oregon_wildlife_dataset_builder.Builder

__all__ = ["CLASS_NAMES", "Builder"]
