"""Rows grouped into tasks (or classes) as index tensors, and the checks on ``groups``.

Rows stay in one tensor on the target device; tasks (or, in episodic mode,
classes) are a padded matrix of row indices, and every sample is drawn with
tensor operations from a seeded :class:`torch.Generator`, so no numpy round
trip and no Python loop over tasks happens during training.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_consistent_length, column_or_1d
from torch import Tensor

__all__ = ["GroupedRows", "describe", "encode_groups", "validate_groups"]


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


def encode_groups(groups) -> tuple[np.ndarray, np.ndarray]:
    """Map hashable group labels to integer codes in order of first appearance.

    Returns
    -------
    codes : ndarray of int64
        ``codes[i]`` is the task of row ``i``.
    labels : ndarray
        ``labels[c]`` is the original label of code ``c``.
    """
    groups = np.asarray(groups)
    try:
        labels, first, codes = np.unique(groups, return_index=True, return_inverse=True)
    except TypeError:  # labels of mixed, unorderable types
        index: dict = {}
        codes = np.fromiter((index.setdefault(g, len(index)) for g in groups.tolist()), np.int64)
        labels = np.empty(len(index), dtype=object)
        labels[:] = list(index)
        return codes, labels
    order = np.argsort(first, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return remap[codes.ravel()].astype(np.int64), labels[order]


class GroupedRows:
    """Row indices grouped by an integer code (a task, or a class).

    Parameters
    ----------
    codes : ndarray of int
        Group code of every row, ``0 .. n_groups - 1``.
    device : torch.device
        Where the index tensors live.
    """

    def __init__(self, codes: np.ndarray, device: torch.device | str = "cpu"):
        codes = np.asarray(codes, dtype=np.int64)
        order = np.argsort(codes, kind="stable")  # rows of a group keep their order
        sizes = np.bincount(codes)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        width = int(sizes.max()) if len(sizes) else 0
        offsets = np.arange(width)
        valid = offsets[None, :] < sizes[:, None]
        rows = np.zeros((len(sizes), width), dtype=np.int64)
        rows[valid] = order[(starts[:, None] + offsets[None, :])[valid]]
        self.sizes = sizes
        self.rows = torch.as_tensor(rows, device=device)
        self._padding = torch.as_tensor(~valid, device=device)

    @property
    def n_groups(self) -> int:
        return len(self.sizes)

    def sample_groups(self, n: int, generator: torch.Generator, pool: Tensor | None = None) -> Tensor:
        """Draw ``n`` group codes, without replacement when there are enough."""
        device = self.rows.device
        n_pool = self.n_groups if pool is None else len(pool)
        if n <= n_pool:
            picked = torch.randperm(n_pool, generator=generator, device=device)[:n]
        else:
            picked = torch.randint(n_pool, (n,), generator=generator, device=device)
        return picked if pool is None else pool[picked]

    def sample_rows(self, groups: Tensor, n_rows: int, generator: torch.Generator, with_mask: bool = False):
        """For each group in ``groups`` (any shape), draw ``n_rows`` distinct rows at random.

        Returns row indices of shape ``groups.shape + (n_rows,)``. With
        ``with_mask``, also whether each index is a real row: a group of
        fewer than ``n_rows`` rows gives all of them, then padding (index 0,
        mask False).
        """
        keys = torch.rand((*groups.shape, self.rows.shape[1]), generator=generator, device=self.rows.device)
        keys = keys.masked_fill(self._padding[groups], 2.0)  # padding sorts last
        picked = keys.argsort(dim=-1)[..., :n_rows]
        rows = self.rows[groups].gather(-1, picked)
        if not with_mask:
            return rows
        return rows, ~self._padding[groups].gather(-1, picked)

    @property
    def valid(self) -> Tensor:
        """Mask of the real (not padding) entries of :attr:`rows`."""
        return ~self._padding

    def sample_group_sets(self, n_sets: int, set_size: int, generator: torch.Generator, pool: Tensor) -> Tensor:
        """Draw ``n_sets`` sets of ``set_size`` distinct groups from ``pool``."""
        keys = torch.rand((n_sets, len(pool)), generator=generator, device=self.rows.device)
        return pool[keys.argsort(dim=1)[:, :set_size]]
