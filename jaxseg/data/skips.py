"""Counting the samples a builder skips or repairs, with the reason and file or id of each."""

from __future__ import annotations

import collections

from absl import logging

_LOGGED_PER_REASON = 20


class SkipCounter:
    """Counts skipped samples (or parts of samples) per reason and logs the first few.

    The counts end up in the dataset's `info.metadata["skipped"]` so that a user can see,
    after a build, what was left out and why; each skip is also logged with the file or
    sample id (the first `_LOGGED_PER_REASON` per reason in full, then a summary).
    """

    def __init__(self, split: str):
        self.split = split
        self.counts: collections.Counter[str] = collections.Counter()

    def skip(self, reason: str, where: str, *, log: bool = True) -> None:
        """Records one skip of kind `reason` at `where` (a file name or sample id).

        `log=False` only counts it (for a caller that warns once with a summary).
        """
        self.counts[reason] += 1
        if not log:
            return
        if self.counts[reason] <= _LOGGED_PER_REASON:
            logging.warning("[%s] %s: %s", self.split, reason, where)
        elif self.counts[reason] == _LOGGED_PER_REASON + 1:
            logging.warning("[%s] more skips for %r; not logging each one", self.split, reason)

    def repair(self, reason: str, where: str, *, log: bool = True) -> None:
        """Records one sample kept after a repair of kind `reason` (counted as 'repaired: ...')."""
        self.skip(f"repaired: {reason}", where, log=log)

    def as_dict(self) -> dict[str, int]:
        """Returns {reason: count}, sorted by reason."""
        return dict(sorted(self.counts.items()))
