"""The `oregon_wildlife` TFDS dataset. Importing this package registers it."""

from tfds_oregon.classes import CLASS_NAMES
from tfds_oregon.oregon_wildlife import oregon_wildlife_dataset_builder

Builder = oregon_wildlife_dataset_builder.Builder

__all__ = ["CLASS_NAMES", "Builder"]
