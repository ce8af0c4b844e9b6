"""Atomic writes of files and folders, local or gs://, so no reader sees a half-written output.

Everything is written under a temporary sibling name and renamed into place only once complete.
A crash or an exception leaves either the old output or none, never one that looks complete but
is not. All I/O goes through `tf.io.gfile`, so the same calls work for local paths and gs://.

On GCS a rename is a copy plus a delete per object (GCS has no rename), so an interrupted
`atomic_output_dir` can leave the `.tmp-*` folder behind, but never a partial final folder:
readers should look only at the final name.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import tensorflow as tf


def _temporary_sibling(path: str, tag: str) -> str:
    _, scheme_separator, rest = path.rpartition("://")
    rest = rest.strip("/")
    if not rest or (scheme_separator and "/" not in rest):  # empty, "/", or a bare bucket
        raise ValueError(f"{path!r} names no file or folder to write")
    path = path.rstrip("/")
    return f"{path}.{tag}-{uuid.uuid4().hex[:12]}"


def _remove(path: str) -> None:
    if not tf.io.gfile.exists(path):
        return
    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    else:
        tf.io.gfile.remove(path)


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[BinaryIO]:
    """Opens `path` for binary writing; it appears, complete, only if the block succeeds.

    The parent folder is created if needed. An existing file at `path` is replaced.
    """
    parent = posixpath.dirname(path.rstrip("/"))
    temporary = _temporary_sibling(path, "tmp")
    if parent:
        tf.io.gfile.makedirs(parent)
    try:
        with tf.io.gfile.GFile(temporary, "wb") as stream:
            yield stream
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        _remove(temporary)
        raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` (local or gs://) under a temporary name, then renames it."""
    with atomic_file(path) as stream:
        stream.write(data)


def _to_json(value: Any) -> Any:
    # NumPy scalars and arrays come out of metrics code; json cannot encode them itself.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes `obj` as indented JSON to `path` atomically; NumPy scalars and arrays are allowed.

    `obj` is encoded before anything is written, so an unencodable value (TypeError) or a NaN
    or infinity (ValueError) leaves no file.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=_to_json, allow_nan=False)
    except ValueError as error:  # NaN or infinity: not JSON, and a sign of a diverged run
        raise ValueError(f"cannot write {path}: {error}") from error
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


@contextlib.contextmanager
def atomic_output_dir(final_dir: str) -> Iterator[str]:
    """Yields a temporary sibling folder; on success it replaces `final_dir`, on error it goes.

    Write everything into the yielded folder. If the block raises, the temporary folder is
    removed and any previous `final_dir` is left untouched. If it succeeds, a previous
    `final_dir` is moved aside, the new folder is renamed into place, and the old one deleted.
    """
    final_dir = final_dir.rstrip("/")
    temporary = _temporary_sibling(final_dir, "tmp")
    parent = posixpath.dirname(final_dir)
    if parent:
        tf.io.gfile.makedirs(parent)
    tf.io.gfile.makedirs(temporary)
    try:
        yield temporary
    except BaseException:
        _remove(temporary)
        raise
    _replace_dir(temporary, final_dir)


def _replace_dir(source: str, target: str) -> None:
    # A folder cannot be renamed onto a non-empty one, so the old one is moved aside first; the
    # window in which `target` is missing is one rename long (locally).
    previous = None
    if tf.io.gfile.exists(target):
        previous = _temporary_sibling(target, "old")
        tf.io.gfile.rename(target, previous)
    try:
        tf.io.gfile.rename(source, target)
    except BaseException:
        if previous is not None:
            tf.io.gfile.rename(previous, target)
        _remove(source)
        raise
    if previous is not None:
        _remove(previous)
