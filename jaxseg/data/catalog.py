"""The datasets the loaders know by name, and how to open a split of each.

    name                TFDS dataset                        tasks       built by
    jaxseg_shapes       jaxseg_shapes[/small|medium|large]  sem., inst. jaxseg, on first use
    voc2012             jaxseg_voc2012[/default|sbd]        semantic    jaxseg, from manual_dir
    coco                jaxseg_coco[/2017 or a config]      instance    jaxseg, from manual_dir
    oxford_iiit_pet     oxford_iiit_pet                     semantic    TFDS catalogue
    cityscapes          cityscapes/semantic_segmentation    semantic    TFDS catalogue
    lvis                lvis                                instance    TFDS catalogue
    coco/2017_panoptic  coco/2017_panoptic                  instance    TFDS catalogue (things)

A config may follow the name after a slash (`jaxseg_shapes/medium`, `voc2012/sbd`) or be
passed as `config=` (a name or a BuilderConfig object, e.g. `CocoFormatConfig(...)`).

jaxseg's own builders are generated on first use (`tfds.data_source` with array_record
files). Each build records its source (`jaxseg.data.sources`); a prepared build is only
used for the same source, another one is refused with a message saying how to rebuild.
Catalogue datasets must already be prepared in `data_dir` in the array_record format
(`tfds build NAME --file_format=array_record`; most catalogue builders need TensorFlow to
*build*, on any machine): jaxseg reads them from their files with `builder_from_files`,
without importing the builder code and without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import tensorflow_datasets as tfds
from absl import logging

from jaxseg.data import adapters, shapes, sources

SEMANTIC = "semantic"
INSTANCE = "instance"


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    """The classes of one task of a dataset.

    Attributes:
      task: "semantic" or "instance".
      class_names: semantic: names of label ids 0..K-1 (background included where the
        dataset has one); instance: names of the foreground classes 1..K, in order
        (class k is `class_names[k - 1]`; 0 is background and is not listed).
      category_ids: COCO-format datasets: the annotation file's category id of each
        instance class (class k is category `category_ids[k - 1]`), for COCO evaluation.
    """

    task: str
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...] | None = None

    @property
    def num_classes(self) -> int:
        """Semantic: K label ids (background included). Instance: K foreground classes."""
        return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset: its classes, per task.

    `num_classes` and `class_names` are those of `task`, the task asked for (or, when none
    was asked, the dataset's only task, or "semantic" for `jaxseg_shapes`, which has both).
    """

    name: str
    task: str
    semantic: ClassInfo | None
    instance: ClassInfo | None
    ignore_label: int = adapters.IGNORE

    @property
    def num_classes(self) -> int:
        return self._of_task().num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._of_task().class_names

    def _of_task(self) -> ClassInfo:
        return self.semantic if self.task == SEMANTIC else self.instance


@dataclasses.dataclass(frozen=True)
class _Entry:
    tfds_name: str
    adapters: dict[str, Callable]
    own_builder: bool
    # Class names per task: fixed, or read from the prepared builder when they depend on
    # the data (COCO-format categories, catalogue ClassLabel names).
    class_names: dict[str, tuple[str, ...]] | None = None
    class_names_from: Callable[[tfds.core.DatasetBuilder], dict[str, tuple[str, ...]]] | None = None


def _metadata_names(builder) -> dict[str, tuple[str, ...]]:
    return {INSTANCE: tuple(builder.info.metadata["instance_class_names"])}


def _catalogue_names(key: str, count: int | None = None):
    def names(builder) -> dict[str, tuple[str, ...]]:
        return {INSTANCE: tuple(builder.info.features[key]["label"].names[:count])}

    return names


_ENTRIES: dict[str, _Entry] = {
    "jaxseg_shapes": _Entry(
        "jaxseg_shapes",
        {SEMANTIC: adapters.jaxseg_semantic, INSTANCE: adapters.jaxseg_instance},
        own_builder=True,
        class_names={SEMANTIC: shapes.CLASS_NAMES, INSTANCE: shapes.CLASS_NAMES[1:]},
    ),
    "voc2012": _Entry(
        "jaxseg_voc2012",
        {SEMANTIC: adapters.jaxseg_semantic},
        own_builder=True,
        class_names={SEMANTIC: adapters.VOC_CLASS_NAMES},
    ),
    "coco": _Entry(
        "jaxseg_coco",
        {INSTANCE: adapters.jaxseg_instance},
        own_builder=True,
        class_names_from=_metadata_names,
    ),
    "oxford_iiit_pet": _Entry(
        "oxford_iiit_pet",
        {SEMANTIC: adapters.oxford_iiit_pet},
        own_builder=False,
        class_names={SEMANTIC: adapters.PET_CLASS_NAMES},
    ),
    "cityscapes": _Entry(
        "cityscapes/semantic_segmentation",
        {SEMANTIC: adapters.cityscapes},
        own_builder=False,
        class_names={SEMANTIC: adapters.CITYSCAPES_CLASS_NAMES},
    ),
    "lvis": _Entry(
        "lvis",
        {INSTANCE: adapters.lvis},
        own_builder=False,
        class_names_from=_catalogue_names("objects"),
    ),
    "coco/2017_panoptic": _Entry(
        "coco/2017_panoptic",
        {INSTANCE: adapters.coco_panoptic_things},
        own_builder=False,
        class_names_from=_catalogue_names("panoptic_objects", adapters.COCO_PANOPTIC_NUM_THINGS),
    ),
}
_ALIASES = {"jaxseg_voc2012": "voc2012", "jaxseg_coco": "coco"}


def dataset_names() -> tuple[str, ...]:
    """Returns the dataset names the loaders accept (a config may follow after '/')."""
    return tuple(_ENTRIES)


def _resolve(name: str, config) -> tuple[_Entry, str]:
    """Returns (entry, TFDS name with config) for a loader dataset name."""
    if name in _ENTRIES:
        base, name_config = name, None
    else:
        base, _, name_config = name.partition("/")
        base = _ALIASES.get(base, base)
        if base not in _ENTRIES:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_ENTRIES)}")
    entry = _ENTRIES[base]
    if name_config and config is not None:
        raise ValueError(f"dataset {name!r} names a config and config={config!r} was also given")
    tfds_name = entry.tfds_name
    if name_config:
        if not entry.own_builder:
            raise ValueError(f"dataset {name!r}: {base} takes no config")
        tfds_name = f"{entry.tfds_name}/{name_config}"
    elif isinstance(config, str):
        tfds_name = f"{entry.tfds_name}/{config}"
    return entry, tfds_name


def require_task(name: str, task: str) -> None:
    """Raises ValueError unless dataset `name` has annotations for `task`."""
    entry, _ = _resolve(name, None)
    if task not in entry.adapters:
        raise ValueError(f"dataset {name!r} has no {task!r} task; it has {sorted(entry.adapters)}")


def _own_builder(tfds_name: str, *, data_dir, config) -> tfds.core.DatasetBuilder:
    builder_kwargs = {"data_dir": data_dir}
    if config is not None and not isinstance(config, str):
        builder_kwargs["config"] = config
        config_class = type(tfds.builder_cls(tfds_name.partition("/")[0]).BUILDER_CONFIGS[0])
        if not isinstance(config, config_class):
            raise ValueError(
                f"dataset {tfds_name} takes a {config_class.__name__} as config, got "
                f"{type(config).__name__} {getattr(config, 'name', config)!r}"
            )
    return tfds.builder(tfds_name, **builder_kwargs)


def _check_source(builder, manual_dir) -> None:
    """Raises SourceChangedError if prepared `builder` was built from another source.

    The source asked for is what `builder.source(manual_dir)` reads now. A build is used
    as it is, with a warning, when that source cannot be read (its files are gone) or the
    build predates recorded sources; with no source named (no `manual_dir` for relative
    paths), it is what was asked for.
    """
    where = f"{builder.name}/{builder.builder_config.name} in {builder.data_dir}"
    recorded = builder.info.metadata.get("source")
    try:
        current = builder.source(manual_dir)
    except FileNotFoundError as e:
        logging.warning(
            "%s: cannot read the source given to check the build against it (%s); using "
            "the build as it is%s",
            where,
            e,
            f", made from {sources.format_source(recorded)}" if recorded else "",
        )
        return
    if current is None:
        return
    if recorded is None:
        logging.warning(
            "%s was built by an older jaxseg that did not record its source, so it cannot be "
            "checked against %s; using it. Delete %s to rebuild it from this source.",
            where,
            sources.format_source(current),
            builder.data_dir,
        )
        return
    if not sources.same_source(recorded, current):
        raise sources.SourceChangedError(
            f"{where} was built from another source than the one given now:\n  "
            + "\n  ".join(sources.differences(recorded, current))
            + f"\nBuilt from: {sources.format_source(recorded)}\n"
            f"Given now:  {sources.format_source(current)}\n"
            f"To rebuild it from the new source, delete (or move away) {builder.data_dir}; "
            "to keep both builds, use another data dir for this source (config.dataset.data_dir, "
            "or data_dir= of the loaders). With config.dataset.annotations / images (or "
            "jaxseg.data.coco_builder.custom_config) each COCO-format source gets its own "
            "build automatically."
        )


def build_source(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    config=None,
    manual_dir: str | os.PathLike | None = None,
) -> dict | None:
    """Returns the recorded source of dataset `name`'s build, without building anything.

    None for catalogue datasets, for builds not prepared yet, and for builds made before
    jaxseg recorded sources. See `jaxseg.data.sources`.
    """
    del manual_dir  # the recorded source is what the build was made from
    entry, tfds_name = _resolve(name, config)
    if not entry.own_builder:
        return None
    builder = _own_builder(tfds_name, data_dir=data_dir, config=config)
    if not builder.is_prepared():
        return None
    source = builder.info.metadata.get("source")
    return None if source is None else json.loads(json.dumps(source))


def load_builder(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    config=None,
    manual_dir: str | os.PathLike | None = None,
) -> tuple[_Entry, tfds.core.DatasetBuilder]:
    """Returns (catalogue entry, prepared builder) for dataset `name`.

    jaxseg's own builders are generated if they are not in `data_dir` yet (from
    `manual_dir` for VOC and COCO); catalogue datasets are read from their prepared files.

    Raises:
      sources.SourceChangedError: (a ValueError) a prepared build of jaxseg's was made
        from another source (other data at `manual_dir`, an edited annotation file, other
        generator settings under the same config name); the message names both sources
        and how to rebuild. Nothing is deleted.
    """
    entry, tfds_name = _resolve(name, config)
    if entry.own_builder:
        builder = _own_builder(tfds_name, data_dir=data_dir, config=config)
        if builder.is_prepared():
            _check_source(builder, manual_dir)
            return entry, builder
        download_config = tfds.download.DownloadConfig(
            manual_dir=os.fspath(manual_dir) if manual_dir else None
        )
        builder.download_and_prepare(file_format="array_record", download_config=download_config)
        return entry, builder
    try:
        builder = tfds.core.read_only_builder.builder_from_files(tfds_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise FileNotFoundError(
            f"dataset {tfds_name} is not prepared in {data_dir or 'the TFDS data dir'}. "
            f"Prepare it with `tfds build {tfds_name} --file_format=array_record` (building a "
            "catalogue dataset may need TensorFlow on the machine that builds it; jaxseg "
            "reads the files without it)."
        ) from e
    formats = {f.value for f in builder.info.available_file_formats()} or {
        builder.info.file_format.value if builder.info.file_format else None
    }
    if "array_record" not in formats:
        raise ValueError(
            f"dataset {tfds_name} in {builder.data_dir} is stored as {sorted(map(str, formats))}; "
            "random access needs array_record: rebuild with --file_format=array_record or "
            "convert with `tfds convert_format`"
        )
    return entry, builder


def dataset_info(
    name: str,
    task: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    config=None,
    manual_dir: str | os.PathLike | None = None,
) -> DatasetInfo:
    """Returns the classes of dataset `name` (see `DatasetInfo`).

    Args:
      name: a loader dataset name (see the module docstring), optionally with "/config".
      task: "semantic" or "instance"; None picks the dataset's only task ("semantic" for
        `jaxseg_shapes`).
      data_dir, config, manual_dir: as for the loaders; only used by datasets whose class
        names come from the data (COCO-format categories, catalogue label names), which
        are then prepared or opened.
    """
    entry, _ = _resolve(name, config)
    if task is None:
        task = SEMANTIC if SEMANTIC in entry.adapters else INSTANCE
    require_task(name, task)
    names, category_ids = entry.class_names, None
    if names is None:
        _, builder = load_builder(name, data_dir=data_dir, config=config, manual_dir=manual_dir)
        names = entry.class_names_from(builder)
        if "category_ids" in builder.info.metadata:
            category_ids = tuple(builder.info.metadata["category_ids"])
    return DatasetInfo(
        name=name,
        task=task,
        semantic=ClassInfo(SEMANTIC, names[SEMANTIC]) if SEMANTIC in names else None,
        instance=(
            ClassInfo(INSTANCE, names[INSTANCE], category_ids) if INSTANCE in names else None
        ),
    )
