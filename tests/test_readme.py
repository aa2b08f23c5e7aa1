"""The README's code blocks run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run():
    blocks = python_blocks()
    assert blocks, "README.md has no python block"
    for block in blocks:
        namespace = {}
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["pooled"].shape == (1, 7, 7, 256)
    assert namespace["grad"].shape == (50, 68, 256)
    assert bool(namespace["valid"][0]) and not bool(namespace["valid"][1:].any())
