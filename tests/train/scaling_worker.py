"""Trains a tiny model a few steps on fixed global batches; a helper of test_scaling.py.

Run as a fresh process, because the device count (`--xla_force_host_platform_device_count`)
and `jax.distributed` must be set before JAX starts:

    python tests/train/scaling_worker.py --model fcn --data-dir DIR --local-devices 4 \\
        --meshes 4:replicated,4:fsdp,1:replicated --out result.npz

Each `devices:mode` of `--meshes` trains from the same initial state on the same global
batches, on a mesh over the first `devices` devices, and the result file holds the final
parameters and the losses of each run (`<run>/<param path>`, `<run>/losses`), plus the
number of train-step compilations after the first step (`<run>/recompiles`). With
`--num-processes 2 --process-id I --coordinator HOST:PORT` the processes form one job
(jax.distributed over localhost), each feeding only its rows of every batch; process 0
writes the file. The global batches do not depend on the device or process count.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model",
        choices=("fcn", "mask_rcnn", "fcn_loop", "chatter", "first_use"),
        required=True,
    )
    parser.add_argument("--workdir", default="")
    parser.add_argument("--config", default="", help="fcn_loop: a config file, shrunk")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--local-devices", type=int, default=1)
    parser.add_argument("--meshes", default="1:replicated")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--out", required=True)
    # fcn_loop only:
    parser.add_argument("--checkpoint-every", type=int, default=0, help="0: --steps")
    parser.add_argument("--keep", type=int, default=1, help="config.keep_checkpoints")
    parser.add_argument("--lost-timeout", type=float, default=0, help="0: the config's")
    parser.add_argument("--fault", default="", help="a fault of fault_injection.py, here")
    parser.add_argument("--cache-dir", default="", help="config.compilation_cache_dir")
    return parser.parse_args(argv)


def fcn_setup(data_dir: str, batch_size: int, steps: int, dtype: str):
    """Returns (task, optimizer, schedule, global batches) of a tiny FCN-8s."""
    from jaxseg.train import make_optimizer, make_schedule, prepare

    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import make_tiny_config

    config = make_tiny_config(data_dir)
    config.dtype = dtype
    config.batch_size = batch_size
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.05
    task = prepare(config)
    loader = iter(task.train_loader(batch_size=batch_size, seed=0, shard_index=0, shard_count=1))
    batches = [next(loader) for _ in range(steps)]
    batches = [{k: batch[k] for k in task.train_keys} for batch in batches]
    optimizer = make_optimizer(config.optimizer, steps)
    return task, optimizer, make_schedule(config.optimizer, steps), batches


def mask_rcnn_setup(batch_size: int, steps: int, dtype: str):
    """Returns (task, optimizer, schedule, global batches) of a tiny Mask R-CNN."""
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxseg.detection import Instances, total_loss
    from jaxseg.models.mask_rcnn import MaskRCNN
    from jaxseg.tasks.base import Task
    from jaxseg.testing import tiny_mask_rcnn

    model = MaskRCNN(**tiny_mask_rcnn(), dtype=jnp.dtype(dtype))
    size, n, m = 64, 4, 16

    class MaskRCNNModelTask(Task):
        """Just enough of a Task (init and loss) to drive the generic train step."""

        train_keys = ("image", "boxes", "classes", "masks", "valid")
        eval_keys = train_keys
        best_metric = "loss"
        min_image_size = 32

        def __init__(self):
            self.model = model

        def init_variables(self, rng, batch):
            return dict(model.init({"params": rng}, batch["image"], train=False))

        def loss_fn(self, params, model_state, batch, rng):
            gt = Instances(
                boxes=batch["boxes"],
                classes=batch["classes"],
                masks=batch["masks"],
                valid=batch["valid"],
            )
            _, losses = model.apply(
                {"params": params, **model_state},
                batch["image"],
                gt,
                train=True,
                rngs={"sampling": rng},
            )
            return total_loss(losses), (losses, model_state)

        def input_spec(self, batch_size):
            raise NotImplementedError

        check = make_loader = eval_step = eval_metrics = input_spec
        predict = write_pictures = format_metrics = input_spec

    rng = np.random.default_rng(0)
    batches = []
    for _ in range(steps):
        images = rng.normal(size=(batch_size, size, size, 3)).astype(np.float32)
        x1y1 = rng.uniform(0, 40, size=(batch_size, n, 2))
        wh = rng.uniform(8, 24, size=(batch_size, n, 2))
        boxes = np.concatenate([x1y1, x1y1 + wh], -1).astype(np.float32)
        valid = rng.random((batch_size, n)) < 0.8
        valid[:, 0] = True
        for b in range(batch_size):
            for x1, y1, x2, y2 in boxes[b][valid[b]].astype(int):
                images[b, y1:y2, x1:x2] += 2.0
        batches.append(
            {
                "image": images,
                "boxes": np.where(valid[..., None], boxes, 0).astype(np.float32),
                "classes": np.where(valid, rng.integers(1, 4, (batch_size, n)), 0).astype(np.int32),
                "masks": np.ones((batch_size, n, m, m), np.uint8) * valid[..., None, None],
                "valid": valid,
            }
        )
    optimizer = optax.sgd(0.002, momentum=0.9)
    return MaskRCNNModelTask(), optimizer, optax.constant_schedule(0.002), batches


def initial_state(task, optimizer, batch):
    """Returns a host (numpy) TrainState drawn with NumPy: no device, no compile.

    Kernels N(0, 1 / fan_in), other parameters N(0, 0.1), BatchNorm scales about 1; the
    optimiser state of SGD-momentum / Adam is zeros at step 0.
    """
    import functools

    import jax
    import numpy as np

    from jaxseg.train.loop import create_train_state

    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    abstract = jax.eval_shape(functools.partial(create_train_state, task, optimizer, 0), spec)
    rng = np.random.default_rng(1)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("kernel", "embedding"):
            value = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name == "var":
            value = rng.uniform(0.5, 2.0, size=leaf.shape)
        else:
            value = (name == "scale") + 0.1 * rng.normal(size=leaf.shape)
        return np.asarray(value, leaf.dtype)

    zeros = lambda tree: jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), tree)  # noqa: E731
    return abstract.replace(
        step=np.zeros((), np.int32),
        params=jax.tree_util.tree_map_with_path(draw, abstract.params),
        model_state=jax.tree_util.tree_map_with_path(draw, abstract.model_state),
        opt_state=zeros(abstract.opt_state),
        rng=np.array([0, 0], np.uint32),
    )


def train(task, optimizer, schedule, batches, host_state, mesh, mode):
    """Returns (final host params, losses [steps], recompiles after step 1) on `mesh`."""
    import jax
    import numpy as np

    from jaxseg.runtime import distributed, sharding
    from jaxseg.runtime.compilation import CompileCounter
    from jaxseg.train.step import make_train_step

    shardings = sharding.step_shardings(host_state, mesh, mode=mode)
    step_fn = make_train_step(task, optimizer, schedule, shardings=shardings)
    state = sharding.put(host_state, shardings.state)
    per_process = len(batches[0][task.train_keys[0]]) // jax.process_count()
    rows = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
    losses, after_first = [], None
    with CompileCounter() as compiles:
        for i, batch in enumerate(batches):
            local = {k: np.asarray(v)[rows] for k, v in batch.items()}
            state, metrics = step_fn(state, sharding.shard_batch(local, mesh, task.train_keys))
            losses.append(float(distributed.gather(metrics["loss"])))
            if i == 0:
                after_first = compiles.count("train_step")
        recompiles = compiles.count("train_step") - after_first
    return distributed.gather(state.params), np.asarray(losses), recompiles


def shrink_config(path: str, data_dir: str):
    """Returns the config of the file `path`, cut down to a tiny model on the shapes data."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if config.model.name.startswith("mask_rcnn"):
        from jaxseg.testing import set_tiny_mask_rcnn

        set_tiny_mask_rcnn(config.model)  # the class count comes from the data
    else:
        config.model.width = 0.03125
    # Plain SGD: Adam divides by the gradients' size, so parameters whose gradients are
    # float rounding noise (about 0) would move by a whole step in either direction.
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.002
    config.dataset.config = "small"  # the data the test's fixture built
    config.dataset.data_dir = data_dir
    # One evaluation batch: the runs compare training; the evaluation need only run.
    config.dataset.eval_split = "validation[:4]"
    config.compilation_cache_dir = ""
    config.eval.num_pictures = 0
    return config


def train_loop(args):
    """Runs `train_and_evaluate` of the tiny FCN config; each process writes its eval metrics
    to `<out>.<process id>.json`."""
    import json

    import jax
    from absl import logging

    from jaxseg.train import train_and_evaluate

    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import make_tiny_config

    logging.set_verbosity(logging.INFO)  # "resumed from ... at step N" is an info line
    config = make_tiny_config(args.data_dir)
    if args.config:
        config = shrink_config(args.config, args.data_dir)
    config.batch_size = args.batch_size
    config.num_train_steps = args.steps
    config.optimizer.warmup_steps = min(int(config.optimizer.warmup_steps), args.steps)
    config.eval.summary_pictures = 0
    config.log_every_steps = 1
    config.eval_every_steps = args.steps
    config.checkpoint_every_steps = args.checkpoint_every or args.steps
    config.keep_checkpoints = args.keep
    config.compilation_cache_dir = args.cache_dir
    if args.lost_timeout:
        config.distributed.lost_process_timeout_s = args.lost_timeout
    config.eval.batch_size = 4
    config.log_compiles = True
    if args.num_processes > 1:
        config.distributed.coordinator_address = args.coordinator
        config.distributed.num_processes = args.num_processes
        config.distributed.process_id = args.process_id
    if args.fault:
        inject_fault(args.fault)
    metrics = train_and_evaluate(config, args.workdir)
    with open(f"{args.out}.{jax.process_index()}.json", "w") as f:
        json.dump({k: v for k, v in metrics.items() if isinstance(v, float)}, f)


def inject_fault(fault: str) -> None:
    """Patches this process with one fault of `fault_injection.py` ("kill_after_step:3")."""
    import signal

    import fault_injection

    kind, arg = fault.split(":")
    signums = {"kill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}
    if kind.endswith("_after_step"):
        fault_injection._patch_steps(int(arg), signums[kind.split("_")[0]])
    elif kind == "kill_in_commit":
        step, what = arg.split("/")
        fault_injection._patch_commit(int(step), what)
    else:
        raise ValueError(f"unknown fault {fault!r}")


# More than any pipe holds (Linux: 64 KiB by default, 1 MiB at most unprivileged).
CHATTER_BYTES = 2 * 1024 * 1024


def chatter():
    """Process 1 logs CHATTER_BYTES, then both processes meet in a collective.

    What the two-process Mask R-CNN loop does (about 100 KiB of compilation logs before a
    collective of the evaluation or the checkpoint): a harness that reads one worker's
    output at a time stalls here, as that loop did (docs/scaling.md).
    """
    import jax
    from jax.experimental import multihost_utils

    if jax.process_index() == 1:
        line = "x" * 1023 + "\n"
        for _ in range(CHATTER_BYTES // len(line)):
            sys.stderr.write(line)
        sys.stderr.flush()
    multihost_utils.sync_global_devices("chatter")  # an all-gather over both processes


def first_use(args):
    """Runs `prepare` of the tiny FCN config, as `train_and_evaluate` does (through
    `main_process_first`), on a data dir without the dataset; each process writes the
    datasets it built to `<out>.<process id>.json`."""
    import json

    import jax
    import tensorflow_datasets as tfds

    from jaxseg.runtime import distributed
    from jaxseg.train import prepare

    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import make_tiny_config

    built = []
    build = tfds.core.DatasetBuilder.download_and_prepare

    def spy(self, *args, **kwargs):
        built.append(self.name)
        return build(self, *args, **kwargs)

    tfds.core.DatasetBuilder.download_and_prepare = spy
    distributed.main_process_first(lambda: prepare(make_tiny_config(args.data_dir)))
    with open(f"{args.out}.{jax.process_index()}.json", "w") as f:
        json.dump({"built": built}, f)


def main(argv=None):
    args = _parse(argv)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={args.local_devices}"
    )
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import ml_collections
    import numpy as np
    from flax import traverse_util

    from jaxseg.runtime import distributed, sharding

    if args.model == "fcn_loop":  # train_and_evaluate initialises from its config
        return train_loop(args)
    if args.num_processes > 1:
        distributed.initialize(
            ml_collections.ConfigDict(
                dict(
                    initialize="auto",
                    coordinator_address=args.coordinator,
                    num_processes=args.num_processes,
                    process_id=args.process_id,
                )
            )
        )
    if args.model == "chatter":
        return chatter()
    if args.model == "first_use":
        return first_use(args)
    if args.model == "fcn":
        setup = fcn_setup(args.data_dir, args.batch_size, args.steps, args.dtype)
    else:
        setup = mask_rcnn_setup(args.batch_size, args.steps, args.dtype)
    task, optimizer, schedule, batches = setup
    host_state = initial_state(task, optimizer, batches[0])
    result = {}
    for run in args.meshes.split(","):
        count, mode = run.split(":")
        mesh = sharding.make_mesh(jax.devices()[: int(count)])
        params, losses, recompiles = train(
            task, optimizer, schedule, batches, host_state, mesh, mode
        )
        flat = traverse_util.flatten_dict(params, sep="/")
        result.update({f"{run}/{k}": np.asarray(v) for k, v in flat.items()})
        result[f"{run}/losses"] = losses
        result[f"{run}/recompiles"] = np.asarray(recompiles)
    if jax.process_index() == 0:
        np.savez(args.out, **result)


if __name__ == "__main__":
    main()
