"""The two passes over the archive that a TFDS build needs.

TFDS asks for the splits before it asks for any example, and deduplication needs every photo
before a split can be drawn. So:
1. `scan` reads, hashes and converts every image candidate once, on a thread pool (Pillow,
   numpy and hashlib release the GIL), and keeps the converted JPEGs in memory up to a budget.
   Any per-file problem (a damaged or oversized member, an undecodable image) is recorded as
   unreadable with a short reason; nothing stops the scan.
2. `stored_images` yields the bytes to store for the kept records of one split: from that
   cache, or the source bytes untouched (an upright RGB JPEG kept at full size), and only
   what did not fit the cache is decoded a second time.
For `resized_256` on the full archive (~14,000 JPEGs of ~30 KB) everything fits the cache, so
each photo is decoded once; for `full`, plain JPEGs are stored as they are and the rest cached.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from tfds_oregon import archive, images
from tfds_oregon.archive import Entry, Source
from tfds_oregon.splits import Record
from trainer import progress as progress_lib

CACHE_BYTES = 1 << 30  # Converted JPEGs kept in memory between the two passes.
# Marks a byte-identical copy's outcome: pass 2 converts it again if it is ever stored.
_CONVERT_AGAIN = b""

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclasses.dataclass
class ScanResult:
    """What the first pass learnt about every image candidate.

    Attributes:
      records: one per decodable candidate, in the entries' order.
      unreadable: file name -> why it could not be decoded.
      cache: file name -> converted JPEG, for what fitted the memory budget.
      as_is: file names whose source bytes are stored untouched.
    """

    records: list[Record]
    unreadable: dict[str, str]
    cache: dict[str, bytes]
    as_is: set[str]


def scan(
    source: Source,
    entries: Sequence[Entry],
    short_side: int | None,
    *,
    workers: int | None = None,
    cache_bytes: int = CACHE_BYTES,
) -> ScanResult:
    """Pass 1: reads, hashes and converts every entry (see the module docstring)."""
    result = ScanResult([], {}, {}, set())
    by_bytes: dict[str, images.ConvertedImage] = {}  # Byte-identical copies convert once.
    lock = threading.Lock()

    def convert(entry: Entry) -> tuple[str, images.ConvertedImage | str]:
        try:
            data = source.read(entry.path)
        except archive.UnreadableMemberError as e:
            return "", str(e)
        byte_hash = hashlib.sha256(data).hexdigest()
        with lock:
            done = by_bytes.get(byte_hash)
        if done is not None:
            return byte_hash, done
        try:
            converted = images.convert(data, short_side)
        except images.UnreadableImageError as e:
            return byte_hash, str(e)
        with lock:  # Copies need the identity, not a second copy of the JPEG in memory.
            by_bytes[byte_hash] = (
                converted
                if converted.jpeg is None
                else dataclasses.replace(converted, jpeg=_CONVERT_AGAIN)
            )
        return byte_hash, converted

    cached = 0
    progress = progress_lib.Progress("converting images", total=len(entries), unit="images")
    for entry, (byte_hash, outcome) in ordered_map(convert, entries, workers):
        progress.update()
        if isinstance(outcome, str):
            result.unreadable[entry.file_name] = outcome
            continue
        result.records.append(
            Record(entry.file_name, entry.label, byte_hash, outcome.phash, outcome.source_pixels)
        )
        if outcome.jpeg is None:
            result.as_is.add(entry.file_name)
        elif outcome.jpeg and cached + len(outcome.jpeg) <= cache_bytes:
            result.cache[entry.file_name] = outcome.jpeg
            cached += len(outcome.jpeg)
    progress.close()
    return result


def exact_duplicates(
    source: Source,
    dropped: Mapping[str, str],
    records: Sequence[Record],
    paths: Mapping[str, str],
    *,
    workers: int | None = None,
) -> set[str]:
    """The dropped copies that are exact duplicates of the photo kept instead.

    Exact: the same bytes, or the same upright pixels at full resolution in another container
    (PNG, BMP, other JPEG metadata). Only the few files in groups are decoded again.
    """
    by_name = {r.file_name: r for r in records}
    same_bytes = {
        name for name, kept in dropped.items() if by_name[name].byte_hash == by_name[kept].byte_hash
    }
    to_hash = sorted({n for pair in dropped.items() for n in pair if pair[0] not in same_bytes})

    def digest(name: str) -> str:
        try:
            return images.pixel_hash(source.read(paths[name]))
        except (archive.UnreadableMemberError, images.UnreadableImageError):
            return f"unreadable:{name}"  # Read fine in pass 1; never equal to another.

    pixels = dict(ordered_map(digest, to_hash, workers))
    same_pixels = {
        name
        for name, kept in dropped.items()
        if name not in same_bytes and pixels[name] == pixels[kept]
    }
    return same_bytes | same_pixels


def stored_images(
    source: Source,
    records: Sequence[Record],
    paths: dict[str, str],
    scanned: ScanResult,
    short_side: int | None,
    *,
    workers: int | None = None,
) -> Iterator[tuple[Record, bytes]]:
    """Pass 2: yields (record, JPEG bytes to store) for `records`, in their order.

    Args:
      source: the open archive.
      records: the kept records of one split.
      paths: file name -> path inside the source.
      scanned: the result of `scan` over the same source.
      short_side: the same as given to `scan`.
      workers: threads for the images decoded again; default: one per CPU.
    """

    def jpeg_of(record: Record) -> bytes:
        if record.file_name in scanned.cache:
            return scanned.cache[record.file_name]
        data = source.read(paths[record.file_name])
        if record.file_name in scanned.as_is:
            return data
        converted = images.convert(data, short_side)  # Read fine in pass 1: same bytes.
        return data if converted.jpeg is None else converted.jpeg

    yield from ordered_map(jpeg_of, records, workers)


def ordered_map(
    fn: Callable[[_T], _R], items: Iterable[_T], workers: int | None = None
) -> Iterator[tuple[_T, _R]]:
    """Yields (item, fn(item)) in order, computing on `workers` threads.

    At most 4 items per worker are in flight, so memory stays bounded however many items
    there are (each may hold a photo's bytes).
    """
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        yield from ((item, fn(item)) for item in items)
        return
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="oregon") as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= 4 * workers:
                item_done, future = pending.popleft()
                yield item_done, future.result()
        while pending:
            item_done, future = pending.popleft()
            yield item_done, future.result()
