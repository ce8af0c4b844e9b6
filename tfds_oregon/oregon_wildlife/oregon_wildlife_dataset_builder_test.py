"""DatasetBuilderTestCase over dummy_data/ for every config.

dummy_data/ is an extracted copy in the current Kaggle layout: 3 classes x 10 tiny SYNTHETIC
images (`tfds_oregon.sample`, one PNG each; no two within 18 bits of each other's perceptual
hash), a .DS_Store per class, and one byte-identical copy in elk (dropped). The 30 photos kept
fall 22/4/4 by their content hashes (2.0.0 splits each photo by its own hash, not 8/1/1 per
class): what `splits.split_of` gave when the data was generated, checked by hand once.
"""

import tensorflow_datasets as tfds

from tfds_oregon.oregon_wildlife import oregon_wildlife_dataset_builder


class OregonWildlifeFullTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = oregon_wildlife_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["full"]
    SPLITS = {"train": 22, "validation": 4, "test": 4}
    SKIP_CHECKSUMS = True  # Manual download: there is no URL to check.


class OregonWildlifeResizedTest(OregonWildlifeFullTest):
    BUILDER_CONFIG_NAMES_TO_TEST = ["resized_256"]


if __name__ == "__main__":
    tfds.testing.test_main()
