"""The while loops of an optimised HLO module, with an upper bound on each one's trip count.

    loops = while_loops(parse_module(compiled.as_text()))
    sum(loop.iterations for loop in loops)   # the step's sequential depth

XLA's cost analysis (`compiled.cost_analysis()`) visits a while loop's body once, whatever
its trip count, so a step's FLOPs and bytes say nothing about how many times a loop runs.
The bound on each loop's trip count comes from the program text, in order of trust:

1. `known_trip_count` in the loop's backend config (XLA:CPU/GPU annotate fori_loop / scan);
2. the induction variable: the loop condition compares a counter of the loop state with a
   constant (`i < 2000`), and the counter starts at a constant;
3. a boolean mask: the condition only reads a `pred` array of the state (`any(alive)`, as
   greedy NMS loops do). Nothing in the text bounds such a loop; its size per row (a loop
   under `vmap` has the images on its first axis) is given as the bound, *assumed* from the
   way these loops are written: each step clears at least one entry of the mask.
"""

from __future__ import annotations

import dataclasses
import math
import re

from jaxseg.compile_report.hlo import Instruction, Module, control_calls, first_array_dims

__all__ = ["WhileLoop", "while_loops"]


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
        parsed = first_array_dims(inst.type)
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
                for _, called in control_calls(inst):
                    visit(called, executions, depth + 1)

    visit(module.entry, 1, 0)
    return loops
