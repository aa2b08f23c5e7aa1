"""What the semantic and instance loaders share: the example source, sampling, sharding,
batching and the grain DataLoader around them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import grain
import numpy as np
from absl import flags


class ExampleSource(grain.sources.RandomAccessDataSource):
    """Canonical examples (see `jaxseg.data.adapters`) of one split, for grain.

    Reading index i decodes record i of the TFDS data source and adapts it. For
    evaluation the source is padded to `length` >= len(records): indices past the end
    repeat the last record with `image_valid` False and `image_id` -1, so that every
    process gets the same number of full batches.
    """

    def __init__(self, records: Sequence, adapter: Callable, *, length: int | None = None):
        self._records = records
        self._adapter = adapter
        self._num_records = len(records)
        self._length = self._num_records if length is None else int(length)
        if self._num_records == 0:
            raise ValueError(f"the split {records!r} holds no examples")
        if self._length < self._num_records:
            raise ValueError(f"length {self._length} < {self._num_records} records")

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        valid = index < self._num_records
        record_index = index if valid else self._num_records - 1
        try:
            example = self._adapter(record_index, self._records[record_index])
        except Exception as e:
            raise ValueError(f"cannot read example {record_index} of {self._records!r}: {e}") from e
        example["image_valid"] = np.bool_(valid)
        if not valid:
            example["image_id"] = np.int64(-1)
        return example

    def __repr__(self) -> str:
        return f"ExampleSource({self._records!r}, length={self._length})"


def check_loader_args(
    *, batch_size: int, seed: int, shard_index: int, shard_count: int, worker_count: int
) -> None:
    """Raises ValueError naming the first bad loader argument."""
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(
            f"need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
            f"shard_count={shard_count}"
        )
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}")


def make_data_loader(
    records: Sequence,
    adapter: Callable,
    operations: Sequence,
    *,
    batch_size: int,
    train: bool,
    seed: int,
    num_epochs: int | None,
    shard_index: int,
    shard_count: int,
    worker_count: int,
    read_options: grain.ReadOptions | None = None,
) -> grain.DataLoader:
    """Returns a grain DataLoader over `records` adapted, transformed and batched.

    Training: each process reads a contiguous 1/shard_count of the records, reshuffled
    every epoch from `seed`, and drops the last incomplete batch of the stream; random
    transforms get a generator derived from `seed` and the element's position, so the
    stream does not depend on `worker_count`. Evaluation: records in order, padded (see
    `ExampleSource`) to a multiple of batch_size * shard_count; one epoch unless
    `num_epochs` says otherwise.

    `batch_size` is per process: divide a global batch by the number of processes.
    """
    check_loader_args(
        batch_size=batch_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
        worker_count=worker_count,
    )
    shard_options = grain.sharding.ShardOptions(
        shard_index=shard_index, shard_count=shard_count, drop_remainder=True
    )
    if train:
        source = ExampleSource(records, adapter)
        per_shard = len(source) // shard_count
        if per_shard < batch_size:
            raise ValueError(
                f"each of the {shard_count} shards holds {per_shard} examples, fewer than "
                f"batch_size={batch_size}"
            )
        sampler = grain.samplers.IndexSampler(
            num_records=len(source),
            shard_options=shard_options,
            shuffle=True,
            num_epochs=num_epochs,
            seed=int(seed),
        )
    else:
        step = batch_size * shard_count
        source = ExampleSource(records, adapter, length=math.ceil(len(records) / step) * step)
        sampler = grain.samplers.IndexSampler(
            num_records=len(source),
            shard_options=shard_options,
            shuffle=False,
            num_epochs=num_epochs or 1,
            seed=int(seed),
        )
    operations = [*operations, grain.transforms.Batch(batch_size, drop_remainder=train)]
    if worker_count > 0 and not flags.FLAGS.is_parsed():
        # grain's worker processes read absl flags; outside an absl app (a script, a
        # notebook, pytest) nothing has parsed them, so take their defaults.
        flags.FLAGS.mark_as_parsed()
    if read_options is None:
        # grain's default (16 threads, 500 elements ahead) holds too many decoded
        # full-size images; a few batches ahead keeps up with the transforms.
        read_options = grain.ReadOptions(num_threads=4, prefetch_buffer_size=2 * batch_size)
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=operations,
        worker_count=worker_count,
        shard_options=shard_options,
        read_options=read_options,
    )
