"""The package layout: jaxseg's top-level packages import only those below them, and the
one model table agrees with the tasks."""

import ast
from pathlib import Path

import pytest

from jaxseg.models import MODELS, build_model, model_entry
from jaxseg.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1] / "jaxseg"

# Bottom-up. A package imports only packages of the ranks below its own (so there is no
# cycle); `jaxseg` itself (the package face: IGNORE_LABEL, ops) is the ground.
RANKS = [
    {"ops", "config", "testing", "serving", "compiler_options"},
    {"data", "detection"},
    {"evaluation", "models"},
    {"convert", "runtime"},
    {"tasks"},
    {"train"},
    {"predict", "compile_report"},
    {"inference", "export"},
]
RANK = {name: i for i, names in enumerate(RANKS) for name in names}


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "jaxseg":
                # `from jaxseg import ops` imports the package ops; `from jaxseg import
                # IGNORE_LABEL` only the face.
                if len(parts) > 1:
                    names.add(parts[1])
                else:
                    names.update(a.name for a in node.names if a.name in RANK)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "jaxseg" and len(parts) > 1:
                    names.add(parts[1])
    return names


def test_every_package_has_a_rank():
    packages = {_package(p) for p in ROOT.rglob("*.py") if p.parent != ROOT or p.stem != "__init__"}
    assert packages == set(RANK), "give a new package its rank in RANKS"


def test_packages_import_only_their_rank_and_below():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.parent == ROOT and path.stem == "__init__":
            continue
        here = _package(path)
        for other in _imported_packages(path) - {here}:
            if RANK[other] >= RANK[here]:
                upward.append(f"{path.relative_to(ROOT.parent)} imports jaxseg.{other}")
    assert not upward, "\n".join(upward)


def test_the_model_table_names_known_tasks_and_metrics():
    for name, entry in MODELS.items():
        assert entry.task in TASKS, name
        task = TASKS[entry.task]
        assert (entry.best_metric or task.default_best_metric) in task.metric_names, name
        assert isinstance(build_model(name, num_classes=2), entry.module)


def test_an_unknown_model_name_gets_the_closest_one():
    with pytest.raises(ValueError, match=r"unknown model 'fcn8' \(did you mean 'fcn8s'\?\)"):
        model_entry("fcn8")
