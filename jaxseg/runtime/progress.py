"""A terminal progress bar with loss, images per second and time left."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar", "format_duration"]


def format_duration(seconds: float) -> str:
    """Returns `seconds` as 'h:mm:ss' or 'm:ss'."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Draws `[#####.....] step/total loss L | N img/s | ETA m:ss` on one line.

    On a terminal the line is redrawn in place at every `update`; otherwise (logs, CI) a
    line is printed every `every` steps. Speed and ETA count only steps timed after the
    first `update` (so the compile of the first step is not counted).
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        batch_size: int = 1,
        every: int = 50,
        stream: TextIO | None = None,
        width: int = 24,
    ):
        self.total = total
        self.batch_size = batch_size
        self.every = max(1, every)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._start_step = initial
        self._start_time = None
        self.images_per_second = 0.0

    def update(self, step: int, loss: float | None = None) -> None:
        """Records that `step` steps are done; `loss` is the latest training loss."""
        now = time.perf_counter()
        if self._start_time is None:
            self._start_time, self._start_step = now, step
        elapsed = now - self._start_time
        done = step - self._start_step
        if done > 0 and elapsed > 0:
            self.images_per_second = done * self.batch_size / elapsed
        if not (self.interactive or step % self.every == 0 or step == self.total):
            return
        self.stream.write(("\r" if self.interactive else "") + self.line(step, loss, elapsed, done))
        if not self.interactive or step == self.total:
            self.stream.write("\n")
        self.stream.flush()

    def line(self, step: int, loss: float | None, elapsed: float, done: int) -> str:
        """Returns the text of the bar at `step`."""
        filled = round(self.width * step / max(self.total, 1))
        parts = [f"[{'#' * filled}{'.' * (self.width - filled)}] {step}/{self.total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        parts.append(f"{self.images_per_second:.1f} img/s")
        if done > 0:
            eta = elapsed / done * (self.total - step)
            parts.append(f"ETA {format_duration(eta)}")
        return " | ".join(parts)

    def write(self, text: str) -> None:
        """Prints a message on its own line without breaking the bar."""
        self.stream.write(("\n" if self.interactive else "") + text + "\n")
        self.stream.flush()
