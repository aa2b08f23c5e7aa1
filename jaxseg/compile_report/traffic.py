"""HBM traffic of an optimised HLO module per source op (the `op_name` metadata), most first.

    rows = traffic_by_op(module, while_loops(module))   # [{'op', 'pass', 'bytes', ...}]

Traffic is counted as XLA's cost model counts a memory-bound op: the bytes of every operand
and of the output of each instruction outside fusions (a fusion is one read of its operands
and one write of its output), loop bodies once, and once more times their trip bounds.
"""

from __future__ import annotations

import re

from jaxseg.compile_report.hlo import Instruction, Module, control_calls, type_bytes
from jaxseg.compile_report.loops import WhileLoop

__all__ = ["source_op", "traffic_by_op"]

# Instructions that move no data of their own (views, bookkeeping, control flow whose
# bodies are counted instruction by instruction).
_FREE = {
    "parameter",
    "constant",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "while",
    "call",
    "conditional",
    "after-all",
    "add-dependency",
    "opt-barrier",
    "partition-id",
    "replica-id",
    "iota",
}
# Ops that read only as much of their first operand as they write.
_SLICES = {"slice", "dynamic-slice", "gather"}


def source_op(op_name: str) -> tuple[str, str]:
    """Returns (source op, pass) of an `op_name`: wrappers removed, 'forward' or 'backward'.

    `jit(train_step)/transpose(jvp(MaskRCNN))/roi_heads/_pool/mul` ->
    (`MaskRCNN/roi_heads/_pool/mul`, 'backward').
    """
    parts = [p for p in op_name.split("/") if p]
    if parts and parts[0].startswith("jit("):
        parts = parts[1:]  # the step itself
    backward = any(p.startswith("transpose(") for p in parts)
    cleaned = []
    for part in parts:
        # Peel transformation wrappers: transpose(jvp(vmap(X))) -> X; a bare `vmap()` goes.
        while True:
            match = re.fullmatch(r"(?:jvp|transpose|vmap|jit|remat|checkpoint|pjit)\((.*)\)", part)
            if not match:
                break
            part = match.group(1)
        if part:
            cleaned.append(part)
    return "/".join(cleaned) or "(no op_name)", "backward" if backward else "forward"


def _instruction_bytes(module: Module, inst: Instruction) -> float:
    if inst.opcode in _FREE or inst.opcode.endswith("-start"):
        return 0.0
    if inst.opcode.endswith("-done"):  # an async pair, counted once: read and write
        return 2.0 * type_bytes(inst.type)
    out = type_bytes(inst.type)
    reads = 0.0
    for i, operand in enumerate(inst.operands):
        source = module.by_name.get(operand)
        if source is None:
            continue
        if i == 0 and inst.opcode in _SLICES:
            reads += out
        elif i == 0 and inst.opcode == "dynamic-update-slice":
            update = module.by_name.get(inst.operands[1]) if len(inst.operands) > 1 else None
            reads += type_bytes(update.type) if update else 0.0
        else:
            reads += type_bytes(source.type)
    if inst.opcode == "dynamic-update-slice" and len(inst.operands) > 1:
        update = module.by_name.get(inst.operands[1])
        out = type_bytes(update.type) if update else out
    return reads + out


def _op_name(module: Module, inst: Instruction, depth: int = 0) -> str:
    """Returns the `op_name` of an instruction, or of what it comes from when it has none.

    A fusion without one takes its fused root's; the end of an asynchronous copy or slice
    (`copy-done`) that of the value it moves, marked `(async)`.
    """
    name = inst.op_name
    if not name and inst.opcode == "fusion" and depth < 5:
        for inner in reversed(module.computations.get(inst.attribute("calls") or "", [])):
            if inner.op_name:
                name = inner.op_name
                break
    if inst.opcode.endswith("-done") and inst.operands and depth < 5:
        start = module.by_name.get(inst.operands[0])
        if start is not None and not name:
            name = start.op_name
            if not name and start.operands and start.operands[0] in module.by_name:
                name = _op_name(module, module.by_name[start.operands[0]], depth + 1)
        name = f"{name}/{inst.opcode.removesuffix('-done')} (async)"
    return name


def traffic_by_op(module: Module, loops: list[WhileLoop]) -> list[dict]:
    """Returns the HBM bytes of each source op, most first.

    Each row: `op` (see `source_op`), `pass` ('forward' / 'backward'), `bytes` (loop bodies
    once, as the cost model counts), `bytes_all_iterations` (loop bodies times their trip
    bounds; equal to `bytes` for ops outside loops), `instructions`.
    """
    runs = {loop.body: max(1, loop.iterations or 1) for loop in loops if loop.body}
    rows: dict[tuple[str, str], dict] = {}

    def visit(comp: str, times: int, seen: frozenset) -> None:
        if comp in seen:
            return
        seen = seen | {comp}
        for inst in module.computations.get(comp, []):
            for kind, called in control_calls(inst):
                visit(called, runs.get(called, times) if kind == "body" else times, seen)
            size = _instruction_bytes(module, inst)
            if size == 0:
                continue
            key = source_op(_op_name(module, inst))
            row = rows.setdefault(
                key,
                {
                    "op": key[0],
                    "pass": key[1],
                    "bytes": 0.0,
                    "bytes_all_iterations": 0.0,
                    "instructions": 0,
                },
            )
            row["bytes"] += size
            row["bytes_all_iterations"] += size * times
            row["instructions"] += 1

    visit(module.entry, 1, frozenset())
    return sorted(rows.values(), key=lambda r: -r["bytes"])
