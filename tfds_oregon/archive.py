"""Finds the Kaggle archive in `manual_dir`, reads it in place and works out its layout.

The archive is read where it lies, through `tf.io.gfile` (so `manual_dir` may be `gs://...`),
and never extracted to disk: a zip is opened from a gfile file object, an extracted folder is
walked with gfile. Layouts accepted, with any name for the outer folders:

    oregon_wildlife/oregon_wildlife/<class>/<file>   (the current Kaggle zip)
    oregon_wildlife/<class>/<file>                   (older downloads)
    <class>/<file>

Hidden entries (`.DS_Store`, `__MACOSX/`), files with a non-image extension (`.h5`, ...) and
files outside the class folders are ignored and reported; anything in a class folder with an
image extension is an image candidate, whatever its real content.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import posixpath
import zipfile
import zlib
from collections.abc import Iterator, Sequence

import tensorflow as tf

from tfds_oregon.classes import CLASS_NAMES

ARCHIVE_NAMES = ("oregon-wildlife.zip", "archive.zip")
DOWNLOAD_COMMAND = "kaggle datasets download -d virtualdvid/oregon-wildlife"
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".mpo", ".webp"}
    | {".tif", ".tiff"}
)
_HIDDEN_PREFIXES = (".", "__MACOSX")
# What reading one damaged member of an otherwise good zip raises (bad CRC, broken deflate
# stream, cut short): that file is unreadable, the rest of the archive is fine.
ENTRY_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)


class SourceError(ValueError):
    """The manual download is missing or unusable; the message says what to do (one line)."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """An image candidate: `file_name` is relative to the class folders' parent."""

    path: str  # Inside the archive, as `Source.read` takes it.
    label: str
    file_name: str  # e.g. "bald_eagle/002c3a60a6c763cdb5.jpg".


@dataclasses.dataclass(frozen=True)
class Layout:
    """What the source holds: image candidates, and the paths ignored (with why)."""

    root: str  # The folder holding the class folders ("" for the archive's top).
    entries: tuple[Entry, ...]
    ignored: tuple[str, ...]


def locate(manual_dir: str) -> str:
    """Returns the path of the archive (a zip, or an extracted folder) in `manual_dir`.

    Raises:
      SourceError: nothing usable is there.
    """
    manual_dir = str(manual_dir).rstrip("/")
    for name in ARCHIVE_NAMES:
        if tf.io.gfile.exists(posixpath.join(manual_dir, name)):
            return posixpath.join(manual_dir, name)
    extracted = posixpath.join(manual_dir, "oregon_wildlife")
    if tf.io.gfile.isdir(extracted):
        return extracted
    if tf.io.gfile.isdir(manual_dir) and set(tf.io.gfile.listdir(manual_dir)) & _class_dirs():
        return manual_dir
    raise SourceError(
        f"no Oregon Wildlife archive in {manual_dir}: run `{DOWNLOAD_COMMAND} -p {manual_dir}` "
        f"so that {posixpath.join(manual_dir, ARCHIVE_NAMES[0])} exists "
        "(archive.zip or the extracted oregon_wildlife/ folder also work)"
    )


def _class_dirs() -> set[str]:
    return {f"{name}/" for name in CLASS_NAMES} | set(CLASS_NAMES)


class Source:
    """Read access to the files of a zip or a folder; use as a context manager."""

    def __init__(self, path: str):
        self.path = str(path)
        self._stack = contextlib.ExitStack()
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> Source:
        if not tf.io.gfile.isdir(self.path):
            with self._stack.pop_all() as stack:  # Closes the file if the zip is unreadable.
                self._zip = _open_zip(self.path, stack)
                self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def files(self) -> list[str]:
        """Every file's path, relative to the source, '/'-separated, sorted."""
        if self._zip is not None:
            return sorted(info.filename for info in self._zip.infolist() if not info.is_dir())
        found = []
        for directory, _, names in tf.io.gfile.walk(self.path):
            relative = posixpath.relpath(str(directory), self.path)
            found += [posixpath.normpath(posixpath.join(relative, n)) for n in names]
        return sorted(found)

    def read(self, path: str) -> bytes:
        """The bytes of one file (thread-safe: zipfile serialises reads of the shared file)."""
        if self._zip is not None:
            return self._zip.read(path)
        with tf.io.gfile.GFile(posixpath.join(self.path, path), "rb") as f:
            return f.read()


def _open_zip(path: str, stack: contextlib.ExitStack) -> zipfile.ZipFile:
    # zipfile gets a gfile file object, never the path, so that gs:// works too.
    fileobj = stack.enter_context(tf.io.gfile.GFile(path, "rb"))
    try:
        archive = zipfile.ZipFile(fileobj)
    # A file shorter than a zip's end record makes gfile's seek fail with an OpError.
    except (zipfile.BadZipFile, EOFError, OSError, tf.errors.OpError) as e:
        raise SourceError(
            f"{path} is not a readable zip ({e}): the download is corrupt or incomplete; "
            f"delete it and download again with `{DOWNLOAD_COMMAND}`"
        ) from e
    return stack.enter_context(archive)


def detect_layout(paths: Sequence[str]) -> Layout:
    """Finds the class folders among `paths` and sorts the files into candidates and ignored.

    The root is the folder whose sub-folders hold the most images in known class folders, so
    both Kaggle layouts and an extracted copy are found without being told which.

    Raises:
      SourceError: no class folders, or folders with names that are not classes.
    """
    candidates = [p for p in paths if _is_image_candidate(p)]
    root = _find_root(candidates)
    unknown = sorted({_class_of(p, root) for p in candidates if _under(p, root)} - set(CLASS_NAMES))
    if unknown:
        raise SourceError(
            f"unknown class folders in {root or 'the archive top'}: {', '.join(unknown)}; "
            f"expected only the 20 Oregon Wildlife classes ({', '.join(CLASS_NAMES)})"
        )
    entries, ignored = [], []
    for path in sorted(paths):
        if _is_image_candidate(path) and _under(path, root):
            label = _class_of(path, root)
            entries.append(Entry(path, label, posixpath.relpath(path, root or ".")))
        else:
            ignored.append(path)
    return Layout(root, tuple(entries), tuple(ignored))


def _is_image_candidate(path: str) -> bool:
    parts = path.split("/")
    if any(part.startswith(_HIDDEN_PREFIXES) for part in parts):
        return False
    return len(parts) >= 2 and posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _find_root(candidates: Sequence[str]) -> str:
    """The folder two levels above the most image candidates in known class folders."""
    known, any_folder = collections.Counter(), collections.Counter()
    for path in candidates:
        parts = path.split("/")
        for depth in range(len(parts) - 1):
            root, folder = "/".join(parts[:depth]), parts[depth]
            any_folder[root] += 1
            known[root] += folder in CLASS_NAMES
    if known and max(known.values()) > 0:
        return max(sorted(known), key=lambda root: known[root])
    if not any_folder:
        raise SourceError(
            "the archive holds no class folders with images: expected "
            "oregon_wildlife/oregon_wildlife/<class>/<image> as in the Kaggle download "
            f"(`{DOWNLOAD_COMMAND}`)"
        )
    # No known class anywhere: the deepest folder holding all those files has the would-be
    # class folders, which the caller reports as unknown.
    return max(
        sorted(any_folder), key=lambda root: (any_folder[root], root.count("/") + bool(root))
    )


def _under(path: str, root: str) -> bool:
    if not root:
        return True
    return path.startswith(root + "/") and path.count("/") > root.count("/") + 1


def _class_of(path: str, root: str) -> str:
    relative = posixpath.relpath(path, root or ".")
    return relative.split("/", 1)[0]


def iter_images(source: Source, layout: Layout) -> Iterator[tuple[Entry, bytes]]:
    """Yields each image candidate with its bytes, in the layout's (sorted) order."""
    for entry in layout.entries:
        yield entry, source.read(entry.path)
