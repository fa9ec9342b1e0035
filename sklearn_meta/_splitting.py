"""Task arithmetic as pure functions: group validation, support/query sizes, held-out tasks."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.utils.validation import check_consistent_length, column_or_1d

__all__ = ["describe", "holdout", "split_sizes", "support_size", "validate_groups"]


def describe(labels, limit: int = 5) -> str:
    """A short listing of ``labels`` for an error message."""
    shown = ", ".join(repr(x.item() if isinstance(x, np.generic) else x) for x in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def validate_groups(groups, X) -> np.ndarray:
    """One task id per row of ``X``, as a 1-d array; NaN and ``None`` are refused."""
    try:
        groups = column_or_1d(groups, warn=False)
    except ValueError as error:
        raise ValueError(f"groups must be 1-dimensional (one task id per row): {error}") from None
    try:
        check_consistent_length(X, groups)
    except ValueError:
        raise ValueError(
            f"groups has {len(groups)} entries but X has {len(X)} rows; give one task id per row."
        ) from None
    if groups.dtype.kind == "f" and not np.isfinite(groups).all():
        raise ValueError("groups contains NaN or infinity; every row needs a task id.")
    if groups.dtype.kind == "O" and any(g is None or (isinstance(g, float) and not np.isfinite(g)) for g in groups):
        raise ValueError("groups contains None or NaN; every row needs a task id.")
    return groups


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
