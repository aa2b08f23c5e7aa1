"""Runs train.py with a fault injected at a chosen moment (a helper of the resume tests).

    JAXSEG_FAULT=kill_after_step:3 python tests/train/fault_injection.py --config ... --workdir ...

Faults (`$JAXSEG_FAULT`, one per run):
  kill_after_step:N       SIGKILL once step N's update is computed (before its checkpoint)
  kill_in_commit:N/state  SIGKILL while checkpoint N is being saved: its arrays are written,
                          the item is not yet committed (the async save thread dies with it)
  kill_in_commit:N/step   SIGKILL when every item of checkpoint N is written, just before
                          the step folder is renamed into place
  sigterm_after_step:N    SIGTERM to itself after step N (a preemption notice)
  sigint_after_step:N     SIGINT to itself after step N (Ctrl-C at the terminal)
  enospc_in_commit:N      checkpoint N's final rename fails with "No space left on device"

`$JAXSEG_BATCH_LOG`, if set, gets one line per training batch the loop takes (a hash of its
images and labels), so a test can see which data each run consumed.

Only the test process is patched; jaxseg itself holds no fault hooks.
"""

import hashlib
import os
import runpy
import signal
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _kill(signum=signal.SIGKILL):
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)


def _patch_steps(after_step, signum):
    from jaxseg.train import loop

    make_train_step = loop.make_train_step

    def patched(*args, **kwargs):
        train_step = make_train_step(*args, **kwargs)

        def step(state, batch):
            state, metrics = train_step(state, batch)
            if int(state.step) == after_step:
                _kill(signum)
            return state, metrics

        return step

    loop.make_train_step = patched


def _patch_commit(step, what):
    from orbax.checkpoint._src.path import atomicity

    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def patched(self, *args, **kwargs):
        final = self.get_final()
        if what == "step" and final.name == str(step):
            _kill()
        if what == "state" and final.name == "state" and final.parent.name.startswith(f"{step}."):
            _kill()
        return await finalize(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = patched


def _patch_enospc(step):
    import errno

    from orbax.checkpoint._src.path import atomicity

    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def patched(self, *args, **kwargs):
        if self.get_final().name == str(step):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.get_final()))
        return await finalize(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = patched


def _patch_batch_log(path):
    # The loop calls sharding.shard_batch on training batches; evaluation binds the function
    # by name when it is imported, so importing it first keeps evaluation batches out of
    # the log.
    import jaxseg.train.evaluate  # noqa: F401
    from jaxseg.runtime import sharding

    shard_batch = sharding.shard_batch

    def patched(batch, mesh, keys):
        digest = hashlib.sha1()
        for key in keys:
            digest.update(np.ascontiguousarray(batch[key]).tobytes())
        with open(path, "a") as f:
            f.write(digest.hexdigest() + "\n")
        return shard_batch(batch, mesh, keys)

    sharding.shard_batch = patched


def main():
    sys.path.insert(0, ROOT)
    fault = os.environ.get("JAXSEG_FAULT", "")
    if fault:
        kind, arg = fault.split(":")
        if kind == "kill_after_step":
            _patch_steps(int(arg), signal.SIGKILL)
        elif kind == "sigterm_after_step":
            _patch_steps(int(arg), signal.SIGTERM)
        elif kind == "sigint_after_step":
            _patch_steps(int(arg), signal.SIGINT)
        elif kind == "enospc_in_commit":
            _patch_enospc(int(arg))
        elif kind == "kill_in_commit":
            step, what = arg.split("/")
            _patch_commit(int(step), what)
        else:
            raise ValueError(f"unknown fault {fault!r}")
    if os.environ.get("JAXSEG_BATCH_LOG"):
        _patch_batch_log(os.environ["JAXSEG_BATCH_LOG"])
    sys.argv = [os.path.join(ROOT, "train.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
