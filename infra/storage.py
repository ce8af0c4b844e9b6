"""Checks that a path can be used, so a typo or a missing grant fails in seconds.

TensorFlow's GCS filesystem retries for minutes before it gives up, and then reports a missing
bucket as a missing directory. These checks ask GCS once, through google-cloud-storage, and
raise a `ValueError` whose one-line message says what is wrong and what to do. Entry points
call them on the paths they are given, before any heavy work:

    storage.check_paths(readable=[data_dir, backbone], writable=[job_dir])  # gs:// ones
    storage.check_writable(job_dir, what="job_dir")  # local or gs://: a real write probe

This is the one place that checks whether an output folder can be written.

(They must come before TensorFlow first writes there: TF 2.21's `tf.io.gfile.makedirs` in a
missing bucket never returns.)
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Sequence

_GCS_PREFIX = "gs://"
# https://cloud.google.com/storage/docs/buckets#naming (dotted names may be up to 222 chars).
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_TIMEOUT_S = 20.0


def is_gcs(path: str) -> bool:
    """True for a `gs://bucket/...` path."""
    return str(path).startswith(_GCS_PREFIX)


def split_gcs_path(path: str) -> tuple[str, str]:
    """Splits `gs://bucket/some/prefix` into `("bucket", "some/prefix")`.

    Raises:
      ValueError: `path` is not a gs:// path or its bucket name is not valid.
    """
    if not is_gcs(path):
        raise ValueError(f"{path!r} is not a gs:// path")
    bucket, _, prefix = path[len(_GCS_PREFIX) :].partition("/")
    if not _BUCKET_NAME.match(bucket):
        raise ValueError(
            f"{path!r} does not name a valid bucket: names are 3-63 lowercase letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    return bucket, prefix.strip("/")


def check_paths(readable: Sequence[str] = (), writable: Sequence[str] = ()) -> None:
    """Checks every gs:// path given: `readable` ones can be listed, `writable` ones written.

    Anything else (local folders, TF Hub handles, "" for a default) is left to the caller,
    whose own errors for those are already clear and fast.

    Raises:
      ValueError: for the first path that fails, as `check_bucket_exists`/`check_writable`.
    """
    for path in readable:
        if is_gcs(path):
            check_bucket_exists(path)
    for path in writable:
        if is_gcs(path):
            check_writable(path)


def check_bucket_exists(path: str) -> None:
    """Checks that the bucket of gs:// `path` exists and its objects can be listed.

    Listing (storage.objects.list) is what reading a dataset or a checkpoint needs, and unlike
    fetching bucket metadata it is granted by the object roles (roles/storage.objectViewer).

    Raises:
      ValueError: the path is malformed, the bucket does not exist, or the caller lacks
        permission or credentials; the message says which and what to do.
    """
    from google.api_core import exceptions

    bucket, prefix = split_gcs_path(path)
    client = _client()
    try:
        blobs = client.list_blobs(bucket, prefix=prefix, max_results=1, **_fast_fail())
        list(blobs)
    except exceptions.NotFound:
        raise ValueError(
            f"bucket gs://{bucket} does not exist (from {path}): check the name, or create it "
            f"with `gcloud storage buckets create gs://{bucket} --location=REGION`"
        ) from None
    except exceptions.Forbidden as e:
        raise ValueError(_permission_message(path, "roles/storage.objectViewer", e)) from None


def check_readable(path: str) -> None:
    """Checks that `path` (local or gs://) can be read: it exists, or its bucket is listable.

    Raises:
      ValueError: as `check_bucket_exists`, or a local `path` that does not exist.
    """
    if is_gcs(path):
        check_bucket_exists(path)
    elif not os.path.exists(path):
        raise ValueError(f"{path} does not exist")


def check_writable(path: str, what: str = "") -> None:
    """Checks that files can be created and deleted under `path` (local or gs://), by doing it.

    gs://: writes and deletes one empty probe object under `path` through google-cloud-storage:
    what a training job does with its checkpoints, and the only check that sees every way a
    grant can be missing. Local: creates `path` (as the job would) and a probe file in it. A
    real write, not a look at permission bits: root writes through them, and a read-only
    mount or /proc refuses writes whatever they say.

    Args:
      path: the folder to check.
      what: how error messages name the folder, e.g. "job_dir".

    Raises:
      ValueError: as `check_bucket_exists`, or the caller cannot write there; the one-line
        message reads "<what> <path> is not writable: <reason>" for local paths.
    """
    if not is_gcs(path):
        _probe_local(path, f"{what} {path}".strip())
        return
    from google.api_core import exceptions

    check_bucket_exists(path)
    bucket, prefix = split_gcs_path(path)
    probe_name = "/".join(p for p in (prefix, f".write-check-{uuid.uuid4().hex}") if p)
    probe = _client().bucket(bucket).blob(probe_name)
    try:
        probe.upload_from_string(b"", **_fast_fail())
        probe.delete(**_fast_fail())
    except exceptions.Forbidden as e:
        raise ValueError(_permission_message(path, "roles/storage.objectAdmin", e)) from None


def _probe_local(path: str, name: str) -> None:
    """Creates `path` and a probe file in it, then deletes the probe."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        existing = os.path.abspath(path)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            reason = f"{existing} is a file, not a directory"
        else:
            reason = f"could not create {error.filename or path}: {error.strerror or error}"
        raise ValueError(f"{name} is not writable: {reason}") from None


def _client():
    """A storage client with the default credentials (or the emulator's, when one is set)."""
    from google.auth import exceptions as auth_exceptions
    from google.cloud import storage

    try:
        return storage.Client()
    except auth_exceptions.DefaultCredentialsError:
        raise ValueError(
            "no Google Cloud credentials found: run `gcloud auth application-default login`, "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
        ) from None


def _fast_fail() -> dict:
    """Keyword arguments that bound each call to seconds, not the library's 2-minute retry."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return {"timeout": _TIMEOUT_S, "retry": DEFAULT_RETRY.with_timeout(_TIMEOUT_S)}


def _permission_message(path: str, role: str, error: Exception) -> str:
    detail = getattr(error, "message", str(error)).splitlines()[0]
    return (
        f"permission denied on {path}: grant the job's account {role} on the bucket "
        f"(GCS said: {detail})"
    )
