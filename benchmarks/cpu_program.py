"""A fingerprint of the programs XLA:CPU compiles for tiny FCN-8s and Mask R-CNN steps.

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/cpu_program.py

Prints, for the gradient of FCN-8s, the gradient of Mask R-CNN's training losses and Mask
R-CNN's inference (tiny widths, 64 px, batch 2), a hash of the multiset of (opcode, result
type) of the optimised HLO and its instruction count; metadata (op names, source lines) is
left out. Run at two commits, equal fingerprints mean a change left the CPU programs as
they were: how the accelerator-only rewrites (`jax.lax.platform_dependent` branches) were
checked not to touch CPU speed.
"""

from __future__ import annotations

import collections
import hashlib
import re

import jax
import jax.numpy as jnp

from jaxseg import testing
from jaxseg.detection import Instances
from jaxseg.models import build_model
from jaxseg.models.mask_rcnn import MaskRCNN

_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%\S+ = (\S+) (\S+?)\(")


def fingerprint(hlo_text: str) -> tuple[str, int]:
    """Returns (hash, instruction count) of an HLO module's (opcode, type) multiset."""
    ops = collections.Counter()
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            ops[(re.sub(r"\{[^}]*\}", "", m.group(1)), m.group(2))] += 1
    return hashlib.sha1(repr(sorted(ops.items())).encode()).hexdigest()[:12], sum(ops.values())


def main() -> None:
    fcn = build_model("fcn8s", num_classes=3, width=0.125)
    x = jnp.zeros((2, 64, 64, 3))
    fcn_vars = fcn.init(jax.random.key(0), x)

    def fcn_loss(params):
        return jnp.sum(fcn.apply({**fcn_vars, "params": params}, x))

    model = MaskRCNN(**testing.tiny_mask_rcnn())
    images = jnp.zeros((2, 64, 64, 3))
    boxes = jnp.asarray([[[4.0, 4, 30, 30], [20, 30, 60, 50]]] * 2)
    gt = Instances(
        boxes=boxes,
        classes=jnp.array([[1, 2]] * 2),
        masks=jnp.zeros((2, 2, 64, 64), jnp.uint8),
        valid=jnp.ones((2, 2), bool),
    )
    variables = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0)}, images, train=False)
    )
    rest = {k: v for k, v in variables.items() if k != "params"}

    def mask_rcnn_loss(params, rest, key):
        _, losses = model.apply(
            {**rest, "params": params}, images, gt, train=True, rngs={"sampling": key}
        )
        return sum(jnp.sum(v) for v in jax.tree.leaves(losses))

    programs = {
        "fcn8s gradient": jax.jit(jax.grad(fcn_loss)).lower(fcn_vars["params"]),
        "mask_rcnn training gradient": jax.jit(jax.grad(mask_rcnn_loss)).lower(
            variables["params"], rest, jax.random.key(1)
        ),
        "mask_rcnn inference": jax.jit(lambda v: model.apply(v, images, train=False)).lower(
            variables
        ),
    }
    for name, lowered in programs.items():
        digest, count = fingerprint(lowered.compile().as_text())
        print(f"{name:30s} {digest}  {count} instructions")


if __name__ == "__main__":
    main()
