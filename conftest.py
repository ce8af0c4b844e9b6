"""Root pytest configuration: shared fixtures live in tests/fixtures/, one module per concern."""

pytest_plugins = [
    "tests.fixtures.dataset",
    "tests.fixtures.backbone",
    "tests.fixtures.gcs",
]
