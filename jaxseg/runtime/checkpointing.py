"""Orbax checkpoints of the train state and the grain data iterator in `<workdir>/checkpoints`.

Each checkpoint step holds two items: `state` (the whole `TrainState`) and `data` (the
grain iterator's position, a few bytes of JSON). Saves are asynchronous; the last
`keep` checkpoints and the best one by the evaluation metric are kept. Shapes are compared
with a checkpoint's metadata before anything is restored, so a class-count mismatch is a
clear error rather than a failure deep inside a restore or a compile.

A checkpoint is either complete or ignored. Orbax writes each step into a temporary
folder and renames it when every item is written, so a save cut short leaves no step
folder (the leftover temporary folder is removed on the next start). `restore_latest`
also refuses a step folder that lacks its commit markers or metadata, or whose arrays
cannot be read (truncated files) or hold NaN or Inf: it logs why, moves the folder to
`<checkpoints>.corrupt/` and uses the previous step.

A save that fails in the background (a full disk, a lost mount) is reported by
`check_for_errors`, which the loop calls after every step: training stops at once with
one `CheckpointSaveError` naming the folder and the cause, and the checkpoints already
there stay usable (the failed step never gets its final name).
"""

from __future__ import annotations

import os
import time
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from orbax.checkpoint import checkpoint_managers

from jaxseg.runtime.nonfinite import NonFiniteError, tree_is_finite

__all__ = [
    "CheckpointMismatchError",
    "CheckpointSaveError",
    "Checkpointer",
    "CorruptCheckpointError",
    "check_compatible",
    "checkpoint_directory",
]

# Files every complete step folder holds (orbax writes them last, before the rename).
_COMMIT_FILES = ("commit_success.txt", "state/commit_success.txt", "state/_METADATA")


class CheckpointMismatchError(ValueError):
    """Raised when a checkpoint's arrays have other shapes than the model's."""


class CorruptCheckpointError(RuntimeError):
    """Raised when a checkpoint is incomplete or unreadable."""


class CheckpointSaveError(RuntimeError):
    """Raised when writing a checkpoint failed (e.g. no space left on the device)."""


def _root_cause(error: BaseException) -> str:
    """Returns the most specific line of an error chain (the OS's words where there are some)."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    lines = [str(e).strip().splitlines()[0] for e in chain if str(e).strip()]
    for line in lines:
        for words in ("No space left on device", "Disk quota exceeded", "Read-only file system"):
            if words in line:
                return words
    return (lines[-1] if lines else type(chain[-1]).__name__)[:500]


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """Returns the handlers of the two items, so that metadata can be read before a save."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for args in (ocp.args.StandardSave, ocp.args.StandardRestore):
        registry.add("state", args, ocp.StandardCheckpointHandler)
    for args in (grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore):
        registry.add("data", args, grain.checkpoint.CheckpointHandler)
    return registry


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
        raise CheckpointMismatchError(
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
            cleanup_tmp_directories=create,  # saves cut short by a kill
        )
        self.manager = ocp.CheckpointManager(
            directory, handler_registry=_handler_registry(), options=options
        )
        self.read_only = not create
        self._saving: int | None = None

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
        """Starts an asynchronous save of `state` and the iterator's position at `step`.

        Raises:
          NonFiniteError: if `state` holds NaN or Inf (nothing is written).
        """
        if not tree_is_finite(state):
            raise NonFiniteError(
                f"not saving step {step} in {self.directory}: the train state holds NaN or Inf "
                "(the checkpoints already there are intact)"
            )
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        scalar_metrics = None
        if metrics is not None:
            scalar_metrics = {k: float(v) for k, v in metrics.items() if np.isscalar(v)}
        try:  # one save at a time (as orbax does), so a failure names its own step
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as e:
            raise self._save_error(e) from None
        self._saving = step
        try:
            self.manager.save(
                step, args=ocp.args.Composite(**items), metrics=scalar_metrics, force=True
            )
        except Exception as e:  # the synchronous part of the save failed
            raise self._save_error(e) from None

    def _save_error(self, error: BaseException) -> CheckpointSaveError:
        # From the folder, not the manager: orbax may already have dropped a step that the
        # failed save was about to replace.
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        latest = sorted(int(n) for n in names if n.isdigit() and int(n) != self._saving)
        kept = f"latest complete: step {latest[-1]}" if latest else "none complete yet"
        return CheckpointSaveError(
            f"saving checkpoint {self._saving} in {self.directory} failed: "
            f"{_root_cause(error)}. The checkpoints already there are intact ({kept}); "
            "make room (or point --workdir elsewhere) and run again to resume."
        )

    def check_for_errors(self) -> None:
        """Raises CheckpointSaveError if a background save has failed (cheap: no waiting)."""
        try:
            self.manager.check_for_errors()
        except Exception as e:
            raise self._save_error(e) from None

    def check(self, step: int, abstract_state: Any, *, subtree: str = "") -> None:
        """Raises ValueError if the state saved at `step` does not fit `abstract_state`.

        Raises:
          CheckpointMismatchError (a ValueError): arrays of other shapes; without `subtree`,
            also arrays missing from the checkpoint or absent from the model (a checkpoint
            of another model or jaxseg version, not a damaged one).
          CorruptCheckpointError: the state's metadata cannot be read.
        """
        try:
            metadata = self.manager.item_metadata(step)["state"]
        except Exception as e:  # orbax raises many kinds for damaged files
            raise CorruptCheckpointError(f"cannot read its metadata: {e}") from e
        if metadata is None:
            raise CorruptCheckpointError("its state metadata (state/_METADATA) is missing")
        what = f"checkpoint {self.step_path(step)}"
        check_compatible(abstract_state, metadata, what=what, subtree=subtree)
        if not subtree:
            want, have = set(_shapes(abstract_state)), set(_shapes(metadata))
            if want != have:
                raise CheckpointMismatchError(
                    f"{what} holds other arrays than the train state: missing "
                    f"{sorted(want - have)[:10]}, not in the model {sorted(have - want)[:10]} "
                    "(another model, or a checkpoint without optimiser state such as a "
                    "converted one: use it as config.init_from)"
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

    def step_path(self, step: int) -> str:
        """Returns the folder of checkpoint `step`."""
        return os.path.join(self.directory, str(step))

    def check_complete(self, step: int, *, with_data: bool = True) -> None:
        """Raises CorruptCheckpointError if a file of a finished save is missing at `step`."""
        required = (*_COMMIT_FILES, "data/commit_success.txt") if with_data else _COMMIT_FILES
        missing = [f for f in required if not os.path.isfile(os.path.join(self.step_path(step), f))]
        if missing:
            raise CorruptCheckpointError(f"incomplete: {', '.join(missing)} missing")

    def restore_latest(
        self, abstract_state: Any, data_iterator: grain.DataLoaderIterator | None = None
    ) -> tuple[Any, int] | tuple[None, None]:
        """Returns `(state, step)` of the newest usable checkpoint, or `(None, None)`.

        Steps are tried newest first. An incomplete or unreadable one, or one holding NaN
        or Inf, is logged with the reason and moved to `<checkpoints>.corrupt/` (left in
        place when read-only); the previous step is tried next. `data_iterator` is moved
        to the returned step's position; when None is returned it may have been moved,
        so make a fresh one.

        Raises:
          CheckpointMismatchError: the newest readable checkpoint has other arrays or
            shapes than `abstract_state` (another model or class count, a converted
            checkpoint: an error, not a fallback, and nothing is moved).
        """
        unusable = 0
        for step in reversed(self.all_steps()):
            try:
                self.check(step, abstract_state)
                self.check_complete(step, with_data=data_iterator is not None)
                state = self.restore(step, abstract_state, data_iterator)
                if not tree_is_finite(state):
                    raise CorruptCheckpointError("it holds NaN or Inf")
                return state, step
            except CheckpointMismatchError:
                raise
            except Exception as e:  # any failure to read it means "corrupt"
                unusable += 1
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                moved = self._quarantine(step)
                logging.error(
                    "checkpoint %s is not usable (%s: %s)%s; trying the previous one",
                    self.step_path(step),
                    type(e).__name__,
                    reason[:500],
                    f", moved to {moved}" if moved else "",
                )
        if unusable:
            logging.error(
                "none of the %d checkpoints in %s is usable: starting from step 0",
                unusable,
                self.directory,
            )
        return None, None

    def _quarantine(self, step: int) -> str | None:
        """Moves step `step` out of the manager's sight; returns where (None if read-only)."""
        if self.read_only or jax.process_index() != 0:
            return None
        target = os.path.join(
            f"{self.directory.rstrip(os.sep)}.corrupt", f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(self.step_path(step), target)
        self.manager.reload()
        return target

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
        """Blocks until pending asynchronous saves are written.

        Raises:
          CheckpointSaveError: a save failed.
        """
        try:
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as e:
            raise self._save_error(e) from None

    def close(self) -> None:
        """Waits for pending saves and releases the manager (raising if a save failed)."""
        try:
            self.wait()
        finally:
            try:
                self.manager.close()
            except Exception as e:  # the failure was already reported by wait()
                logging.debug("closing %s: %s", self.directory, e)
