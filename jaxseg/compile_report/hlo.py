"""Reads an optimised HLO module's text (`compiled.as_text()`): computations, instructions, sizes.

    module = parse_module(compiled.as_text())
    module.computations["main"]      # [Instruction(name, type, opcode, operands, ...)]
    type_bytes("f32[8,128]{1,0}")     # 4096: as stored, padded to TPU tiles where given

`jaxseg.compile_report.loops` bounds the while loops' trip counts from it and
`jaxseg.compile_report.traffic` sums HBM traffic per source op.
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
    "control_calls",
    "first_array_dims",
    "parse_module",
    "type_bytes",
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


def first_array_dims(type_string: str) -> tuple[str, tuple[int, ...]] | None:
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


def control_calls(instruction: Instruction) -> Iterator[tuple[str, str]]:
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
