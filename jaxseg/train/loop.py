"""`train_and_evaluate(config, workdir)`: the generic training loop behind `train.py`.

Everything that can be wrong with the inputs (config keys and values, the workdir and
the config it was started with, the model settings, the class count against the dataset,
a checkpoint or `init_from` of other shapes) is checked before anything is compiled.
Then: resume from the latest usable checkpoint in `<workdir>/checkpoints` (train state
and data position; see `Checkpointer.restore_latest`) or initialise (optionally from
`config.init_from`), and train with periodic logging, evaluation and checkpoints.

Reliability (docs/reliability.md): a run killed at any moment resumes exactly; SIGTERM
and Ctrl-C save and exit cleanly (`jaxseg.runtime.preemption`); one run at a time holds the
workdir (`jaxseg.runtime.workdir_lock`); a failed checkpoint save stops training at once, and
a failed evaluation saves its step first; steps with a non-finite loss or gradient are
skipped and too many in a row stop training (`jaxseg.runtime.nonfinite`).
"""

from __future__ import annotations

import functools
import io
import os
import time
from typing import Any

import jax
import ml_collections
import optax
from absl import logging

from jaxseg.config import ConfigError, check_config, check_workdir
from jaxseg.models import transplant
from jaxseg.runtime import distributed, sharding
from jaxseg.runtime.checkpointing import Checkpointer, check_compatible
from jaxseg.runtime.compilation import StepCompileLog, setup_compilation_cache, setup_log_compiles
from jaxseg.runtime.metrics_writer import MetricWriter
from jaxseg.runtime.nonfinite import NonFiniteMonitor, finite_mean_metrics
from jaxseg.runtime.preemption import PreemptionGuard, StopAgreement
from jaxseg.runtime.progress import ProgressBar
from jaxseg.runtime.workdir_lock import WorkdirLock
from jaxseg.tasks import make_task
from jaxseg.tasks.base import Task
from jaxseg.train.evaluate import evaluate_dataset, picture_arrays
from jaxseg.train.init_from import read_variables
from jaxseg.train.optimizer import make_optimizer, make_schedule
from jaxseg.train.state import TrainState
from jaxseg.train.step import make_eval_step, make_train_step
from jaxseg.train.workdir_config import check_workdir_config, write_workdir_config

__all__ = ["abstract_train_state", "create_train_state", "prepare", "train_and_evaluate"]


def create_train_state(
    task: Task, optimizer: optax.GradientTransformation, seed: int, batch: dict[str, Any]
) -> TrainState:
    """Returns the initial train state for inputs shaped like `batch` (jit- and eval_shape-able)."""
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = dict(task.init_variables(init_rng, batch))
    params = variables.pop("params")
    return TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        params=params,
        model_state=variables,
        opt_state=optimizer.init(params),
        rng=train_rng,
    )


def abstract_train_state(
    task: Task, optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict, mesh
) -> TrainState:
    """Returns the train state's `jax.ShapeDtypeStruct`s, with their shardings on `mesh`.

    No compile. Parameters and optimiser state are replicated or split FSDP-style as
    `config.sharding.params` says (see `jaxseg.runtime.sharding.step_shardings`).
    """
    spec = task.input_spec(config.batch_size)
    abstract = jax.eval_shape(
        functools.partial(create_train_state, task, optimizer, config.seed), spec
    )
    shardings = sharding.step_shardings(abstract, mesh, mode=config.sharding.params).state
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
    )


def prepare(config: ml_collections.ConfigDict, workdir: str | None = None) -> Task:
    """Returns the task of `config` after every check that needs no compile.

    Raises:
      ConfigError (a ValueError): unknown config keys, impossible values, an unknown model
        or model setting, a class count that differs from the dataset's, a split the
        dataset lacks, a canvas the model cannot take, an unwritable `workdir`.
    """
    try:
        task = make_task(config)
        check_config(config, min_image_size=task.min_image_size)
        task.check()
        if workdir is not None:
            check_workdir(workdir)
    except ConfigError:
        raise
    except ValueError as e:  # the model table's and the dataset's own checks
        raise ConfigError(str(e)) from e
    return task


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its checkpoints); returns the last eval metrics.

    Writes `<workdir>/checkpoints` (orbax), `<workdir>/metrics.jsonl`, TensorBoard events
    in `<workdir>`, and `<workdir>/config.json`; `<workdir>/train.lock` is held meanwhile.
    After SIGTERM it saves the current step and returns early (the metrics of the last
    evaluation, if any); after Ctrl-C (SIGINT) it saves the current step and raises
    KeyboardInterrupt. With several processes a signal to any of them does so on all, after
    one agreed step; a lost process ends the others (`jaxseg.runtime.distributed`).

    Args:
      config: the training config.
      workdir: the run's folder.
      allow_config_change: resume a workdir started with a config that differs in more
        than the run length, logging and paths (see `jaxseg.train.workdir_config`).

    Raises:
      ConfigError (a ValueError): bad config or workdir (before compiling).
      CheckpointMismatchError (a ValueError): a checkpoint that does not fit the model.
      WorkdirLockedError: another training run holds `workdir`.
      CheckpointSaveError: a checkpoint could not be written (a full disk): training stops
        at once; the checkpoints already there are intact.
      NonFiniteError: `config.max_consecutive_nonfinite` skipped steps in a row.
    """
    distributed.initialize(config.distributed)  # before anything touches a device
    # prepare() opens the dataset, which its first use builds: process 0 alone builds it.
    task = distributed.main_process_first(lambda: prepare(config, workdir))
    workdir = check_workdir(workdir)
    lock = WorkdirLock(workdir)
    if distributed.is_main_process():  # the processes of one run share the workdir
        lock.acquire()
    try:
        return _train(task, config, workdir, allow_config_change=allow_config_change)
    except BaseException as e:
        # Unless it finished (an agreed Ctrl-C), the others would wait for it in a collective.
        distributed.mark_failed(130 if isinstance(e, KeyboardInterrupt) else 1)
        raise
    finally:
        lock.release()


def _train(task: Task, config, workdir: str, *, allow_config_change: bool) -> dict[str, Any]:
    """The body of `train_and_evaluate`, with the workdir locked."""
    try:
        check_workdir_config(config, workdir, allow_change=allow_config_change)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    setup_compilation_cache(config.compilation_cache_dir)
    setup_log_compiles(config.log_compiles)
    mesh = sharding.make_mesh()
    batch_size = sharding.per_process_batch_size(config.batch_size)
    eval_batch_size = sharding.per_process_batch_size(
        config.eval.batch_size, what="eval.batch_size"
    )
    num_steps = int(config.num_train_steps)
    optimizer = make_optimizer(config.optimizer, num_steps, task.trainable)
    schedule = make_schedule(config.optimizer, num_steps)
    abstract_state = abstract_train_state(task, optimizer, config, mesh)
    shardings = sharding.step_shardings(abstract_state, mesh, mode=config.sharding.params)

    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        keep=int(config.keep_checkpoints),
        best_metric=task.best_metric,
    )
    process = jax.process_index()
    shards = {"shard_index": process, "shard_count": jax.process_count()}
    train_loader = task.train_loader(batch_size=batch_size, seed=int(config.seed), **shards)
    train_iter = iter(train_loader)
    state, latest = checkpointer.restore_latest(abstract_state, train_iter)
    init_variables = None
    if state is None:
        train_iter = iter(train_loader)  # a failed restore may have moved the old one
        if config.init_from:
            init_variables, source = read_variables(config.init_from)
            check_compatible(
                abstract_state.variables, init_variables, what=f"config.init_from {source}"
            )

    if state is not None:
        logging.info("resumed from %s at step %d", checkpointer.directory, latest)
    else:
        create = jax.jit(
            functools.partial(create_train_state, task, optimizer, int(config.seed)),
            out_shardings=jax.tree_util.tree_map(lambda x: x.sharding, abstract_state),
        )
        state = create(task.input_spec(config.batch_size))
        if init_variables is not None:
            state = distributed.gather(state)  # on the host, whatever its sharding
            variables, copied = transplant(init_variables, state.variables)
            fresh = len(jax.tree_util.tree_leaves(variables)) - len(copied)
            logging.info(
                "init_from %s: copied %d arrays, %d initialised", source, len(copied), fresh
            )
            params = variables.pop("params")
            state = state.replace(params=params, model_state=variables)
            state = sharding.put(state, shardings.state)

    main = distributed.is_main_process()  # only process 0 writes files and the terminal
    if main:
        write_workdir_config(config, workdir)
    train_step = make_train_step(task, optimizer, schedule, shardings=shardings)
    eval_step = make_eval_step(task, shardings=shardings)
    writer = MetricWriter(workdir, enabled=main)
    step = int(distributed.gather(state.step))
    progress = ProgressBar(
        num_steps,
        initial=step,
        batch_size=config.batch_size,
        every=config.log_every_steps,
        stream=None if main else io.StringIO(),  # other processes draw no bar
    )
    compiles = StepCompileLog("train_step") if config.log_compiles else None
    history: list[dict[str, jax.Array]] = []
    eval_metrics: dict[str, Any] = {}
    loss = None
    log_start = time.perf_counter()
    log_start_step = step
    nonfinite = NonFiniteMonitor(config.max_consecutive_nonfinite)
    preemption = PreemptionGuard()
    # With several processes a signal reaches one of them: all stop after the same step.
    stop = StopAgreement(preemption)
    pictures = int(config.eval.summary_pictures)
    failed = False
    try:
        preemption.install()
        stop.start(step)
        while step < num_steps:
            batch = sharding.shard_batch(next(train_iter), mesh, task.train_keys)
            state, metrics = train_step(state, batch)
            step += 1
            checkpointer.check_for_errors()  # a failed background save stops training now
            nonfinite.push(step, metrics)
            if compiles is not None:
                compiles.after_step(step)
            history.append(metrics)
            if step % config.log_every_steps == 0 or step == num_steps:
                summary = finite_mean_metrics(distributed.gather(history))
                now = time.perf_counter()
                summary["images_per_second"] = (
                    (step - log_start_step) * config.batch_size / (now - log_start)
                )
                log_start, log_start_step = now, step
                writer.write(step, "train", summary)
                loss, history = summary["loss"], []
            progress.update(step, loss)
            evaluate_now = step % config.eval_every_steps == 0 or step == num_steps
            if evaluate_now:
                try:
                    eval_loader = task.eval_loader(batch_size=eval_batch_size, **shards)
                    eval_metrics = evaluate_dataset(
                        task, state.variables, eval_loader, eval_step, mesh
                    )
                except Exception:
                    # Keep the training done so far; the rerun resumes here.
                    nonfinite.flush()
                    checkpointer.save(step, state, train_iter)
                    checkpointer.wait()
                    logging.error(
                        "evaluation at step %d failed; step %d is saved in %s",
                        step,
                        step,
                        checkpointer.directory,
                    )
                    raise
                writer.write(step, "eval", eval_metrics)
                if pictures:
                    variables = distributed.gather(state.variables)
                    loader = task.eval_loader(batch_size=eval_batch_size, **shards)
                    writer.write_images(step, picture_arrays(task, variables, loader, pictures))
                progress.write(
                    f"step {step}: eval {task.best_metric} {eval_metrics[task.best_metric]:.4f}"
                )
            stopping = stop.should_stop(step, last_step=num_steps)
            if evaluate_now or step % config.checkpoint_every_steps == 0 or stopping:
                nonfinite.flush()  # a streak that ends at this step stops before the save
                checkpointer.save(
                    step, state, train_iter, metrics=eval_metrics if evaluate_now else None
                )
                progress.write(f"step {step}: checkpoint -> {checkpointer.step_path(step)}")
            if stopping:
                checkpointer.wait()
                logging.warning(
                    "%s: saved step %d in %s; exiting (run again to resume)",
                    stop.signal_name,
                    step,
                    checkpointer.directory,
                )
                progress.write(f"{stop.signal_name}: saved step {step}, exiting")
                break
        nonfinite.flush()
    except BaseException as e:
        failed = True
        # Before the clean-up below, which may wait for the others.
        distributed.mark_failed(130 if isinstance(e, KeyboardInterrupt) else 1)
        raise
    finally:
        preemption.uninstall()
        stop.close()
        if compiles is not None:
            compiles.close()
        writer.close()
        try:
            checkpointer.close()
        except Exception:
            if not failed:  # else the error already on its way says what happened
                raise
    distributed.mark_finished()  # no collective follows: the others may stop watching it
    if stop.interrupted:
        raise KeyboardInterrupt(f"Ctrl-C: saved step {step} in {checkpointer.directory}")
    return eval_metrics
