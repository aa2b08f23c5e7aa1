"""What the report compiles for: a TPU slice without a TPU (`--topology`), or this machine.

    target = topology_target("v5e:2x2")   # needs libtpu (pip install 'jaxseg[tpu]')
    target = local_target()               # jax.devices(): CPU in CI

`CHIPS` holds the facts of each TPU generation the report compares a step against, with
their sources (Google Cloud's TPU pages).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.metadata
import importlib.util
import os
import re
import sys
from typing import Any

import jax

__all__ = [
    "CHIPS",
    "ChipFacts",
    "MissingLibtpuError",
    "Target",
    "chip_for_device_kind",
    "libtpu_requirement",
    "local_target",
    "topology_target",
]

GB, GIB = 10**9, 2**30


@dataclasses.dataclass(frozen=True)
class ChipFacts:
    """One TPU chip: its memory and speeds, as Google Cloud documents them.

    Attributes:
      name: 'v5e', ...
      hbm_bytes: HBM capacity (the unit the source states: GB = 1e9, GiB = 2^30 bytes).
      peak_bf16_flops: peak bf16 FLOP/s (float32 matmuls run at a fraction of it).
      hbm_bytes_per_second: HBM bandwidth.
      source: where the figures come from.
      accelerator_type: a `TPU_ACCELERATOR_TYPE` of the family (quiets libtpu's start).
    """

    name: str
    hbm_bytes: int
    peak_bf16_flops: float
    hbm_bytes_per_second: float
    source: str
    accelerator_type: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHIPS: dict[str, ChipFacts] = {
    "v4": ChipFacts(
        "v4",
        32 * GIB,
        275e12,
        1200e9,
        "https://cloud.google.com/tpu/docs/v4 (275 TFLOP/s bf16; HBM2 32 GiB, 1200 GBps)",
        "v4-8",
    ),
    "v5e": ChipFacts(
        "v5e",
        16 * GB,
        197e12,
        819e9,
        "https://cloud.google.com/tpu/docs/v5e (197 TFLOP/s bf16; HBM2 16 GB, 819 GBps)",
        "v5litepod-4",
    ),
    "v5p": ChipFacts(
        "v5p",
        95 * GB,
        459e12,
        2765e9,
        "https://cloud.google.com/tpu/docs/v5p (459 TFLOP/s bf16; HBM2e 95 GB, 2765 GBps)",
        "v5p-8",
    ),
    "v6e": ChipFacts(
        "v6e",
        32 * GB,
        918e12,
        1638e9,
        "https://cloud.google.com/tpu/docs/v6e (918 TFLOP/s bf16; HBM 32 GB, 1638 GBps)",
        "v6e-4",
    ),
}
# jax's device_kind of each generation (on a TPU VM and in compile-only topologies).
_DEVICE_KINDS = {
    "TPU v4": "v4",
    "TPU v5 lite": "v5e",
    "TPU v5e": "v5e",
    "TPU v5": "v5p",
    "TPU v5p": "v5p",
    "TPU v6 lite": "v6e",
    "TPU v6e": "v6e",
}


def chip_for_device_kind(device_kind: str) -> ChipFacts | None:
    """Returns the facts of a jax `device_kind` ('TPU v5 lite' -> v5e), None if unknown."""
    name = _DEVICE_KINDS.get(device_kind)
    return CHIPS[name] if name else None


@dataclasses.dataclass
class Target:
    """The devices a step is compiled for.

    Attributes:
      kind: 'topology' (compile-only TPU devices) or 'local' (this machine's backend).
      name: the topology ('v5e:2x2') or the backend ('cpu').
      devices: the devices of the mesh.
      chip: the chip's facts, None where unknown (CPU, GPU).
      devices_per_chip: devices of one chip (2 on v4, whose compile-only topology lists
        each TensorCore; 1 elsewhere).
    """

    kind: str
    name: str
    devices: list
    chip: ChipFacts | None
    devices_per_chip: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "platform": self.devices[0].platform,
            "device_kind": self.devices[0].device_kind,
            "num_devices": len(self.devices),
            "devices_per_chip": self.devices_per_chip,
            "num_chips": len(self.devices) // self.devices_per_chip,
            "chip": self.chip.as_dict() if self.chip else None,
        }


class MissingLibtpuError(RuntimeError):
    """`--topology` without libtpu, the TPU compiler."""


def libtpu_requirement() -> str:
    """Returns the libtpu pin of the installed jax's own `tpu` extra ('libtpu==0.0.42.*')."""
    for requirement in importlib.metadata.requires("jax") or ():
        if requirement.startswith("libtpu") and 'extra == "tpu"' in requirement:
            return requirement.split(";")[0].strip().replace(" ", "")
    return "libtpu"


def _libtpu_installed() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def _check_libtpu(topology: str) -> None:
    if _libtpu_installed():
        return
    pin = libtpu_requirement()
    raise MissingLibtpuError(
        f"--topology {topology} compiles for a TPU slice without one, which needs libtpu "
        f"(the TPU compiler), and libtpu is not installed for {sys.executable}. jax "
        f"{jax.__version__} pairs with {pin} (jax's own `tpu` extra). Install it with\n"
        f"    pip install 'jaxseg[tpu]'    # from a checkout: pip install -e '.[tpu]'\n"
        f"or  pip install '{pin}'\n"
        "(a 213 MB download, 684 MB installed for libtpu 0.0.42). Or run with --local to "
        "compile for this machine's own devices."
    )


def _chip_name(topology: str) -> str:
    match = re.fullmatch(r"(v\d+[a-z]*):[\dx]+", topology)
    if match is None or match.group(1) not in CHIPS:
        raise ValueError(
            f"--topology {topology!r}: expected <chip>:<shape> with chip one of "
            f"{sorted(CHIPS)}, e.g. v5e:2x2, v6e:2x4, v4:2x2x1, v5p:2x2x1"
        )
    return match.group(1)


def topology_target(topology: str) -> Target:
    """Returns compile-only TPU devices of a slice, e.g. 'v5e:2x2' (4 chips).

    Raises:
      ValueError: an unknown chip or a shape libtpu rejects.
      MissingLibtpuError: libtpu is not installed (the message says how to install it).
    """
    chip = CHIPS[_chip_name(topology)]
    _check_libtpu(topology)
    # libtpu reads these at start-up; on a machine that is not a TPU VM they only quiet
    # its complaints (a TPU VM sets its own, which win).
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", chip.accelerator_type)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    if not glob.glob("/dev/accel*") and not os.path.exists("/dev/vfio"):
        # No TPU here to guard: let compile-only processes load libtpu side by side (its
        # lockfile otherwise refuses a second one, e.g. tests beside a running report).
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        if not jax.config.jax_platforms:
            # The host side (tracing, shapes) runs on the CPU; trying to open a TPU that is
            # not there only costs time and a log line.
            jax.config.update("jax_platforms", "cpu")
    from jax.experimental import topologies

    try:
        devices = list(topologies.get_topology_desc(topology_name=topology, platform="tpu").devices)
    except Exception as e:  # libtpu's own error types
        raise ValueError(f"--topology {topology!r}: libtpu rejected it: {e}") from e
    chips = {tuple(getattr(d, "coords", (i,))) for i, d in enumerate(devices)}
    return Target("topology", topology, devices, chip, max(1, len(devices) // len(chips)))


def local_target() -> Target:
    """Returns this machine's devices (`jax.devices()`); chip facts where it is a TPU."""
    devices = jax.devices()
    return Target(
        "local", devices[0].platform, devices, chip_for_device_kind(devices[0].device_kind)
    )
