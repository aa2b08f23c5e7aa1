"""Two training processes (jax.distributed over localhost, CPU collectives) under the faults
of a cluster: a preemption notice to one of them, a process killed between checkpoints, a
process killed in the middle of a save.

One workdir goes through them in turn, each run resuming the last; the end must equal,
bit for bit, a two-process run never stopped. The runs are `scaling_worker.py --model
fcn_loop` (train_and_evaluate of a tiny FCN-8s); the faults come from `fault_injection.py`,
injected into one process only.
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from jaxseg.runtime.checkpointing import Checkpointer
from jaxseg.runtime.distributed import LOST_PROCESS_EXIT_CODE

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "scaling_worker.py")
NUM_STEPS = 8
LOST_TIMEOUT_S = 10  # config.distributed.lost_process_timeout_s of these runs
# Each run is bounded: a survivor that hung would be killed here and fail the test.
RUN_TIMEOUT_S = 300


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_pair(tmp_path, workdir, faults=("", "")):
    """Runs both processes to their end (each into a file of its own, never a pipe: see
    test_scaling._run_workers); returns ([exit codes], [outputs], seconds).

    Unlike test_scaling's harness it lets a process fail without killing the other: how
    the survivor ends is what these tests look at.
    """
    argv = [sys.executable, WORKER, "--model", "fcn_loop", "--data-dir", str(tmp_path / "tfds")]
    argv += ["--workdir", str(workdir), "--out", str(tmp_path / "result")]
    argv += ["--steps", str(NUM_STEPS), "--batch-size", "4", "--checkpoint-every", "2"]
    argv += ["--keep", "4", "--lost-timeout", str(LOST_TIMEOUT_S)]
    argv += ["--cache-dir", str(tmp_path / "xla"), "--num-processes", "2"]
    argv += ["--coordinator", f"localhost:{_free_port()}"]
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    logs = [tempfile.TemporaryFile("w+") for _ in faults]
    began = time.monotonic()
    procs = [
        subprocess.Popen(
            [*argv, "--process-id", str(i), *(["--fault", fault] if fault else [])],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i, (fault, log) in enumerate(zip(faults, logs, strict=True))
    ]
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1, RUN_TIMEOUT_S - (time.monotonic() - began))))
        except subprocess.TimeoutExpired:
            codes.append("hung")
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    return codes, outputs, time.monotonic() - began


def _why(outputs):
    return "\n".join(f"--- process {i}:\n{out[-4000:]}" for i, out in enumerate(outputs))


def _resumed(output):
    found = re.findall(r"resumed from \S+ at step (\d+)", output)
    return int(found[0]) if found else None


def _complete_steps(workdir):
    """Steps whose save finished: orbax renames a step's folder into place last."""
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    return sorted(int(name) for name in names if name.isdigit())


def _final_state(workdir):
    saved = Checkpointer(os.path.join(workdir, "checkpoints"), create=False).restore_raw(NUM_STEPS)
    return {
        jax.tree_util.keystr(p): np.asarray(v)
        for p, v in jax.tree_util.tree_leaves_with_path(saved)
    }


@pytest.mark.slow
def test_two_processes_survive_preemption_and_lost_processes(shapes_data_dir, tmp_path):
    """1. SIGTERM to process 1 after step 3: both agree on one step, save it together and
    exit 0. 2. Resumed there; process 1 SIGKILLed after step 7: process 0 exits with
    LOST_PROCESS_EXIT_CODE and a line naming process 1 (not a hang in the collective it
    was in). 3. Resumed from the last complete checkpoint; process 0 SIGKILLed inside the
    save of step 8 (every item written, the step folder not yet renamed): process 1 exits
    non-zero (JAX ends it at once when process 0, the coordinator, is gone), and its log
    ends with the line naming process 0 (from its sentinel child). 4. Resumed:
    not from the half-written step 8 but from the last complete one; the final train state
    equals the uninterrupted run's bit for bit."""
    os.symlink(shapes_data_dir, tmp_path / "tfds")
    straight, workdir = tmp_path / "straight", tmp_path / "faults"
    codes, outputs, _ = _run_pair(tmp_path, straight)
    assert codes == [0, 0], _why(outputs)

    # 1. A preemption notice to one process.
    codes, outputs, _ = _run_pair(tmp_path, workdir, ("", "sigterm_after_step:3"))
    assert codes == [0, 0], _why(outputs)
    saved = [re.findall(r"SIGTERM: saved step (\d+) in ", out) for out in outputs]
    assert saved[0] == saved[1] and len(saved[0]) == 1, _why(outputs)
    stop = int(saved[0][0])
    assert 3 <= stop < NUM_STEPS, _why(outputs)
    assert "SIGTERM reached process 1: every process saves step" in outputs[0]
    assert _complete_steps(workdir)[-1] == stop
    Checkpointer(os.path.join(workdir, "checkpoints"), create=False).check_complete(stop)

    # 2. A process killed between checkpoints (the other waits for it in a collective).
    codes, outputs, _ = _run_pair(tmp_path, workdir, ("", "kill_after_step:7"))
    assert codes == [LOST_PROCESS_EXIT_CODE, -9], _why(outputs)
    assert [_resumed(out) for out in outputs] == [stop, stop]
    lost = [line for line in outputs[0].splitlines() if "is lost" in line]
    assert len(lost) == 1 and "process 1 of 2 is lost" in lost[0], _why(outputs)
    assert "Restart all 2 processes" in lost[0] and "last complete checkpoint" in lost[0]

    # 3. The coordinator killed in the middle of a save.
    complete = _complete_steps(workdir)[-1]  # 6, unless the kill beat step 6's async save
    codes, outputs, _ = _run_pair(tmp_path, workdir, ("kill_in_commit:8/step", ""))
    assert codes[0] == -9 and codes[1] not in (0, "hung"), _why(outputs)
    assert [_resumed(out) for out in outputs] == [complete, complete]
    # JAX aborts it with its own message; its sentinel child then names process 0.
    lost = [line for line in outputs[1].splitlines() if "is lost" in line]
    assert len(lost) == 1 and "process 0 of 2 is lost" in lost[0], _why(outputs)
    assert "Restart all 2 processes" in lost[0] and "last complete checkpoint" in lost[0]
    assert NUM_STEPS not in _complete_steps(workdir)  # step 8 was left half-written

    # 4. Restarting both: the half-written step is never used.
    complete = _complete_steps(workdir)[-1]
    assert complete < NUM_STEPS
    codes, outputs, _ = _run_pair(tmp_path, workdir)
    assert codes == [0, 0], _why(outputs)
    assert [_resumed(out) for out in outputs] == [complete, complete]
    want, got = _final_state(straight), _final_state(workdir)
    assert set(got) == set(want) and want
    differ = [path for path in want if not np.array_equal(got[path], want[path])]
    assert not differ, f"differ from the uninterrupted run: {differ[:10]}"
