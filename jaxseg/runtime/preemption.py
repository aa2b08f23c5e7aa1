"""SIGTERM (a preemption notice) and Ctrl-C turn into a final checkpoint and a clean exit.

Cluster schedulers and cloud VMs send SIGTERM some seconds before they kill a job; a
person at the terminal presses Ctrl-C (SIGINT). While `PreemptionGuard` is active, either
signal only sets a flag; the training loop checks it after each step, writes a checkpoint
of that step (waiting until it is complete) and stops: after SIGTERM `train.py` exits with
status 0, after Ctrl-C with 130 (a shell script stops there, as after any Ctrl-C), and the
next run resumes from that step. The first signal also gives that signal its default
action back, so a second one ends the process at once, even in the middle of a long step,
for a user who really means it.
"""

from __future__ import annotations

import signal
import threading
import types

from absl import logging

__all__ = ["PreemptionGuard"]

_WHAT = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class PreemptionGuard:
    """A context manager that records SIGTERM and SIGINT instead of dying of them.

    Use as `with PreemptionGuard() as guard: ... if guard.requested: save and stop`, or
    call `install()` and `uninstall()`. `signal_name` is the first signal's name
    ("SIGTERM", "SIGINT"). Outside the main thread (where Python cannot install signal
    handlers) it does nothing and `requested` stays False.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    @property
    def interrupted(self) -> bool:
        """True when the request came from Ctrl-C (SIGINT) rather than a scheduler."""
        return self.signal_name == "SIGINT"

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        if self.requested:  # reached only if the default action was overridden since
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        # The OS's default action from now on: a second signal ends the process at once,
        # also while the main thread is blocked in a step (a Python handler would wait).
        signal.signal(signum, signal.SIG_DFL)
        logging.warning(
            "%s received: saving a checkpoint after this step, then exiting "
            "(send it again to exit at once without saving)",
            _WHAT.get(signum, self.signal_name),
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
