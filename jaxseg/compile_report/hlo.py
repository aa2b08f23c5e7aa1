"""Reads an optimised HLO module's text: its while loops (with trip-count bounds) and HBM traffic.

    module = parse_module(compiled.as_text())
    loops = while_loops(module)          # [WhileLoop(name, trip_count_bound, source, ...)]
    rows = traffic_by_op(module, loops)  # bytes read + written per source op (`op_name`)

XLA's cost analysis (`compiled.cost_analysis()`) visits a while loop's body once, whatever
its trip count, so a step's FLOPs and bytes say nothing about how many times a loop runs.
This module bounds each loop's trip count from the program text, in order of trust:

1. `known_trip_count` in the loop's backend config (XLA:CPU/GPU annotate fori_loop / scan);
2. the induction variable: the loop condition compares a counter of the loop state with a
   constant (`i < 2000`), and the counter starts at a constant;
3. a boolean mask: the condition only reads a `pred` array of the state (`any(alive)`, as
   greedy NMS loops do). Nothing in the text bounds such a loop; its size per row (a loop
   under `vmap` has the images on its first axis) is given as the bound, *assumed* from the
   way these loops are written: each step clears at least one entry of the mask.

Traffic is counted as XLA's cost model counts it for a memory-bound op: the bytes of every
operand and of the output of each instruction outside fusions (a fusion is one read of its
operands and one write of its output), the loop bodies once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator

__all__ = [
    "Instruction",
    "Module",
    "WhileLoop",
    "parse_module",
    "source_op",
    "traffic_by_op",
    "type_bytes",
    "while_loops",
]

_BYTES = {
    "pred": 1,
    "s4": 0.5,
    "u4": 0.5,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
    "token": 0,
}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\](\{[^}]*\})?")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([^\s(]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_OPCODE = re.compile(r"\s*([a-z][\w\-.]*)\(")
_NAME = re.compile(r"%([^\s,(){}]+)")
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


def _padded(dims: list[int], layout: str) -> int:
    """Returns the element count of an array stored in `layout`'s first tile (TPU layouts).

    `{1,0:T(8,128)(2,1)}`: minor-to-major order 1, 0 and tiles of 8 x 128 over the two most
    minor dimensions, so f32[4,3] occupies 8 x 128 elements. Without a tile, the dims.
    """
    count = math.prod(dims)
    match = re.match(r"\{([\d,]*):.*?T\(([\d,]+)\)", layout or "")
    if match is None:
        return count
    minor_to_major = [int(d) for d in match.group(1).split(",") if d]
    tile = [int(t) for t in match.group(2).split(",")]
    padded = list(dims)
    extra = 1
    for k, size in enumerate(reversed(tile)):  # k = 0: the most minor dimension
        if k < len(minor_to_major):
            d = minor_to_major[k]
            padded[d] = -(-padded[d] // size) * size
        else:
            extra *= size  # a scalar or vector still fills whole tiles
    return math.prod(padded) * extra


def type_bytes(type_string: str) -> float:
    """Returns the bytes of an HLO type: an array `f32[8,128]{1,0}` or a tuple of them.

    Arrays count as stored: padded to their layout's tiles where it has them (TPU).
    """
    total = 0.0
    for dtype, dims, layout in _ARRAY.findall(type_string):
        size = _BYTES.get(dtype)
        if size is None:  # f8e4m3fn and other 8-bit floats
            size = 1 if dtype.startswith("f8") else 4
        shape = [int(d.strip().lstrip("<=")) for d in dims.split(",") if d.strip()]
        total += size * _padded(shape, layout)
    return total


def _first_array_dims(type_string: str) -> tuple[str, tuple[int, ...]] | None:
    match = _ARRAY.search(type_string)
    if match is None:
        return None
    dims = tuple(int(d.strip().lstrip("<=")) for d in match.group(2).split(",") if d.strip())
    return match.group(1), dims


@dataclasses.dataclass
class Instruction:
    """One HLO instruction: `%name = type opcode(operands), attributes`."""

    name: str
    type: str
    opcode: str
    operands: list[str]
    attributes: str
    computation: str
    literal: str  # what sits between the parentheses: `2000` of `constant(2000)`

    @property
    def op_name(self) -> str:
        match = re.search(r'op_name="([^"]*)"', self.attributes)
        return match.group(1) if match else ""

    def attribute(self, key: str) -> str | None:
        """Returns the computation named by `key=%comp` (condition, body, calls, to_apply)."""
        match = re.search(rf"\b{key}=%([^\s,(){{}}]+)", self.attributes)
        return match.group(1) if match else None

    def backend_config(self) -> dict:
        match = re.search(r"backend_config=(\{.*\})\s*$", self.attributes)
        if match is None:
            return {}
        try:
            return json.loads(match.group(1))
        except json.JSONDecodeError:
            return {}


@dataclasses.dataclass
class Module:
    """An HLO module: its computations (name -> instructions) and the entry's name."""

    computations: dict[str, list[Instruction]]
    entry: str
    by_name: dict[str, Instruction]
    roots: dict[str, str]


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _matching(text: str, start: int) -> int:
    """Returns the index of the bracket closing the one at `text[start]`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced brackets in HLO line: {text[:200]}")


def _parse_instruction(line: str, computation: str) -> tuple[Instruction, bool] | None:
    body = line.strip()
    is_root = body.startswith("ROOT ")
    if is_root:
        body = body[5:]
    if not body.startswith("%") or " = " not in body:
        return None
    name, rest = body.split(" = ", 1)
    name = name[1:]
    if rest.startswith("("):
        end = _matching(rest, 0)
        type_string, rest = rest[: end + 1], rest[end + 1 :]
    else:
        type_string, _, rest = rest.partition(" ")
        rest = " " + rest
    match = _OPCODE.match(rest)
    if match is None:
        return None
    opcode = match.group(1)
    open_at = match.end() - 1
    close_at = _matching(rest, open_at)
    operands = []
    for part in _split_top_level(rest[open_at + 1 : close_at]):
        names = _NAME.findall(part)
        if names:
            operands.append(names[-1])
    attributes = rest[close_at + 1 :].lstrip(", ")
    literal = rest[open_at + 1 : close_at].strip()
    instruction = Instruction(name, type_string, opcode, operands, attributes, computation, literal)
    return instruction, is_root


def parse_module(text: str) -> Module:
    """Returns the computations of an HLO module's text (`compiled.as_text()`)."""
    computations: dict[str, list[Instruction]] = {}
    by_name: dict[str, Instruction] = {}
    roots: dict[str, str] = {}
    entry, current = None, None
    for line in text.splitlines():
        if current is None:
            header = _HEADER.match(line)
            if header:
                current = header.group(2)
                computations[current] = []
                if header.group(1):
                    entry = current
            continue
        if line.startswith("}"):
            current = None
            continue
        parsed = _parse_instruction(line, current)
        if parsed is None:
            continue
        instruction, is_root = parsed
        computations[current].append(instruction)
        by_name[instruction.name] = instruction
        if is_root:
            roots[current] = instruction.name
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return Module(computations, entry, by_name, roots)


@dataclasses.dataclass
class WhileLoop:
    """A while loop of the compiled program.

    Attributes:
      name: the HLO instruction.
      op_name: the JAX source op (`jit(train_step)/jvp(MaskRCNN)/rpn/vmap()/while`).
      trip_count_bound: an upper bound on its iterations per execution, None if unknown.
      source: how the bound was found: 'known_trip_count', 'induction_variable',
        'mask (assumed)' or 'none'.
      executions: how many times the loop itself runs per step (the product of the trip
        bounds of the loops around it; 1 at the top level).
      body: the body computation.
    """

    name: str
    op_name: str
    trip_count_bound: int | None
    source: str
    executions: int
    body: str

    @property
    def iterations(self) -> int | None:
        """Returns the bound on the body's runs per step (`executions * trip_count_bound`)."""
        if self.trip_count_bound is None:
            return None
        return self.executions * self.trip_count_bound


def _control_calls(instruction: Instruction) -> Iterator[tuple[str, str]]:
    """Yields (kind, computation) for the computations an instruction runs as control flow."""
    if instruction.opcode == "while":
        for key in ("body", "condition"):
            comp = instruction.attribute(key)
            if comp:
                yield key, comp
    elif instruction.opcode == "call":
        comp = instruction.attribute("to_apply")
        if comp:
            yield "call", comp
    elif instruction.opcode == "conditional":
        for comp in re.findall(r"%([^\s,(){}]+)", _branches(instruction.attributes)):
            yield "branch", comp


def _branches(attributes: str) -> str:
    match = re.search(r"branch_computations=\{([^}]*)\}", attributes)
    if match:
        return match.group(1)
    names = [
        m.group(0) for m in re.finditer(r"(?:true|false)_computation=%[^\s,(){}]+", attributes)
    ]
    return ", ".join(n.split("=", 1)[1] for n in names)


def _resolve(module: Module, name: str, depth: int = 0):
    """Returns what a scalar value is: ('const', int), ('state', index) or None."""
    if depth > 20 or name not in module.by_name:
        return None
    inst = module.by_name[name]
    if inst.opcode == "constant":
        match = re.fullmatch(r"-?\d+", inst.literal)
        return ("const", int(match.group(0))) if match else None
    if inst.opcode == "get-tuple-element" and inst.operands:
        source = module.by_name.get(inst.operands[0])
        if source is not None and source.opcode == "parameter":
            match = re.search(r"index=(\d+)", inst.attributes)
            return ("state", int(match.group(1))) if match else None
        return None
    if inst.opcode in ("copy", "convert", "bitcast", "reshape", "broadcast") and inst.operands:
        return _resolve(module, inst.operands[0], depth + 1)
    return None


def _parameter_map(module: Module, comp: str, caller: Instruction) -> dict[int, str]:
    """Returns {parameter number -> caller operand} for a fused computation."""
    mapping = {}
    for inst in module.computations.get(comp, []):
        if inst.opcode == "parameter":
            number = re.fullmatch(r"\d+", inst.literal)
            if number and int(number.group(0)) < len(caller.operands):
                mapping[inst.name] = caller.operands[int(number.group(0))]
    return mapping


def _compares(module: Module, comp: str, alias: dict[str, str], seen: set[str]):
    """Yields (direction, lhs, rhs) of the integer compares in `comp` and its fusions.

    `alias` maps a fused computation's parameters to the caller's values, so that the
    operands are named in the loop condition's own computation.
    """
    if comp in seen:
        return
    seen = seen | {comp}
    for inst in module.computations.get(comp, []):
        if inst.opcode == "compare" and len(inst.operands) == 2:
            direction = re.search(r"direction=(\w+)", inst.attributes)
            if direction:
                lhs, rhs = (alias.get(o, o) for o in inst.operands)
                yield direction.group(1), lhs, rhs
        elif inst.opcode == "fusion":
            called = inst.attribute("calls")
            if called:
                inner = {
                    k: alias.get(v, v) for k, v in _parameter_map(module, called, inst).items()
                }
                yield from _compares(module, called, inner, seen)


def _init_value(module: Module, loop: Instruction, index: int) -> int | None:
    """Returns the constant that element `index` of the loop state starts at, if any."""
    if not loop.operands:
        return None
    init = module.by_name.get(loop.operands[0])
    while init is not None and init.opcode == "copy" and init.operands:
        init = module.by_name.get(init.operands[0])
    if init is None or init.opcode != "tuple" or index >= len(init.operands):
        return None
    value = _resolve(module, init.operands[index])
    return value[1] if value and value[0] == "const" else None


def _induction_bound(module: Module, loop: Instruction, condition: str) -> int | None:
    """Returns the trip-count bound implied by `counter <op> constant` compares, if any."""
    bounds = []
    config_init = loop.backend_config().get("known_init_step", {}).get("init")
    for direction, lhs, rhs in _compares(module, condition, {}, set()):
        a, b = _resolve(module, lhs), _resolve(module, rhs)
        if a is None or b is None:
            continue
        if a[0] == "const" and b[0] == "state":  # c > i  is  i < c
            a, b = b, a
            direction = {"GT": "LT", "GE": "LE", "LT": "GT", "LE": "GE"}.get(direction, direction)
        if not (a[0] == "state" and b[0] == "const"):
            continue
        start = _init_value(module, loop, a[1])
        if start is None:
            start = int(config_init) if config_init is not None else 0
        if direction in ("LT", "NE"):
            bounds.append(max(0, b[1] - start))
        elif direction == "LE":
            bounds.append(max(0, b[1] - start + 1))
    if not bounds:
        return None
    has_or = any(i.opcode == "or" for i in module.computations.get(condition, []))
    return max(bounds) if has_or else min(bounds)


def _mask_bound(module: Module, loop: Instruction, condition: str) -> int | None:
    """Returns the per-row size of the boolean state the condition reads, if that is all."""
    sizes = []
    for inst in module.computations.get(condition, []):
        # The state's parts (get-tuple-element), or the state itself when it is one array.
        whole = inst.opcode == "parameter" and not inst.type.startswith("(")
        if inst.opcode != "get-tuple-element" and not whole:
            continue
        parsed = _first_array_dims(inst.type)
        if parsed is None:
            continue
        dtype, dims = parsed
        if dtype != "pred":
            return None  # the condition reads more than a mask: no bound from it
        if "vmap" in loop.op_name and len(dims) >= 2:
            dims = dims[1:]  # the images of a vmapped loop run side by side
        sizes.append(math.prod(dims))
    return max(sizes) if sizes else None


def while_loops(module: Module) -> list[WhileLoop]:
    """Returns every while loop reachable from the entry, with bounds on their trip counts."""
    loops: list[WhileLoop] = []
    seen: set[tuple[str, int]] = set()

    def visit(comp: str, executions: int, depth: int) -> None:
        if depth > 50 or (comp, executions) in seen:
            return
        seen.add((comp, executions))
        for inst in module.computations.get(comp, []):
            if inst.opcode == "while":
                body, condition = inst.attribute("body"), inst.attribute("condition")
                known = inst.backend_config().get("known_trip_count", {}).get("n")
                if known is not None:
                    bound, source = int(known), "known_trip_count"
                else:
                    bound = _induction_bound(module, inst, condition)
                    source = "induction_variable"
                    if bound is None:
                        bound = _mask_bound(module, inst, condition)
                        source = "mask (assumed)" if bound is not None else "none"
                loops.append(WhileLoop(inst.name, inst.op_name, bound, source, executions, body))
                if body:
                    visit(body, executions * (bound if bound else 1), depth + 1)
            else:
                for _, called in _control_calls(inst):
                    visit(called, executions, depth + 1)

    visit(module.entry, 1, 0)
    return loops


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
            for kind, called in _control_calls(inst):
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
