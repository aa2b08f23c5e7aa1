"""Orbax checkpoints of the train state and the grain data iterator in `<workdir>/checkpoints`.

Each checkpoint step holds two items: `state` (the whole `TrainState`) and `data` (the
grain iterator's position, a few bytes of JSON). Saves are asynchronous; the last
`keep` checkpoints and the best one by the evaluation metric are kept. Shapes are compared
with a checkpoint's metadata before anything is restored, so a class-count mismatch is a
clear error rather than a failure deep inside a restore or a compile.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

__all__ = ["Checkpointer", "check_compatible", "checkpoint_directory"]


def checkpoint_directory(path: str | os.PathLike) -> str:
    """Returns the checkpoints folder of a workdir, or `path` itself if it is one."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    nested = os.path.join(path, "checkpoints")
    return nested if os.path.isdir(nested) or not os.path.isdir(path) else path


def _path_name(path: tuple[Any, ...]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """Returns `{'a/b/c': shape}` for the array leaves of `tree` (arrays or metadata)."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {_path_name(path): tuple(leaf.shape) for path, leaf in leaves if hasattr(leaf, "shape")}


def check_compatible(expected: Any, found: Any, *, what: str, subtree: str = "") -> None:
    """Raises ValueError naming every leaf whose shape differs between two trees.

    Args:
      expected: the tree the model needs (arrays or `jax.ShapeDtypeStruct`s).
      found: the checkpoint's tree (arrays or orbax metadata with `.shape`).
      what: the checkpoint, for the message.
      subtree: only compare paths starting with this prefix (e.g. 'params').
    """
    want, have = _shapes(expected), _shapes(found)
    differ = [
        f"{path}: checkpoint {have[path]}, model {shape}"
        for path, shape in want.items()
        if path.startswith(subtree) and path in have and have[path] != shape
    ]
    if differ:
        raise ValueError(
            f"{what} does not fit the model (a different num_classes, width or model?):\n  "
            + "\n  ".join(differ)
        )


class Checkpointer:
    """An `orbax.checkpoint.CheckpointManager` of (train state, data iterator) steps.

    Args:
      directory: the checkpoints folder (created when `create`).
      keep: how many of the latest checkpoints to keep (besides the best).
      best_metric: key of the metrics passed to `save` that ranks checkpoints (higher is
        better); checkpoints saved without metrics compete only for the latest `keep`.
      create: create the folder; False opens an existing one read-only (evaluation).
    """

    def __init__(
        self, directory: str, *, keep: int = 2, best_metric: str = "mean_iou", create: bool = True
    ):
        self.directory = directory
        self.best_metric = best_metric
        policy = checkpoint_managers.AnyPreservationPolicy(
            [
                checkpoint_managers.LatestN(n=keep),
                checkpoint_managers.BestN(
                    get_metric_fn=self._metric, n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=self._metric,
            best_mode="max",
            create=create,
            read_only=not create,
            enable_async_checkpointing=True,
        )
        self.manager = ocp.CheckpointManager(
            directory, item_names=("state", "data"), options=options
        )

    def _metric(self, metrics: dict[str, Any]) -> float:
        value = float(metrics[self.best_metric])
        return value if np.isfinite(value) else -np.inf

    def latest_step(self) -> int | None:
        """Returns the latest saved step, or None without checkpoints."""
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """Returns the step with the best `best_metric`, else the latest, else None."""
        best = self.manager.best_step()
        return self.latest_step() if best is None else best

    def all_steps(self) -> list[int]:
        """Returns the saved steps in increasing order."""
        return sorted(self.manager.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: grain.DataLoaderIterator | None,
        *,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        """Starts an asynchronous save of `state` and the iterator's position at `step`."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        scalar_metrics = None
        if metrics is not None:
            scalar_metrics = {k: float(v) for k, v in metrics.items() if np.isscalar(v)}
        self.manager.save(
            step, args=ocp.args.Composite(**items), metrics=scalar_metrics, force=True
        )

    def check(self, step: int, abstract_state: Any, *, subtree: str = "") -> None:
        """Raises ValueError if the state saved at `step` has other shapes than `abstract_state`."""
        metadata = self.manager.item_metadata(step)["state"]
        check_compatible(
            abstract_state,
            metadata,
            what=f"checkpoint {os.path.join(self.directory, str(step))}",
            subtree=subtree,
        )

    def restore(
        self, step: int, abstract_state: Any, data_iterator: grain.DataLoaderIterator | None = None
    ) -> Any:
        """Returns the state saved at `step`; also moves `data_iterator` to its saved position.

        Args:
          step: the checkpoint step.
          abstract_state: a tree of `jax.ShapeDtypeStruct` (with shardings) like the state.
          data_iterator: the iterator to restore in place, or None to leave the data alone.
        """
        self.check(step, abstract_state)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def restore_variables(self, step: int, abstract_state: Any) -> dict[str, Any]:
        """Returns `{'params': ..., **model_state}` saved at `step`, without optimiser state.

        What evaluation needs. It also reads checkpoints that hold no optimiser state, such
        as those `python -m jaxseg.convert` writes.

        Args:
          step: the checkpoint step.
          abstract_state: the model's train state (its `params` and `model_state` are used).

        Raises:
          ValueError: if an array the model needs is missing or has another shape.
        """
        saved = self.restore_raw(step)
        found = {"params": saved["params"], "model_state": saved.get("model_state") or {}}
        expected = {"params": abstract_state.params, "model_state": abstract_state.model_state}
        what = f"checkpoint {os.path.join(self.directory, str(step))}"
        missing = sorted(set(_shapes(expected)) - set(_shapes(found)))
        if missing:
            raise ValueError(
                f"{what} lacks {len(missing)} of the model's arrays:\n  "
                + "\n  ".join(missing[:20])
            )
        check_compatible(expected, found, what=what)
        return {"params": found["params"], **found["model_state"]}

    def restore_raw(self, step: int) -> Any:
        """Returns the state saved at `step` as nested dicts of numpy arrays (no target).

        Whatever devices the checkpoint was written from (8 GPUs, 2 processes, FSDP shards),
        each array is read whole onto this process's first device, then to the host.
        """
        metadata = ocp.StandardCheckpointHandler().metadata(
            epath.Path(self.directory) / str(step) / "state"
        )
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree_util.tree_map(
            lambda m: (
                jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local)
                if hasattr(m, "shape") and hasattr(m, "dtype")
                else m
            ),
            metadata.tree if hasattr(metadata, "tree") else metadata,
        )
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )
        return jax.tree_util.tree_map(np.asarray, restored["state"])

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are written."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
