"""A child process that says so when process 0 (the coordinator) of a multi-process run is lost.

When process 0, which hosts jax.distributed's coordination service, is killed, JAX's client
in every other process aborts it at once (SIGABRT, exit 134) with JAX's own message only:
no Python runs after that, neither the watchdog nor a signal handler. So each other process
starts this sentinel at `distributed.initialize` time: a small Python child (the standard
library only: no jax, no device) that holds the read end of a pipe from its parent and
blocks on it. The parent writes

- `DONE` when it finished, or when its watchdog already logged its own line: the sentinel
  ends in silence;
- `FAILED` when it stopped with an error (`distributed.mark_failed`): the sentinel checks
  the coordinator at once. Still reachable: the error is the parent's own, and it ends in
  silence. Gone: the error came from the lost coordinator, and it keeps watching.

When the pipe closes otherwise (the parent ended abruptly) or the parent is gone, it tries
to connect to the coordinator's port; refused or no answer means process 0 is lost, and it
writes one line to the stderr it shares with its parent, in the watchdog's words:

    process 0 of 2 is lost: the coordination service it hosts is gone (localhost:5432:
    Connection refused). Process 1 stopped too. Restart all 2 processes: training resumes
    from the last complete checkpoint.

It never outlives its parent by more than `POLL_S + CONNECT_TIMEOUT_S` seconds. It ignores
SIGINT and SIGTERM (a Ctrl-C or a preemption notice sent to the whole process group is the
parent's to handle), and it is started with fork + exec (`subprocess`), so it shares no
state with the parent's threads.

Started as a script (by path, so that the `jaxseg` package, which imports jax, is not
imported): `python -I coordinator_sentinel.py HOST:PORT PROCESS_ID NUM_PROCESSES PARENT_PID`.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys

DONE, FAILED = b"d", b"f"
# How often it checks that its parent still lives: a process forked by the parent (a data
# worker) inherits the pipe and could keep it open after the parent's death.
POLL_S = 1.0
CONNECT_TIMEOUT_S = 5.0


class CoordinatorSentinel:
    """The parent's handle on its sentinel child (see the module's docstring)."""

    def __init__(
        self, coordinator_address: str, process_id: int, num_processes: int, *, stderr=None
    ):
        """Starts the child.

        Args:
          coordinator_address: 'host:port' of the coordination service (process 0).
          process_id, num_processes: of this process, for the line.
          stderr: where the child writes its line; None = this process's stderr.
        """
        argv = [sys.executable, "-I", os.path.abspath(__file__), coordinator_address]
        argv += [str(process_id), str(num_processes), str(os.getpid())]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr
        )

    def finished(self) -> None:
        """Tells the child to end without a word: this process finished, or said why not."""
        self._tell(DONE)
        try:
            self.process.wait(timeout=CONNECT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass  # it ends with its parent anyway

    def failed(self) -> None:
        """Tells the child that this process stopped with an error (see the module's docstring)."""
        self._tell(FAILED)

    def _tell(self, what: bytes) -> None:
        try:
            self.process.stdin.write(what)
            self.process.stdin.flush()
        except (OSError, ValueError):  # it already ended (killed with the process group)
            pass


def unreachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Returns why nothing answers on `address` ('host:port', '[v6]:port'), or None if it does."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer in {timeout_s:.0f} s"
    except OSError as e:
        return e.strerror or str(e)


def _watch(address: str, parent: int) -> str | None:
    """Returns why the coordinator is gone once the parent ended abruptly, else None."""
    while True:
        ready, _, _ = select.select([0], [], [], POLL_S)
        if not ready:
            if os.getppid() != parent:
                break
            continue
        message = os.read(0, 64)
        if not message:  # the parent's end of the pipe closed: it ended
            break
        if DONE in message:
            return None
        if FAILED in message and unreachable(address) is None:
            return None  # its own error, with the coordinator alive
    return unreachable(address)


def main(argv: list[str]) -> int:
    address, process_id, num_processes, parent = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    why = _watch(address, parent)
    if why is not None:
        sys.stderr.write(
            f"process 0 of {num_processes} is lost: the coordination service it hosts is gone "
            f"({address}: {why}). Process {process_id} stopped too. Restart all "
            f"{num_processes} processes: training resumes from the last complete checkpoint.\n"
        )
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
