"""`format_report(report)`: the compile report as a table for the terminal."""

from __future__ import annotations

from typing import Any

__all__ = ["format_report"]


def _size(value: float | None) -> str:
    if value is None:
        return "n/a"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in rows)
    return [f"  {k:<{width}}  {v}" for k, v in rows]


def _hbm_bytes(per_image: dict[str, Any], multiplier: int) -> str:
    text = _si(per_image["hbm_bytes"], "B") + " compiled"
    ratio = per_image.get("bytes_over_layer_bytes")
    if ratio is None:
        return text
    return (
        f"{text}, {_si(per_image['analytic_layer_bytes'], 'B')} layers' own traffic "
        f"(x{multiplier}), ratio {ratio:.2f}"
    )


def _step(step: dict[str, Any]) -> list[str]:
    memory, per_image, roof = step["memory_per_chip"], step["per_image"], step["roofline"]
    rows = [
        ("global batch / per chip", f"{step['global_batch']} / {step['images_per_chip']}"),
        (
            "compile",
            f"{step['compile_seconds']['compile']:.1f} s "
            f"(+ {step['compile_seconds']['lower']:.1f} s tracing and lowering)",
        ),
    ]
    if memory.get("available"):
        fits = {True: "fits", False: "DOES NOT FIT", None: "no HBM figure"}[memory["fits"]]
        rows += [
            (
                "memory per chip",
                f"arguments {_size(memory['argument_bytes'])}, temp {_size(memory['temp_bytes'])}, "
                f"outputs {_size(memory['output_bytes'])} (aliased {_size(memory['alias_bytes'])})",
            ),
            (
                "  total / HBM",
                f"{_size(memory['total_bytes'])} / {_size(memory['hbm_bytes'])}: {fits}",
            ),
        ]
    ratio = per_image["compiled_over_analytic"]
    rows += [
        (
            "per image: FLOPs",
            f"{_si(per_image['flops'], 'FLOP')} compiled, "
            f"{_si(per_image['analytic_flops'], 'FLOP')} analytic "
            f"(x{step['analytic']['multiplier']}), ratio "
            + (f"{ratio:.2f}" if ratio is not None else "n/a"),
        ),
        ("per image: HBM bytes", _hbm_bytes(per_image, step["analytic"]["multiplier"])),
    ]
    if roof.get("available"):
        rows += [
            (
                "roofline",
                f"{roof['step_seconds'] * 1e3:.2f} ms per step, {roof['bound']}-bound "
                f"({roof['flops_per_byte']:.1f} FLOP/B; ridge {roof['ridge_flops_per_byte']:.0f})",
            ),
            (
                "  images/s at most",
                f"{roof['images_per_second_per_chip']:.1f} per chip, "
                f"{roof['images_per_second_slice']:.1f} for the slice",
            ),
        ]
    else:
        rows.append(("roofline", roof.get("reason", "n/a")))
    depth = f"{step['sequential_depth']} loop iterations per step, {len(step['while_loops'])} loops"
    if step["loops_without_bound"]:
        depth += f" ({step['loops_without_bound']} without a bound, not summed)"
    rows.append(("sequential depth", depth))
    lines = _rows(rows)
    loops = sorted(step["while_loops"], key=lambda w: -(w["iterations"] or 0))
    if loops:
        lines.append("  while loops (trip bound x executions, from):")
        for loop in loops[:12]:
            bound = loop["trip_count_bound"] if loop["trip_count_bound"] is not None else "?"
            lines.append(
                f"    {bound!s:>6} x {loop['executions']:<4} {loop['bound_from']:<18} {loop['op']}"
            )
        if len(loops) > 12:
            lines.append(f"    ... {len(loops) - 12} more")
    traffic = step["hbm_traffic"]
    lines.append(
        f"  HBM traffic by source op (parsed {_si(traffic['parsed_bytes_per_chip'], 'B')} of "
        f"cost_analysis' {_si(traffic['cost_analysis_bytes_per_chip'], 'B')} per chip):"
    )
    for row in traffic["top"]:
        share = f"{row['share'] * 100:5.1f}%"
        lines.append(f"    {_si(row['bytes'], 'B'):>9} {share}  {row['pass']:<8} {row['op']}")
    return lines


def format_report(report: dict[str, Any]) -> str:
    """Returns `report` (from `compile_report`) as lines of text."""
    config, target = report["config"], report["target"]
    lines = [
        f"compile report: {config['model']} {config['dtype']} {config['image_size']}px, "
        f"batch {config['batch_size']} ({config['sharding']} parameters)",
        f"target: {target['kind']} {target['name']}: {target['num_devices']} x "
        f"{target['device_kind']} ({target['num_chips']} chips)",
    ]
    chip = target["chip"]
    if chip:
        lines.append(
            f"chip {chip['name']}: HBM {_size(chip['hbm_bytes'])}, "
            f"{_si(chip['peak_bf16_flops'], 'FLOP/s')} bf16, "
            f"{_si(chip['hbm_bytes_per_second'], 'B/s')} ({chip['source']})"
        )
    for name, step in report["steps"].items():
        lines += ["", f"{name} step", *_step(step)]
    lines += [""] + [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)
