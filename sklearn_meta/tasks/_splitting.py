"""Task arithmetic as pure functions: each task's support and query sizes, held-out tasks."""

from __future__ import annotations

from numbers import Integral
from typing import NamedTuple

import numpy as np
import torch

from .._warnings import warn
from ..exceptions import SmallTaskWarning
from ._grouping import describe

__all__ = ["TaskSizes", "check_single_rows", "holdout", "support_sizes", "task_sizes"]


class TaskSizes(NamedTuple):
    """Support and query rows of every task, and whether it takes part (``usable``: at least 2 rows).

    ``n_support`` and ``n_query`` are the widths of a batch: the most
    support and query rows of any usable task. ``ragged``: not every usable
    task has that many (batches are padded and masked).
    """

    support: np.ndarray
    query: np.ndarray
    usable: np.ndarray

    @property
    def n_support(self) -> int:
        return int(self.support[self.usable].max())

    @property
    def n_query(self) -> int:
        return int(self.query[self.usable].max())

    @property
    def ragged(self) -> bool:
        used = self.usable
        return bool((self.support[used] < self.n_support).any() or (self.query[used] < self.n_query).any())


def support_sizes(n_support, sizes: np.ndarray) -> np.ndarray:
    """Support rows of tasks of ``sizes`` rows: ``min(n_support, rows - 1)``, or that fraction of each task.

    A fraction of a task's rows is at least 1 and leaves at least one row
    to be predicted. The same rule serves ``fit`` and ``score``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if isinstance(n_support, Integral):
        wanted = np.full_like(sizes, int(n_support))
    else:
        wanted = np.maximum(1, (float(n_support) * sizes).astype(np.int64))
    return np.maximum(np.minimum(wanted, sizes - 1), 0)


def check_single_rows(usable: np.ndarray, labels, where: str, left_out_of: str) -> None:
    """Refuse tasks that all have a single row; warn about the one-row tasks left out of ``left_out_of``.

    A task of one row cannot be both adapted to and predicted. The one rule
    of ``fit``, ``score`` and the Displays.
    """
    if not usable.any():
        raise ValueError(
            f"{where}: every task has a single row, which cannot be both adapted to and predicted; "
            "a task needs at least 2 rows (1 support row, 1 query row)."
        )
    if not usable.all():
        small = np.flatnonzero(~usable)
        warn(
            f"{where}: {len(small)} of {len(usable)} tasks have a single row, which cannot be both adapted to "
            f"and predicted, and are left out of {left_out_of} (task ids {describe(labels[small])}).",
            SmallTaskWarning,
        )


def task_sizes(n_support, n_query, sizes: np.ndarray, labels, where: str = "fit()") -> TaskSizes:
    """Support and query rows of every task of ``sizes`` rows: every group counts.

    Each task adapts on ``min(n_support, its rows - 1)`` support rows (or
    its fraction ``n_support``) and uses its other rows as queries, up to
    ``n_query`` when set. A task of one row cannot be both adapted to and
    scored: it is left out with a :class:`~sklearn_meta.exceptions.SmallTaskWarning`,
    and an error is raised only when no task is left. With one task (no
    ``groups``), ``n_support`` is at most half its rows.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    support = support_sizes(n_support, sizes)
    if len(sizes) == 1:
        support = np.minimum(support, sizes // 2)
    usable = support >= 1
    if not usable.any():
        if len(sizes) == 1:
            raise ValueError(
                f"Meta-training needs at least 2 samples (1 support, 1 query); got n_samples = {int(sizes[0])}."
            )
    check_single_rows(usable, labels, where, "meta-training")
    query = sizes - support
    if n_query is not None:
        query = np.minimum(query, int(n_query))
    return TaskSizes(support, np.where(usable, query, 0), usable)


def holdout(pool: torch.Tensor, fraction: float, minimum: int, generator: torch.Generator, what: str = "tasks"):
    """Split ``pool`` (task or class codes) at random into held-out and training entries.

    ``fraction`` of them are held out, at least ``minimum`` and at most all
    but ``minimum``.
    """
    if len(pool) < 2 * minimum:
        raise ValueError(
            f"early_stopping holds out whole {what} for validation and needs at least {2 * minimum} {what}; "
            f"got {len(pool)}."
        )
    n_valid = min(len(pool) - minimum, max(minimum, round(fraction * len(pool))))
    shuffled = pool[torch.randperm(len(pool), generator=generator, device=pool.device)]
    return shuffled[:n_valid], shuffled[n_valid:]
