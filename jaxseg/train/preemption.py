"""SIGTERM (a preemption notice) turns into a final checkpoint and a clean exit.

Cluster schedulers and cloud VMs send SIGTERM some seconds before they kill a job. While
`PreemptionGuard` is active, SIGTERM only sets a flag; the training loop checks it after
each step, writes a checkpoint of that step (waiting until it is complete) and returns
normally, so `train.py` exits with status 0 and the next run resumes from that step.
A second SIGTERM while the flag is set falls back to the previous handler (the default:
exit at once), for a user who really means it.
"""

from __future__ import annotations

import signal
import threading
import types

from absl import logging

__all__ = ["PreemptionGuard"]


class PreemptionGuard:
    """A context manager that records SIGTERM instead of dying of it.

    Use as `with PreemptionGuard() as guard: ... if guard.requested: save and stop`, or
    call `install()` and `uninstall()`.
    Outside the main thread (where Python cannot install signal handlers) it does
    nothing and `requested` stays False.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.signals = signals
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        if self.requested:  # a second notice: let the previous handler act
            previous = self._previous.get(signum)
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        logging.warning(
            "%s received: saving a checkpoint after this step, then exiting", self.signal_name
        )

    def install(self) -> None:
        """Routes the signals to this guard (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Gives the signals back to their previous handlers."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> PreemptionGuard:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.uninstall()
