"""One training run per workdir: `<workdir>/train.lock`, held for as long as the run lives.

Two `train.py` on one workdir would delete and replace each other's checkpoints and
interleave their lines in `metrics.jsonl`. The lock is an exclusive `flock` on the file,
which the kernel releases when the holder dies, however it dies (SIGKILL, OOM killer), so
a lock left behind by a dead run is never in the way. The file also holds the holder's
host, pid, start time and command line, for the message that refuses a second run, and
for file systems that do not support `flock` (some network mounts), where a holder on
this host that no longer exists counts as stale.

Only process 0 of a multi-process run takes the lock (the processes share the workdir).
Evaluation (`eval.py`) only reads and needs no lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time

from absl import logging

__all__ = ["WorkdirLock", "WorkdirLockedError"]

LOCK_FILE = "train.lock"


class WorkdirLockedError(RuntimeError):
    """Raised when another live run holds the workdir."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}: "
        f"{holder.get('command', '?')}"
    )


class WorkdirLock:
    """An exclusive lock on a workdir; use as a context manager or `acquire()` / `release()`.

    Args:
      workdir: the run's folder (must exist).

    Raises (from `acquire`):
      WorkdirLockedError: another live run holds it; the message names that run.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    def _read_holder(self, fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            return json.loads(os.read(fd, 65536).decode() or "{}")
        except ValueError:
            return {}

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.ENOLCK, errno.EINVAL):
                    raise
                holder = self._read_holder(fd)
                locked = e.errno in (errno.EWOULDBLOCK, errno.EACCES)
                if locked or self._holder_alive(holder):
                    unsure = (
                        "" if locked else f" (if it is not running any more, delete {self.path})"
                    )
                    raise WorkdirLockedError(
                        f"workdir {os.path.dirname(self.path)} is in use by another training "
                        f"run ({_describe(holder)}). Wait for it to finish or stop it, or use "
                        f"another --workdir{unsure}."
                    ) from None
                # No flock on this file system and the recorded holder is gone: stale.
            previous = self._read_holder(fd)
            if previous and previous.get("pid") != os.getpid():
                logging.info("workdir lock of an earlier run (%s) is stale", _describe(previous))
            record = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.time(),
                "command": " ".join(sys.argv)[:500],
            }
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def _holder_alive(holder: dict) -> bool:
        if not holder or holder.get("host") != socket.gethostname():
            return bool(holder)  # another host's run: cannot tell, assume alive
        return _pid_alive(int(holder.get("pid", -1)))

    def release(self) -> None:
        """Releases the lock (the file stays; its record is cleared)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
