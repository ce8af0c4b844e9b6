"""Finds the Kaggle archive in `manual_dir`, reads it in place and works out its layout.

The archive is read where it lies, through `tf.io.gfile` (so `manual_dir` may be `gs://...`),
and never extracted to disk: a zip is opened from a gfile file object, an extracted folder is
walked with gfile. Layouts accepted, with any name for the outer folders:

    oregon_wildlife/oregon_wildlife/<class>/<file>   (the current Kaggle zip)
    oregon_wildlife/<class>/<file>                   (older downloads)
    <class>/<file>

Hidden entries (`.DS_Store`, `__MACOSX/`), files with a non-image extension (`.h5`, ...) and
files outside the class folders are ignored and reported; anything in a class folder with an
image extension is an image candidate, whatever its real content. Member names are normalised
first (backslashes, `./`, repeated slashes), as zips written on Windows have them.

No member can stop a build: one that is too large (judged from the zip directory, before
reading), compressed with a method zipfile lacks (Deflate64, ...), encrypted, or damaged (bad
CRC, broken stream) raises `UnreadableMemberError` with a short, stable reason, and the caller
counts it as unreadable.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import lzma
import posixpath
import re
import zipfile
import zlib
from collections.abc import Sequence

import tensorflow as tf

from tfds_oregon.classes import CLASS_NAMES

ARCHIVE_NAMES = ("oregon-wildlife.zip", "archive.zip")
DOWNLOAD_COMMAND = "kaggle datasets download -d virtualdvid/oregon-wildlife"
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".mpo", ".webp"}
    | {".tif", ".tiff"}
)
_HIDDEN_PREFIXES = (".", "__MACOSX")
# The largest file read: a real photo is at most a few tens of MB; a 1 GiB member is not one,
# and reading it would take that much memory. Checked against the zip directory's sizes
# before reading, and again while reading (the directory may lie).
MAX_MEMBER_BYTES = 200 * 2**20
# What zipfile can decompress (ZIP_DEFLATED64, PPMd, ... raise NotImplementedError).
_SUPPORTED_COMPRESSION = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
# What reading one damaged member of an otherwise good zip raises (bad CRC, broken deflate
# stream, cut short): that file is unreadable, the rest of the archive is fine.
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError)
_CHUNK = 1 << 20


class UnreadableMemberError(ValueError):
    """One file of the archive cannot be read; the message is a short, stable reason."""


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
    try:
        found = _find_archive(manual_dir)
    except tf.errors.OpError as e:  # Permission denied, a file where a folder should be, ...
        raise SourceError(
            f"cannot read the manual_dir {manual_dir} ({type(e).__name__}): check that it is "
            "a folder you can read"
        ) from None
    if found:
        return found
    if not tf.io.gfile.exists(manual_dir):
        what = f"the manual_dir {manual_dir} does not exist"
    else:
        what = f"no Oregon Wildlife archive in {manual_dir}"
    raise SourceError(
        f"{what}: run `{DOWNLOAD_COMMAND} -p {manual_dir}` "
        f"so that {posixpath.join(manual_dir, ARCHIVE_NAMES[0])} exists "
        "(archive.zip or the extracted oregon_wildlife/ folder also work)"
    )


def _find_archive(manual_dir: str) -> str | None:
    for name in ARCHIVE_NAMES:
        if tf.io.gfile.exists(posixpath.join(manual_dir, name)):
            return posixpath.join(manual_dir, name)
    extracted = posixpath.join(manual_dir, "oregon_wildlife")
    if tf.io.gfile.isdir(extracted):
        return extracted
    if tf.io.gfile.isdir(manual_dir) and set(tf.io.gfile.listdir(manual_dir)) & _class_dirs():
        return manual_dir
    return None


def _class_dirs() -> set[str]:
    return {f"{name}/" for name in CLASS_NAMES} | set(CLASS_NAMES)


class Source:
    """Read access to the files of a zip or a folder; use as a context manager."""

    def __init__(self, path: str):
        self.path = str(path)
        self._stack = contextlib.ExitStack()
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] = {}

    def __enter__(self) -> Source:
        if not tf.io.gfile.isdir(self.path):
            with self._stack.pop_all() as stack:  # Closes the file if the zip is unreadable.
                self._zip = _open_zip(self.path, stack)
                self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def files(self) -> list[str]:
        """Every file's normalised path ('/'-separated, no `./`), sorted."""
        if self._zip is not None:
            self._members = {}
            for info in self._zip.infolist():
                name = normalise(info.filename)
                if not info.is_dir() and name and not name.endswith("/"):
                    self._members.setdefault(name, info)
            return sorted(self._members)
        found = []
        for directory, _, names in tf.io.gfile.walk(self.path):
            relative = posixpath.relpath(str(directory), self.path)
            found += [posixpath.normpath(posixpath.join(relative, n)) for n in names]
        return sorted(found)

    def read(self, path: str, max_bytes: int = MAX_MEMBER_BYTES) -> bytes:
        """The bytes of one file (thread-safe: zipfile serialises reads of the shared file).

        Raises:
          UnreadableMemberError: too large, unsupported compression, encrypted, or damaged.
        """
        if self._zip is None:
            full_path = posixpath.join(self.path, path)
            size = tf.io.gfile.stat(full_path).length
            if size > max_bytes:
                raise UnreadableMemberError(_too_large(size, max_bytes))
            with tf.io.gfile.GFile(full_path, "rb") as f:
                return f.read()
        if not self._members:
            self.files()
        info = self._members[path]
        _check_member(info, max_bytes)
        try:
            with self._zip.open(info) as member:
                data = member.read(max_bytes + 1)  # Bounded even if the directory lies.
                if len(data) > max_bytes:
                    raise UnreadableMemberError(_too_large(len(data), max_bytes))
                while member.read(_CHUNK):  # Reaches the end, where zipfile checks the CRC.
                    pass
        except _MEMBER_ERRORS as e:
            raise UnreadableMemberError(_member_reason(e)) from e
        return data


def normalise(name: str) -> str:
    """A zip member name as a clean relative path: `\\` -> `/`, no `./`, no repeated `/`."""
    name = name.replace("\\", "/")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return "/".join(parts) + ("/" if name.endswith("/") and parts else "")


def _check_member(info: zipfile.ZipInfo, max_bytes: int) -> None:
    if info.flag_bits & 0x1:
        raise UnreadableMemberError("encrypted archive member")
    if info.compress_type not in _SUPPORTED_COMPRESSION:
        raise UnreadableMemberError(f"unsupported zip compression method {info.compress_type}")
    if info.file_size > max_bytes:
        raise UnreadableMemberError(_too_large(info.file_size, max_bytes))


def _too_large(size: int, max_bytes: int) -> str:
    return f"file of {size / 2**20:.0f} MiB is larger than the {max_bytes / 2**20:.0f} MiB limit"


def _member_reason(error: BaseException) -> str:
    text = str(error)
    if "CRC" in text:
        return "damaged archive member: bad CRC-32"
    # zipfile names the member in some messages: keep the reason the same for every file.
    text = re.sub(r"'[^']*'", "'...'", " ".join(text.split()))
    return f"damaged archive member: {type(error).__name__}: {text}"[:200]


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
