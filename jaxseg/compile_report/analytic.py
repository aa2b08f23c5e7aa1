"""An analytic FLOP count: the convolutions and matrix products of a function's jaxpr.

    count = count_flops(fn, *abstract_args)   # FlopCount: conv, dot, while_loops, layer_bytes

The count walks the jaxpr JAX traces for `fn` (no compile, nothing executed) and adds
2 x multiply-adds for every `conv_general_dilated` and `dot_general`, from their operand
and output shapes: the conv and dense layers at the shapes the program really runs them
(after vmap, at the configured batch, RoI and proposal counts). Elementwise work, gathers
and reductions are left out: they are memory traffic, not matrix-unit FLOPs.

The same walk gives `layer_bytes`: the bytes each of those layers reads and writes if it
reads its input and weights once and writes its output once, in their own dtypes. Summed,
that is the HBM traffic of the layers run one after the other with every activation making
one round trip to memory and nothing else (elementwise work fused into the layers): a
floor for a program of unfused layers, against which a compiled program's bytes show what
its other operations cost.

Why the jaxpr and not flax's `tabulate`: the jaxpr also holds the layers the model calls
outside its Flax modules (the FCN's interpolation matmuls, the patch convolution of
`PatchConv`), vmapped heads at their real sizes, and it needs no compile (`tabulate`'s
FLOP column compiles every module through XLA's cost model, which is what it is checked
against here).

A `scan` body is counted `length` times; a `while_loop` body once, as XLA's cost model
does (its trip count is not in the jaxpr); `cond` counts its most expensive branch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["FlopCount", "conv_flops", "count_flops", "dot_flops"]


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs (2 per multiply-add) of a traced function.

    Attributes:
      conv: of its `conv_general_dilated`s.
      dot: of its `dot_general`s.
      while_loops: how many while loops were met (their bodies counted once).
      layer_bytes: operand and output bytes of those convs and dots (see the module doc).
    """

    conv: int
    dot: int
    while_loops: int
    layer_bytes: int = 0

    @property
    def total(self) -> int:
        return self.conv + self.dot


def conv_flops(lhs_shape, rhs_shape, out_shape, params: dict[str, Any]) -> int:
    """Returns 2 x the multiply-adds of a `conv_general_dilated` with these shapes.

    A convolution: 2 x output elements x kernel window x input channels per group. A
    transposed convolution (input dilation > 1) only multiplies the real input pixels, not
    the zeros inserted between them: 2 x batch x input pixels x window x C_in/group x C_out.
    """
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    window = math.prod(rhs_shape[d] for d in rhs_spec[2:])
    in_per_group = rhs_shape[rhs_spec[1]]
    if any(d > 1 for d in params.get("lhs_dilation") or ()):
        pixels = math.prod(lhs_shape[d] for d in lhs_spec[2:])
        out_channels = out_shape[out_spec[1]]
        return 2 * lhs_shape[lhs_spec[0]] * pixels * window * in_per_group * out_channels
    return 2 * math.prod(out_shape) * window * in_per_group


def dot_flops(lhs_shape, rhs_shape, params: dict[str, Any]) -> int:
    """Returns 2 x the multiply-adds of a `dot_general`: 2 x |lhs| x rhs's free dimensions."""
    (_, rhs_contract), (_, rhs_batch) = params["dimension_numbers"]
    free = [d for d in range(len(rhs_shape)) if d not in rhs_contract and d not in rhs_batch]
    return 2 * math.prod(lhs_shape) * math.prod(rhs_shape[d] for d in free)


def _subjaxprs(value: Any):
    """Yields the jaxprs held by an equation parameter (a jaxpr, a closed one, or a tuple)."""
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _subjaxprs(v)


def _bytes(avals) -> int:
    return sum(math.prod(a.shape) * a.dtype.itemsize for a in avals)


def _walk(jaxpr) -> tuple[int, int, int, int]:
    """Returns (conv FLOPs, dot FLOPs, while loops, layer bytes) of a jaxpr."""
    conv = dot = loops = layer_bytes = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("conv_general_dilated", "dot_general"):
            lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
            if name == "conv_general_dilated":
                conv += conv_flops(lhs, rhs, eqn.outvars[0].aval.shape, eqn.params)
            else:
                dot += dot_flops(lhs, rhs, eqn.params)
            layer_bytes += _bytes(v.aval for v in (*eqn.invars[:2], *eqn.outvars))
            continue
        if name == "cond":
            costs = [_walk(j) for j in _subjaxprs(eqn.params["branches"])]
            best = max(costs, key=lambda c: c[0] + c[1], default=(0, 0, 0, 0))
            conv, dot, loops = conv + best[0], dot + best[1], loops + best[2]
            layer_bytes += best[3]
            continue
        times = int(eqn.params.get("length", 1)) if name == "scan" else 1
        if name == "while":
            loops += 1
        for key, value in eqn.params.items():
            if name == "while" and key == "cond_jaxpr":
                continue  # a loop condition holds no layer
            for sub in _subjaxprs(value):
                c, d, w, b = _walk(sub)
                conv, dot, loops = conv + times * c, dot + times * d, loops + w
                layer_bytes += times * b
    return conv, dot, loops, layer_bytes


def count_flops(fn: Callable[..., Any], *args: Any) -> FlopCount:
    """Returns the analytic FLOPs of `fn(*args)`; `args` may be `jax.ShapeDtypeStruct`s."""
    closed = jax.make_jaxpr(fn)(*args)
    conv, dot, loops, layer_bytes = _walk(closed.jaxpr)
    return FlopCount(conv=conv, dot=dot, while_loops=loops, layer_bytes=layer_bytes)
