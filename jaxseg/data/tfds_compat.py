"""The base class of jaxseg's TFDS builders, with a fix for building without TensorFlow.

tensorflow-datasets 4.9.10 computes `DatasetBuilder.code_path` with an `isinstance` check
against `importlib_resources.abc.Traversable`, a backport that TFDS only requires on
Python < 3.9. On Python 3.11 without that package, `download_and_prepare` of any builder
defined in an installed package fails with `ModuleNotFoundError: importlib_resources`.
Builders here state their code path directly, which is all TFDS needs it for (looking up
a `checksums.tsv` beside the code; jaxseg downloads nothing).
"""

from __future__ import annotations

import inspect

import tensorflow_datasets as tfds
from etils import epath


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A `GeneratorBasedBuilder` that builds without TensorFlow or `importlib_resources`.

    Subclasses are registered with TFDS as usual (by their snake-case class name) and are
    written in the array_record format by default, so `tfds.data_source` can read them.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        try:
            return epath.Path(inspect.getfile(cls))
        except TypeError:  # Classes defined interactively have no file.
            return None

    def __init__(self, *, file_format=None, **kwargs):
        super().__init__(file_format=file_format or "array_record", **kwargs)
