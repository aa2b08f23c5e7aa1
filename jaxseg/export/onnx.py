"""ONNX export through jax2onnx: the same pure function as the `jax.export` artifact.

`write_onnx(fn, specs, path)` converts a jittable function of arrays (the predictor's
function, variables closed over) to an ONNX file, via jax2onnx on its jaxpr. The function is
first traced to a jaxpr of plain `lax` primitives, so that what jax2onnx sees does not depend
on how the model was written (Flax modules, `jnp` helpers, `custom_jvp` activations):
calls (`jit`, `custom_jvp_call`, ...) are inlined, `jax.lax.platform_dependent` takes its
CPU branch (ONNX Runtime runs the CPU program), and one primitive is rewritten into a
form ONNX Runtime runs (a max pool over an NHWC tensor becomes a max pool over [B*C, H, W],
whose ONNX `MaxPool` has the two spatial axes ONNX Runtime supports; the values are the
same).

What converts: the semantic models (FCN-VGG16, FCN-ResNet), checked in ONNX Runtime against
the same function run by XLA (tests/export/test_onnx.py). What does not: Mask R-CNN, whose
post-processing scatters and loops in ways jax2onnx 0.17 has no ONNX for; `write_onnx`
raises `OnnxUnsupportedError` naming the primitive and the line of jaxseg that made it,
and the `jax.export` artifact (`python -m jaxseg.export`) is the deployable form.

jax2onnx is an optional dependency (`pip install jaxseg[onnx]` and then
`pip install --no-deps jax2onnx`, see docs/deploy.md: its package metadata pins an older
orbax-checkpoint than jaxseg needs, and pulls in libraries the conversion never imports).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core

__all__ = ["OnnxUnsupportedError", "onnx_primitives", "write_onnx"]

_INSTALL = (
    "ONNX export needs jax2onnx and onnxruntime: pip install 'jaxseg[onnx]' && "
    "pip install --no-deps 'jax2onnx==0.17.*' (see docs/deploy.md)"
)

# Call-like primitives whose body is inlined (the parameter naming the body).
_CALLS = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
}


class OnnxUnsupportedError(NotImplementedError):
    """jax2onnx has no ONNX for a primitive of the function (named in the message)."""


def _nhwc_max_pool(x: jax.Array, params: dict[str, Any]) -> jax.Array:
    """`reduce_window_max` over the two middle axes of `x [B, H, W, C]`, as [B*C, H, W]."""
    window, strides, padding = (
        params["window_dimensions"],
        params["window_strides"],
        params["padding"],
    )
    b, h, w, c = x.shape
    planes = x.transpose(0, 3, 1, 2).reshape(b * c, h, w)
    pooled = jax.lax.reduce_window(
        planes,
        jnp.array(-jnp.inf, x.dtype),
        jax.lax.max,
        (1, *window[1:3]),
        (1, *strides[1:3]),
        ((0, 0), *padding[1:3]),
    )
    return pooled.reshape(b, c, *pooled.shape[1:]).transpose(0, 2, 3, 1)


def _is_nhwc_max_pool(eqn: core.JaxprEqn) -> bool:
    params = eqn.params
    return (
        eqn.primitive.name == "reduce_window_max"
        and len(params["window_dimensions"]) == 4
        and params["window_dimensions"][0] == params["window_dimensions"][3] == 1
        and params["window_strides"][0] == params["window_strides"][3] == 1
        and tuple(params["padding"][0]) == tuple(params["padding"][3]) == (0, 0)
        and all(d == 1 for d in params.get("base_dilation", (1,) * 4))
        and all(d == 1 for d in params.get("window_dilation", (1,) * 4))
    )


def _cpu_branch(platforms: Sequence[Sequence[str] | None]) -> int:
    """The branch `jax.lax.platform_dependent` takes on CPU: ONNX gets the CPU program.

    jaxseg's CPU branches (patch matmuls, reshape max pools) are plain matmuls and
    reductions, which jax2onnx converts; `platform_index` itself has no ONNX.
    """
    for i, names in enumerate(platforms):
        if names is not None and "cpu" in names:
            return i
    return next(i for i, names in enumerate(platforms) if names is None)  # the default


def _evaluate(jaxpr: core.Jaxpr, consts: Sequence[Any], *args: Any) -> list[Any]:
    """Evaluates `jaxpr` under the current trace, with calls inlined and pools rewritten."""
    env: dict[core.Var, Any] = {}

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        body = eqn.params.get(_CALLS.get(eqn.primitive.name, ""))
        if eqn.primitive.name == "platform_index":
            outs = [_cpu_branch(eqn.params["platforms"])]
        elif eqn.primitive.name == "cond" and isinstance(values[0], int):
            branch = eqn.params["branches"][values[0]]  # a branch of `platform_dependent`
            outs = _evaluate(branch.jaxpr, branch.consts, *values[1:])
        elif isinstance(body, core.ClosedJaxpr):
            outs = _evaluate(body.jaxpr, body.consts, *values)
        elif isinstance(body, core.Jaxpr):
            outs = _evaluate(body, (), *values)
        elif _is_nhwc_max_pool(eqn):
            outs = [_nhwc_max_pool(values[0], eqn.params)]
        else:
            outs = eqn.primitive.bind(*values, **eqn.params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _flattened(fn: Callable[..., Any], specs: Sequence[jax.ShapeDtypeStruct]):
    """Returns `(flat_fn, output tree)`: `fn` as a function of arrays to a tuple of arrays,
    traced once, with calls inlined."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*specs)
    out_tree = jax.tree.structure(out_shape)

    def flat(*args):
        return tuple(_evaluate(closed.jaxpr, closed.consts, *args))

    return flat, out_tree


def onnx_primitives(fn: Callable[..., Any], specs: Sequence[jax.ShapeDtypeStruct]) -> set[str]:
    """Returns the names of the primitives jax2onnx is given for `fn` (after inlining)."""
    flat, _ = _flattened(fn, specs)
    names: set[str] = set()

    def walk(jaxpr: core.Jaxpr) -> None:
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for sub in core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(flat)(*specs).jaxpr)
    return names


def _failed_equation(tb: types.TracebackType | None) -> core.JaxprEqn | None:
    """Returns the equation jax2onnx was lowering when it failed (a local named `eqn`)."""
    found = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("eqn")
        if isinstance(candidate, core.JaxprEqn):
            found = candidate
        tb = tb.tb_next
    return found


def _where(eqn: core.JaxprEqn) -> str:
    """The innermost jaxseg frame that made `eqn` ('file:line (function)'), or ''."""
    frames = getattr(getattr(eqn.source_info, "traceback", None), "frames", None) or []
    for frame in frames:
        if f"{os.sep}jaxseg{os.sep}" in frame.file_name and "export" not in frame.file_name:
            return f"{frame.file_name.split(os.sep + 'jaxseg' + os.sep)[-1]}:{frame.line_num} "
    return ""


def write_onnx(
    fn: Callable[..., Any],
    specs: Sequence[jax.ShapeDtypeStruct],
    path: str | os.PathLike,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str] | None = None,
    opset: int = 21,
) -> list[str]:
    """Writes `fn` as an ONNX model to `path`; returns the graph's output names.

    Args:
      fn: a jittable function of the arrays `specs` describes (variables closed over, they
        become the graph's initialisers), returning an array, a tuple or a dict of arrays
        (a dict's outputs are in sorted key order, named by the keys).
      specs: the inputs' shapes and dtypes (fixed: the graph has no symbolic dimension).
      path: the `.onnx` file (weights inside: up to protobuf's 2 GB); written to a
        temporary file and renamed, so an interrupted export leaves no half-written model.
      input_names: a name per input.
      output_names: a name per output; default the dict's keys, else `output_<i>`.
      opset: the ONNX opset.

    Raises:
      ImportError: jax2onnx is not installed (the message says how to install it).
      OnnxUnsupportedError: jax2onnx has no ONNX for a primitive of `fn`; the message
        names it and the jaxseg line that made it.
    """
    try:
        import jax2onnx  # an optional dependency
    except ImportError as e:
        raise ImportError(_INSTALL) from e
    flat, out_tree = _flattened(fn, specs)
    keys = _output_keys(fn, specs)
    names = list(output_names or keys or [f"output_{i}" for i in range(out_tree.num_leaves)])
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial"
    try:
        with _quiet_plugin_loader():
            model = jax2onnx.to_onnx(
                flat,
                list(specs),
                model_name=os.path.splitext(os.path.basename(path))[0],
                opset=opset,
                input_names=list(input_names),
                output_names=names,
            )
    except (NotImplementedError, RuntimeError, ValueError, TypeError, KeyError) as e:
        eqn = _failed_equation(sys.exc_info()[2])
        what = f"primitive {eqn.primitive.name!r} at {_where(eqn)}" if eqn is not None else ""
        reason = str(e) if len(str(e)) < 200 else f"{str(e)[:200]}..."
        raise OnnxUnsupportedError(
            f"jax2onnx {importlib.metadata.version('jax2onnx')} cannot convert {what}"
            f"({type(e).__name__}: {reason}); export the jax.export artifact instead "
            "(python -m jaxseg.export, docs/deploy.md)"
        ) from e
    import onnx  # installed with jax2onnx

    try:
        onnx.save_model(model, partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return names


@contextlib.contextmanager
def _quiet_plugin_loader():
    """Silences jax2onnx's warnings about its example plugins for libraries that are not
    installed (equinox, dm-pix): the conversion does not use them."""
    logger = logging.getLogger("jax2onnx.plugins.plugin_system")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _output_keys(fn, specs) -> list[str] | None:
    """The sorted keys of `fn`'s output when it is a flat dict, else None."""
    out = jax.eval_shape(fn, *specs)
    if isinstance(out, dict) and all(not isinstance(v, dict) for v in out.values()):
        return sorted(out)
    return None
