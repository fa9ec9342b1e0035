"""Task arithmetic as pure functions: support and query sizes, held-out tasks."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch

from ._grouping import describe

__all__ = ["holdout", "split_sizes", "support_size"]


def support_size(n_support, sizes: np.ndarray) -> int:
    """Support rows per task: ``n_support`` itself, or a fraction of the smallest task.

    The same rule serves ``fit`` and ``score``: every task of a collection
    adapts on the same number of rows, so all of them adapt in one
    vectorised call and their scores are comparable.
    """
    if isinstance(n_support, Integral):
        return int(n_support)
    return max(1, int(n_support * int(sizes.min())))


def split_sizes(n_support, n_query, sizes: np.ndarray, labels, where: str = "fit()") -> tuple[int, int]:
    """Support and query rows per task for tasks of ``sizes`` rows.

    With one task (no ``groups``), ``n_support`` is capped at half its rows.
    ``n_query=None`` takes as many rows as the smallest task leaves.
    """
    smallest = int(sizes.min())
    support = support_size(n_support, sizes)
    if len(sizes) == 1:
        support = min(support, smallest // 2)
        if support < 1:
            raise ValueError(
                f"Meta-training needs at least 2 samples (1 support, 1 query); got n_samples = {smallest}."
            )
    else:
        too_small = np.flatnonzero(sizes < support + 1)
        if len(too_small):
            raise ValueError(
                f"{where}: {len(too_small)} task(s) have fewer than n_support + 1 = {support + 1} rows "
                f"(task ids {describe(labels[too_small])}). Lower n_support or drop those tasks."
            )
    available = smallest - support
    query = available if n_query is None else int(n_query)
    if query > available:
        raise ValueError(
            f"n_query={query} but the smallest task has only {available} rows left after its "
            f"{support} support rows. Lower n_query or n_support, or leave n_query=None."
        )
    return support, query


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
