"""The README's code blocks run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run():
    blocks = python_blocks()
    assert len(blocks) >= 2, "README.md lost a python block"
    names = {}
    for block in blocks:
        namespace = {}
        exec(compile(block, str(README), "exec"), namespace)
        names.update(namespace)
    # `jaxseg.ops`
    assert names["pooled"].shape == (1, 7, 7, 256)
    assert names["grad"].shape == (50, 68, 256)
    assert bool(names["valid"][0]) and not bool(names["valid"][1:].any())
    # "Use it in your own code": converted weights, a jitted prediction, jit / vmap / grad.
    assert names["classes"].shape == (60, 90)
    assert int(names["classes"].max()) < 21
    assert names["rois"].shape == (2, 1, 7, 7, 32)
    assert names["feature_grad"].shape == (2, 16, 24, 32)
    assert float(abs(names["feature_grad"]).sum()) > 0
