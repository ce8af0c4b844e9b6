"""Progress of long work on the console: one updating line on a terminal, a few lines in a log.

    for batch in progress.track(dataset, "Evaluating on test", total=num_batches):
        ...

On a terminal the line is rewritten in place (at most 10 times a second) and left showing the
total when the work ends. Anywhere else (`make demo > log`, CI, Vertex AI's log viewer, which
shows each write as a line) it prints at most one line per quarter of the work, only once
`quiet_s` seconds have passed since the last line, and always one line at the end: a short
job gets one line, a long one five, never one per step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

_REDRAW_S = 0.1  # a terminal line redrawn more often only costs time
_QUARTERS = (0.25, 0.5, 0.75)


class Progress:
    """Counts done units of `total` (None when unknown) and shows it on `stream` (stdout)."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "",
        stream: TextIO | None = None,
        quiet_s: float = 5.0,
    ):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = sys.stdout if stream is None else stream
        self.live = _isatty(self.stream)
        self.quiet_s = quiet_s
        self.done = 0
        self._start = self._last_shown = time.monotonic()
        self._next_quarter = 0
        self._width = 0  # of the terminal line drawn last, to blank what a shorter one leaves
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.live:
            if now - self._last_shown >= _REDRAW_S:
                self._draw(self._line(now))
                self._last_shown = now
            return
        if not self.total:
            return
        crossed = False
        while (
            self._next_quarter < len(_QUARTERS)
            and self.done >= _QUARTERS[self._next_quarter] * self.total
        ):
            self._next_quarter += 1
            crossed = True
        if crossed and self.done < self.total and now - self._last_shown >= self.quiet_s:
            self._print(self._line(now))
            self._last_shown = now

    def close(self) -> None:
        """Shows the final count and the time taken (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        line = self._line(time.monotonic(), final=True)
        if self.live:
            self._draw(line)
            self.stream.write("\n")
            self.stream.flush()
        else:
            self._print(line)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _line(self, now: float, final: bool = False) -> str:
        unit = f" {self.unit}" if self.unit else ""
        count = f"{self.done}/{self.total}{unit}" if self.total else f"{self.done}{unit}"
        if self.total and not final:
            count += f" ({100 * self.done // self.total}%)"
        seconds = now - self._start
        return f"{self.desc}: {count} {'in' if final else 'after'} {_duration(seconds)}"

    def _draw(self, line: str) -> None:
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def track(
    iterable: Iterable[T],
    desc: str,
    total: int | None = None,
    unit: str = "",
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Yields from `iterable`, counting each item; the final line shows once it is exhausted."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(desc, total, unit, stream) as progress:
        for item in iterable:
            yield item
            progress.update()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return (
        f"{minutes} min {seconds:02d} s"
        if minutes < 60
        else f"{minutes // 60} h {minutes % 60:02d} min"
    )
