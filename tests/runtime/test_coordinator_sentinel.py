"""The sentinel child that names a lost process 0, with this test process as its parent and
a local socket as the coordinator (no jax.distributed; tests/train/test_multiprocess_faults.py
kills a real process 0)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from jaxseg.runtime import coordinator_sentinel
from jaxseg.runtime.coordinator_sentinel import CoordinatorSentinel

WAIT_S = 30  # far above the sentinel's own bound (POLL_S + CONNECT_TIMEOUT_S)


class FakeCoordinator:
    """A listening socket standing in for process 0's coordination service."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("localhost", 0))
        self.server.listen()
        self.address = f"localhost:{self.server.getsockname()[1]}"

    def close(self):
        """Process 0 is lost: its port refuses connections."""
        self.server.close()


@pytest.fixture
def coordinator():
    coordinator = FakeCoordinator()
    yield coordinator
    coordinator.close()


@pytest.fixture
def stderr():
    with tempfile.TemporaryFile("w+") as f:
        yield f


def _ended(sentinel, stderr):
    """Returns what the sentinel wrote, once it ended (it must end on its own)."""
    assert sentinel.process.wait(timeout=WAIT_S) == 0
    stderr.seek(0)
    return stderr.read()


def _die_abruptly(sentinel):
    """What the sentinel sees when its parent is SIGKILLed or aborted: the pipe closes."""
    sentinel.process.stdin.close()


def test_a_parent_ended_abruptly_with_process_0_gone_names_process_0(coordinator, stderr):
    sentinel = CoordinatorSentinel(coordinator.address, 1, 2, stderr=stderr)
    coordinator.close()
    _die_abruptly(sentinel)
    assert _ended(sentinel, stderr) == (
        f"process 0 of 2 is lost: the coordination service it hosts is gone "
        f"({coordinator.address}: Connection refused). Process 1 stopped too. Restart all 2 "
        "processes: training resumes from the last complete checkpoint.\n"
    )


def test_a_parent_that_finished_leaves_no_line(coordinator, stderr):
    sentinel = CoordinatorSentinel(coordinator.address, 1, 2, stderr=stderr)
    coordinator.close()
    sentinel.finished()  # waits for the child
    assert sentinel.process.returncode == 0
    _die_abruptly(sentinel)
    assert _ended(sentinel, stderr) == ""


def test_a_parent_killed_alone_leaves_no_line(coordinator, stderr):
    sentinel = CoordinatorSentinel(coordinator.address, 1, 2, stderr=stderr)
    _die_abruptly(sentinel)  # process 0 still answers: the others' watchdogs name this one
    assert _ended(sentinel, stderr) == ""


def test_an_error_of_the_parent_itself_leaves_no_line(coordinator, stderr):
    sentinel = CoordinatorSentinel(coordinator.address, 1, 2, stderr=stderr)
    sentinel.failed()  # process 0 still there: the error is the parent's own
    assert sentinel.process.wait(timeout=WAIT_S) == 0  # it stops watching at once
    coordinator.close()  # process 0 then stops too (its watchdog names this one)
    _die_abruptly(sentinel)
    assert _ended(sentinel, stderr) == ""


def test_an_error_caused_by_the_lost_process_0_names_it(coordinator, stderr):
    sentinel = CoordinatorSentinel(coordinator.address, 2, 3, stderr=stderr)
    coordinator.close()
    sentinel.failed()  # a collective broken by the loss of process 0
    _die_abruptly(sentinel)
    assert _ended(sentinel, stderr).startswith("process 0 of 3 is lost: ")


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_a_parent_sigkilled_while_its_fork_holds_the_pipe(coordinator, tmp_path):
    """A real parent SIGKILLed, whose forked child (a data worker, say) keeps the pipe open:
    the sentinel sees its parent gone, and writes into the stderr they share."""
    log = tmp_path / "parent.log"
    parent = textwrap.dedent(f"""
        import importlib.util, os, signal, time
        spec = importlib.util.spec_from_file_location("s", {coordinator_sentinel.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sentinel = module.CoordinatorSentinel({coordinator.address!r}, 1, 2)
        fork = os.fork()
        if fork == 0:
            time.sleep({WAIT_S})
            os._exit(0)
        print(sentinel.process.pid, fork, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    coordinator.close()
    with open(log, "w") as f:
        code = subprocess.run([sys.executable, "-c", parent], stdout=f, stderr=f).returncode
    assert code == -signal.SIGKILL
    sentinel_pid, fork_pid = map(int, log.read_text().split()[:2])
    try:
        began = time.monotonic()
        while _running(sentinel_pid) and time.monotonic() - began < WAIT_S:
            time.sleep(0.1)  # not this process's child: nothing to wait on
        assert not _running(sentinel_pid), "the sentinel outlived its parent"
        assert _running(fork_pid)  # so the pipe was still open: it saw its parent gone
    finally:
        os.kill(fork_pid, signal.SIGKILL)
    assert "process 0 of 2 is lost: " in log.read_text()


def test_unreachable_reports_why(coordinator):
    assert coordinator_sentinel.unreachable(coordinator.address) is None
    coordinator.close()
    assert coordinator_sentinel.unreachable(coordinator.address) == "Connection refused"
