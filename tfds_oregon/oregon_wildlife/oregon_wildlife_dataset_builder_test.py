"""DatasetBuilderTestCase over dummy_data/ for every config.

dummy_data/ is an extracted copy in the current Kaggle layout: 3 classes x 10 tiny images (one
PNG each), a .DS_Store per class, and one byte-identical copy in elk (dropped). 10 per class
split 8/1/1.
"""

import tensorflow_datasets as tfds

from tfds_oregon.oregon_wildlife import oregon_wildlife_dataset_builder


class OregonWildlifeFullTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = oregon_wildlife_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["full"]
    SPLITS = {"train": 24, "validation": 3, "test": 3}
    SKIP_CHECKSUMS = True  # Manual download: there is no URL to check.


class OregonWildlifeResizedTest(OregonWildlifeFullTest):
    BUILDER_CONFIG_NAMES_TO_TEST = ["resized_256"]


if __name__ == "__main__":
    tfds.testing.test_main()
