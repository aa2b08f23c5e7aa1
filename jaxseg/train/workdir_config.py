"""One workdir, one experiment: `<workdir>/config.json` against the config of a new run.

Resuming a workdir with another model, dataset, optimiser or seed would mix two
experiments in one set of checkpoints and logs (and often fail much later, inside a
restore). `check_workdir_config` compares the new config with the one the workdir was
started with and refuses, before anything is compiled, any difference outside the keys
that only say how long to train, how often to log, evaluate and save, or where files are
(`RESUMABLE_KEYS`); keys that a newer jaxseg added, left at their defaults, are no
change either. `allow_change=True` (train.py's `--allow_config_change`) accepts the
difference and logs it.

The data are compared too: beside `config.json`, `<workdir>/dataset_source.json` keeps the
source of the dataset build the workdir was trained on (paths and fingerprints of the
annotation files, image folders or generator settings: `jaxseg.data.sources`). A run whose
dataset has other fingerprints (another COCO folder, an edited JSON, another VOCdevkit) is
refused with both sources named, even where the paths are the same; the same data moved
to another path is no change.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from absl import logging

from jaxseg.config import base_config
from jaxseg.data import catalog, sources
from jaxseg.tasks.base import dataset_kwargs

__all__ = [
    "CONFIG_FILE",
    "RESUMABLE_KEYS",
    "SOURCE_FILE",
    "check_workdir_config",
    "write_workdir_config",
]

CONFIG_FILE = "config.json"
SOURCE_FILE = "dataset_source.json"

# Dotted keys (or prefixes ending in '.') that may change between runs of one workdir.
RESUMABLE_KEYS = (
    "num_train_steps",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "max_consecutive_nonfinite",
    "compilation_cache_dir",
    "init_from",  # used only when a workdir has no checkpoint
    # Per process and per start (process 1 reads the file process 0 wrote; a restart gets
    # another coordinator), and the lost-process timeout: how the job runs, not what it is.
    "distributed.",
    "dataset.data_dir",
    "dataset.manual_dir",
    # Paths of the data: what they hold is compared through the dataset's source.
    "dataset.annotations.",
    "dataset.images",
    "dataset.images.",
    "eval.",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort())


def _resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def check_workdir_config(
    config: ml_collections.ConfigDict, workdir: str, *, allow_change: bool = False
) -> None:
    """Raises ValueError if `workdir` was started with a config that differs from `config`.

    Differences in `RESUMABLE_KEYS` are logged and accepted; a workdir without
    `config.json` (new, or from an older jaxseg) is accepted.

    Args:
      config: the config of this run.
      workdir: the run's folder.
      allow_change: accept (and log) every difference.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            saved = _flatten(json.load(f))
    except (OSError, ValueError) as e:
        logging.warning("cannot read %s (%s); not comparing configs", path, e)
        return
    current = _flatten(_as_json(config))
    differ = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    # A key the workdir's jaxseg did not have yet, at its default, is no change.
    defaults = _flatten(_as_json(base_config()))
    refused = [
        k
        for k in differ
        if not _resumable(k)
        and not (k not in saved and k in defaults and current.get(k) == defaults[k])
    ]
    for key in differ:
        logging.info(
            "config.%s: %r in %s, now %r", key, saved.get(key, "<absent>"), path,
            current.get(key, "<absent>"),
        )  # fmt: skip
    if refused and not allow_change:
        lines = [
            f"config.{k}: {saved.get(k, '<absent>')!r} in the workdir, "
            f"{current.get(k, '<absent>')!r} now"
            for k in refused
        ]
        raise ValueError(
            f"workdir {workdir} was started with a different config ({path}):\n  "
            + "\n  ".join(lines)
            + "\nUse another --workdir, or pass --allow_config_change (train.py) / "
            "allow_config_change=True to resume it with this config anyway."
        )
    if refused:
        logging.warning(
            "workdir %s: resuming with a changed config (%s), as allowed",
            workdir,
            ", ".join(refused),
        )
    _check_source(config, workdir, allow_change=allow_change)


def _dataset_source(config: ml_collections.ConfigDict) -> dict | None:
    """Returns the recorded source of the config's dataset build (None if not known)."""
    return catalog.build_source(config.dataset.name, **dataset_kwargs(config.dataset))


def _check_source(config: ml_collections.ConfigDict, workdir: str, *, allow_change: bool) -> None:
    path = os.path.join(workdir, SOURCE_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        logging.warning("cannot read %s (%s); not comparing dataset sources", path, e)
        return
    current = _dataset_source(config)
    if current is None or sources.same_source(saved, current):
        return
    lines = sources.differences(saved, current)
    if not allow_change:
        raise ValueError(
            f"workdir {workdir} was trained on other data than config.dataset gives now "
            f"({path}):\n  "
            + "\n  ".join(lines)
            + f"\nTrained on: {sources.format_source(saved)}\n"
            f"Now:        {sources.format_source(current)}\n"
            "Use another --workdir, or pass --allow_config_change (train.py) / "
            "allow_config_change=True to resume it on these data anyway."
        )
    logging.warning(
        "workdir %s: resuming on other data (%s), as allowed", workdir, "; ".join(lines)
    )


def write_workdir_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes `config` to `<workdir>/config.json` atomically (a kill leaves the old file).

    Also writes the source of the dataset's build to `<workdir>/dataset_source.json` when
    it is known (jaxseg's own builders, once prepared); nothing is built here.
    """
    _write_atomic(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))
    source = _dataset_source(config)
    source_path = os.path.join(workdir, SOURCE_FILE)
    if source is not None:
        _write_atomic(source_path, json.dumps(source, indent=2, sort_keys=True))
    elif os.path.exists(source_path):
        os.remove(source_path)  # a change to data without a recorded source was allowed


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
