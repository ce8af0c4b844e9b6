"""infra/storage.py against the GCS emulator: each bad path fails fast with one clear line; and
the local write check, which writes for real."""

import os
import time

import pytest

from infra import storage


@pytest.fixture
def gcs(gcs_emulator, monkeypatch):
    """Points google-cloud-storage in this process at the emulator."""
    for name, value in gcs_emulator.env.items():
        monkeypatch.setenv(name, value)
    return gcs_emulator


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("gs://bucket", ("bucket", "")),
        ("gs://bucket/", ("bucket", "")),
        ("gs://my-bucket.example/a/b/", ("my-bucket.example", "a/b")),
    ],
)
def test_split_gcs_path(path, expected):
    assert storage.split_gcs_path(path) == expected


@pytest.mark.parametrize("path", ["gs://", "gs://Upper/x", "gs://a/x", "gs://-dash/x", "/tmp/x"])
def test_split_gcs_path_rejects_bad_paths(path):
    with pytest.raises(ValueError, match="valid bucket|not a gs:// path"):
        storage.split_gcs_path(path)


def test_is_gcs():
    assert storage.is_gcs("gs://b/x")
    assert not storage.is_gcs("/data/gs://b")
    assert not storage.is_gcs("relative/dir")


def test_existing_bucket_passes_both_checks(gcs):
    path = f"gs://{gcs.bucket}/checks/job"
    storage.check_readable(path)
    storage.check_writable(path)
    # The probe is removed: a job dir must not collect litter from its own checks.
    assert gcs.list(path) == []


def test_missing_bucket_fails_fast_with_one_line(gcs):
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        storage.check_writable("gs://oregon-tset/job")
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "\n" not in message
    assert "gs://oregon-tset does not exist" in message
    assert "gcloud storage buckets create gs://oregon-tset" in message


@pytest.mark.parametrize("check", [storage.check_readable, storage.check_writable])
def test_forbidden_bucket_names_the_missing_role(gcs, check):
    with pytest.raises(ValueError) as error:
        check("gs://forbidden-data/tfds")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("permission denied on gs://forbidden-data/tfds")
    assert "roles/storage.objectViewer" in message
    assert "Permission 'storage.objects.get' denied" in message


def test_local_paths(tmp_path):
    storage.check_readable(str(tmp_path))
    storage.check_writable(str(tmp_path / "new" / "job"))
    with pytest.raises(ValueError, match="does not exist"):
        storage.check_readable(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        storage.check_writable(str(tmp_path / "file" / "job"))


def test_local_write_check_creates_the_folder_and_leaves_nothing_else(tmp_path):
    job = tmp_path / "new" / "job"
    storage.check_writable(str(job))
    assert job.is_dir() and list(job.iterdir()) == []


def test_local_write_check_writes_instead_of_reading_permission_bits(tmp_path):
    """Under a regular file, and under /proc (which refuses new files whatever its mode says,
    and whose mode bits root bypasses anyway: os.access calls it writable for root)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError) as error:
        storage.check_writable(str(tmp_path / "file" / "job"), what="job_dir")
    assert str(error.value) == (
        f"job_dir {tmp_path / 'file' / 'job'} is not writable: "
        f"{tmp_path / 'file'} is a file, not a directory"
    )
    if os.geteuid() == 0:
        assert os.access("/proc", os.W_OK)  # What a permission-bit check would have trusted.
    with pytest.raises(ValueError, match=r"^job_dir /proc/job is not writable: could not create"):
        storage.check_writable("/proc/job", what="job_dir")


def test_check_paths_checks_only_gcs_paths(gcs, tmp_path):
    storage.check_paths(
        readable=[
            "",
            "https://tfhub.dev/google/x/5",
            str(tmp_path / "absent"),
            f"gs://{gcs.bucket}",
        ],
        writable=[str(tmp_path / "job"), f"gs://{gcs.bucket}/job"],
    )
    with pytest.raises(ValueError, match="gs://oregon-tset does not exist"):
        storage.check_paths(readable=[f"gs://{gcs.bucket}/tfds"], writable=["gs://oregon-tset/j"])
    with pytest.raises(ValueError, match="permission denied on gs://forbidden-models/m"):
        storage.check_paths(readable=["gs://forbidden-models/m"])
