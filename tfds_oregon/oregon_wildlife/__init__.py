"""The oregon_wildlife dataset folder, laid out as `tfds new` does."""
