"""SIGTERM between `distributed.initialize` and the training loop ends the process.

JAX's preemption service (on by default) installs a C++ SIGTERM handler at
`jax.distributed.initialize` that only records the notice; a SIGTERM while a
multi-process run compiles or restores was swallowed and the run trained on.
"""

import os
import signal
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, socket, time

    import jax

    from jaxseg.config import base_config
    from jaxseg.runtime import distributed

    probe = socket.socket()
    probe.bind(("localhost", 0))
    port = probe.getsockname()[1]
    probe.close()
    settings = base_config().distributed
    settings.update(initialize="yes", coordinator_address=f"localhost:{port}",
                    num_processes=1, process_id=0)
    distributed.initialize(settings)
    print("preemption service option restored:", jax.config.jax_enable_preemption_service,
          flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    print("survived SIGTERM", flush=True)
    """
)


def test_sigterm_after_distributed_initialize_ends_the_process():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert "preemption service option restored: True" in result.stdout, result.stderr[-2000:]
    assert "survived SIGTERM" not in result.stdout
    assert result.returncode == -signal.SIGTERM, (result.returncode, result.stderr[-2000:])
