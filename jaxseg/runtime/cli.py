"""What `train.py` and `eval.py` share around their one library call: flags, errors, logs.

- `parse_flags`: absl's flag parsing, but a mistake in a `--config.*` override (a typo, a
  value of the wrong type) is one line with ml_collections' did-you-mean, not a traceback.
- `run_main`: a mistake the library reports before anything compiles (`ConfigError`, a
  locked workdir, a failed checkpoint save) is one line and exit status 2 or 1, and Ctrl-C
  after its checkpoint is a line and status 130.
- `quiet_logging`: by default the terminal shows the progress bar, evaluations, saves,
  jaxseg's own messages and other libraries' warnings that matter; INFO lines of orbax,
  TFDS and JAX (about 50 per checkpoint save) and a few known harmless warnings are left
  out; orbax's error logs of a failed save are left out too (training stops with a
  `CheckpointSaveError` that names the folder and the cause), and the tracebacks other
  libraries log are cut to their first line, once. `--verbosity=0` (or any `-v`) shows
  everything, as absl does.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import flags, logging

from jaxseg.config import ConfigError
from jaxseg.runtime.checkpointing import CheckpointSaveError
from jaxseg.runtime.workdir_lock import WorkdirLockedError

__all__ = ["parse_flags", "quiet_logging", "run_main"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# Warnings other libraries print on every run that say nothing about this run.
_HARMLESS = (
    "Requested `tracked_metric`",  # orbax: a checkpoint saved between evaluations
    "OpenCV is not installed",  # TFDS: PIL decodes the images
    "Task exception was never retrieved",  # asyncio, per array of a failed orbax save
    "Given directory is read only",  # orbax: eval.py opens checkpoints read-only
    "setting save_interval_steps=0",  # orbax: the same, said another way
)


def _program() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv else "jaxseg"


def _fail(message: str, status: int) -> NoReturn:
    sys.stderr.write(f"{_program()}: error: {message}\n")
    sys.exit(status)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """Parses `argv` into absl's FLAGS (pass as `app.run(main, flags_parser=parse_flags)`)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(f"{e} (see --helpfull)", 2)
    except (KeyError, AttributeError, TypeError, ValueError) as e:
        # ml_collections: an override of a key the config lacks, or of the wrong type.
        text = str(e.args[0]) if e.args else str(e)
        text = " ".join(text.strip("'\"").replace("\\n", " ").replace("\\'", "'").split())
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        _fail(f"bad --config override ({' '.join(overrides) or '?'}): {text}", 2)


def run_main(main: Callable[[], None]) -> None:
    """Runs `main()`, turning the errors a user can fix into one line and an exit status."""
    try:
        main()
    except ConfigError as e:
        _fail(str(e), 2)
    except (WorkdirLockedError, CheckpointSaveError) as e:
        _fail(str(e), 1)
    except KeyboardInterrupt as e:
        sys.stderr.write(f"{_program()}: {e or 'interrupted'}\n")
        sys.exit(130)


class _QuietFilter(std_logging.Filter):
    """Lets through jaxseg's records, other libraries' warnings and errors (tracebacks cut)."""

    def __init__(self):
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: std_logging.LogRecord) -> bool:
        own = record.pathname.startswith(_PACKAGE_DIR)
        if own:
            return True
        if record.levelno < std_logging.WARNING:
            return False
        if f"{os.sep}orbax{os.sep}" in record.pathname and record.levelno >= std_logging.ERROR:
            return False  # a failed save: the loop stops with CheckpointSaveError, saying why
        message = record.getMessage()
        if any(words in message for words in _HARMLESS):
            return False
        if record.exc_info or record.levelno >= std_logging.ERROR:
            first = message.strip().splitlines()[0][:300] if message.strip() else ""
            if first in self._seen:
                return False
            self._seen.add(first)
            record.msg, record.args = first, None
            record.exc_info = record.exc_text = None
        return True


def quiet_logging() -> None:
    """Installs the default terminal filter, unless `--verbosity` / `-v` was given."""
    verbosity = flags.FLAGS["verbosity"] if "verbosity" in flags.FLAGS else None
    if verbosity is not None and verbosity.present:
        return
    logging.set_verbosity(logging.INFO)  # jaxseg's INFO lines pass the filter
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _QuietFilter) for f in handler.filters):
        handler.addFilter(_QuietFilter())
