"""SIGTERM (a preemption notice) and Ctrl-C turn into a final checkpoint and a clean exit.

Cluster schedulers and cloud VMs send SIGTERM some seconds before they kill a job; a
person at the terminal presses Ctrl-C (SIGINT). While `PreemptionGuard` is active, either
signal only sets a flag; the training loop checks it after each step, writes a checkpoint
of that step (waiting until it is complete) and stops: after SIGTERM `train.py` exits with
status 0, after Ctrl-C with 130 (a shell script stops there, as after any Ctrl-C), and the
next run resumes from that step. The first signal also gives that signal its default
action back, so a second one ends the process at once, even in the middle of a long step,
for a user who really means it.

With several processes (jax.distributed), a signal reaches one process, or several at
different moments, and a checkpoint is a collective save: `StopAgreement` makes them all
stop after the same step. The process that got the signal posts a notice in the
coordination service's key-value store; a thread in every process waits for it, posts the
last step its training loop has checked, meets the others at a barrier and reads every
process's step: all stop after the largest plus one, which none has passed (a loop that
gets there first waits for the agreement). The training loop only reads a flag per step;
the threads talk to the coordination service. Every process then saves that step together
and exits as the signal asks (0 after SIGTERM, 130 after Ctrl-C, on every process).
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
import types

from absl import logging

from jaxseg.runtime import distributed

__all__ = ["PreemptionGuard", "StopAgreement"]

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


_agreements = itertools.count()  # every process makes its agreements in the same order
# How long the processes may take to agree. A lost process is the watchdog's matter
# (`config.distributed.lost_process_timeout_s`); this bounds only the wait for one that is
# alive but slow to get there (a host still compiling while another already trains).
AGREEMENT_TIMEOUT_S = 3600.0


class StopAgreement:
    """The step at which every process of the job stops after a signal reached any of them.

    `should_stop(step, last_step=...)`, called by the training loop after each step, says
    whether to save `step` and stop. With one process it is `guard.requested`. With
    several, it becomes true on every process after the same step, once any process's
    guard got a signal (see the module's docstring); `signal_name` and `interrupted` then
    tell that signal, wherever it arrived. A signal at the last step needs no agreement:
    every process saves that step anyway.

    Args:
      guard: this process's installed `PreemptionGuard`.
      timeout_s: how long to wait for the other processes to agree (see
        `AGREEMENT_TIMEOUT_S`).
    """

    POLL_MS = 1000  # how often the waiting thread looks up, to end soon after `close()`

    def __init__(self, guard: PreemptionGuard, *, timeout_s: float = AGREEMENT_TIMEOUT_S):
        self.guard = guard
        self.timeout_s = timeout_s
        self._coordination = distributed.coordination()
        self._prefix = f"jaxseg_stop_{next(_agreements)}"
        self._changed = threading.Condition()
        self._checked = 0  # the last step the loop checked (guarded by _changed)
        self._stop_step: int | None = None
        self._noticed = False
        self._error: BaseException | None = None
        self._announced = False
        self._reported = False
        self._signal_name = ""
        self._origin = -1
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def signal_name(self) -> str:
        """The signal that stops the job ("SIGTERM", "SIGINT"), or "" if none came."""
        return self._signal_name or self.guard.signal_name

    @property
    def interrupted(self) -> bool:
        """True when the stop came from Ctrl-C (SIGINT) on any process."""
        return self.signal_name == "SIGINT"

    def start(self, step: int) -> None:
        """Starts listening (several processes); `step` is where the loop starts."""
        self._checked = step
        if self._coordination is not None:
            self._thread = threading.Thread(target=self._listen, name="jaxseg-stop", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stops listening: waits (about `POLL_MS`) for the thread to leave its request.

        A daemon thread still inside a request of JAX's client when the interpreter exits
        aborts the process ("FATAL: exception not rethrown").
        """
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.POLL_MS / 1000 + 1)

    def should_stop(self, step: int, *, last_step: int) -> bool:
        """Returns True when every process saves `step` and stops (the loop's check)."""
        if self._coordination is None:
            return self.guard.requested
        if self.guard.requested and not self._announced and step < last_step:
            self._announce()
        with self._changed:
            self._checked = step
            if self._noticed and step < last_step:
                agreed = self._changed.wait_for(
                    lambda: self._stop_step is not None or self._error is not None,
                    timeout=self.timeout_s,
                )
                if self._error is not None or not agreed:
                    raise RuntimeError(
                        f"{self._signal_name} reached process {self._origin}, but the "
                        f"processes could not agree on a step to stop at: "
                        f"{self._error or f'no agreement within {self.timeout_s:.0f} s'}"
                    )
            stop = self._stop_step is not None and step >= self._stop_step
        if stop and not self._reported:
            self._reported = True
            logging.warning(
                "%s reached process %d: every process saves step %d and stops",
                self._signal_name,
                self._origin,
                step,
            )
        return stop

    def _announce(self) -> None:
        client, process_id, _ = self._coordination
        self._announced = True
        try:
            client.key_value_set(f"{self._prefix}/notice", f"{process_id} {self.guard.signal_name}")
        except Exception as e:  # another process announced first: its notice stands
            logging.info("stop notice of process %d not posted: %s", process_id, e)

    def _listen(self) -> None:
        """Waits for a notice, then agrees on the step with the other processes."""
        client, process_id, _ = self._coordination
        while True:
            if self._closed.is_set():
                return
            began = time.monotonic()
            try:
                notice = client.blocking_key_value_get(f"{self._prefix}/notice", self.POLL_MS)
                break
            except Exception:  # timed out (or the service is gone: the watchdog's matter)
                if time.monotonic() - began < self.POLL_MS / 2000:
                    self._closed.wait(self.POLL_MS / 1000)
        origin, name = notice.split()
        with self._changed:
            self._noticed = True
            self._origin, self._signal_name = int(origin), name
            posted = self._checked
        try:
            client.key_value_set(f"{self._prefix}/step/{process_id}", str(posted))
            client.wait_at_barrier(f"{self._prefix}/barrier", int(self.timeout_s * 1000))
            steps = [int(v) for _, v in client.key_value_dir_get(f"{self._prefix}/step/")]
            stop_step, error = max(steps) + 1, None
        except Exception as e:
            stop_step, error = None, e
        with self._changed:
            self._stop_step, self._error = stop_step, error
            self._changed.notify_all()
