"""A progress line on stderr for long work (evaluation, export, engine builds): count, rate, ETA.

On a terminal it redraws in place at most 10 times a second; elsewhere (CI logs, pipes) it writes
a plain line at most every 30 s and a final one, so a log never floods.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def progress_printer(start: float | None = None) -> Callable[[str], None]:
    """`say(message)`: one line on stderr stamped with the seconds since `start` (default: this
    call), for work whose steps are few and long (exports, benchmarks, checks), where a bar per
    step would say less than the step's name."""
    origin = time.perf_counter() if start is None else start

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - origin:6.1f}s] {message}", file=sys.stderr, flush=True)
    return say


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    def __init__(self, total: int, label: str, unit: str = "it",
                 stream: TextIO | None = None) -> None:
        self.total, self.label, self.unit, self.done = total, label, unit, 0
        self.drawn = False
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()
        self.interval = 0.1 if self.tty else 30.0
        self.start = self.last = time.monotonic()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = max(self.total - self.done, 0)
        eta = _clock(left / rate) if rate > 0 else _clock(0) if left == 0 else "?"
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.label}: {self.done}/{self.total} {self.unit} ({percent:.0f}%), "
                f"{rate:.1f} {self.unit}/s, elapsed {_clock(elapsed)}, ETA {eta}")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write(self.line(), final=False)

    def close(self) -> None:
        """The last line; call once, also when the work stops early."""
        self._write(self.line(), final=True)

    def _write(self, text: str, final: bool) -> None:
        self.drawn = not final
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """A final line on success or Ctrl-C; on an error only the caller's message follows
        (after ending a half-drawn terminal line)."""
        if kind is None or issubclass(kind, KeyboardInterrupt):
            self.close()
        elif self.tty and self.drawn:
            self.stream.write("\n")
