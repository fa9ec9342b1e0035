"""Tasks as index tensors: grouping rows and sampling support/query splits.

Rows stay in one tensor on the target device; tasks (or, in episodic mode,
classes) are a padded matrix of row indices, and every sample is drawn with
tensor operations from a seeded :class:`torch.Generator`, so no numpy round
trip and no Python loop over tasks happens during training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._engine import GroupBatch, TaskBatch

__all__ = ["EpisodeSampler", "GroupedRows", "TaskSampler", "WholeGroupSampler", "encode_groups"]


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


class _PoolSampler:
    """Meta-batches drawn from a pool of row groups (tasks); subclasses turn the drawn groups into a batch.

    Parameters
    ----------
    X, y : Tensor
        All training rows, on the target device.
    tasks : GroupedRows
        Rows of each task.
    pool : Tensor
        Codes of the tasks to draw from (the others are held out).
    """

    def __init__(self, X, y, tasks: GroupedRows, pool: Tensor):
        self.X, self.y, self.tasks, self.pool = X, y, tasks, pool

    def _batch(self, groups: Tensor, generator: torch.Generator):
        raise NotImplementedError

    def tasks_per_batch(self, n_tasks: int) -> int:
        """How many tasks :meth:`sample` gives when asked for ``n_tasks``."""
        return n_tasks

    def sample(self, n_tasks: int, generator: torch.Generator):
        """A meta-batch of ``n_tasks`` tasks of the pool, without replacement when there are enough."""
        return self._batch(self.tasks.sample_groups(n_tasks, generator, self.pool), generator)

    def fixed(self, generator: torch.Generator):
        """Every task of the pool once: a fixed evaluation batch."""
        return self._batch(self.pool, generator)


class TaskSampler(_PoolSampler):
    """Meta-batches of tasks with random support/query splits: ``n_support`` then ``n_query`` rows per task."""

    def __init__(self, X, y, tasks: GroupedRows, pool: Tensor, n_support: int, n_query: int):
        super().__init__(X, y, tasks, pool)
        self.n_support, self.n_query = n_support, n_query

    def _batch(self, groups, generator):
        rows = self.tasks.sample_rows(groups, self.n_support + self.n_query, generator)
        s, q = rows[:, : self.n_support], rows[:, self.n_support :]
        return TaskBatch(self.X[s], self.y[s], self.X[q], self.y[q])


class WholeGroupSampler(_PoolSampler):
    """Meta-batches of whole groups, padded and masked: the batches of ``meta_objective="marginal_likelihood"``.

    ``width`` rows per group: every row of a group of at most ``width`` rows
    (then padding), a random ``width`` of a larger one. A meta-batch holds
    distinct groups, all of the pool's when it has fewer than asked for.
    """

    def __init__(self, X, y, tasks: GroupedRows, pool: Tensor, width: int):
        super().__init__(X, y, tasks, pool)
        self.width = width

    def _batch(self, groups, generator) -> GroupBatch:
        rows, real = self.tasks.sample_rows(groups, self.width, generator, with_mask=True)
        return GroupBatch(self.X[rows], self.y[rows], real.to(self.X.dtype))

    def tasks_per_batch(self, n_tasks: int) -> int:
        return min(n_tasks, len(self.pool))

    def sample(self, n_tasks: int, generator: torch.Generator) -> GroupBatch:
        return super().sample(self.tasks_per_batch(n_tasks), generator)


class EpisodeSampler:
    """N-way K-shot episodes drawn from a pool of classes, with task-local labels.

    Labels of an episode are ``0 .. n_way - 1`` in the random order its
    classes were drawn, so no class keeps a fixed output unit.
    """

    def __init__(self, X, classes: GroupedRows, pool: Tensor, n_way: int, k_shot: int, n_query: int):
        self.X, self.classes, self.pool = X, classes, pool
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query

    def tasks_per_batch(self, n_tasks: int) -> int:
        """How many episodes :meth:`sample` gives when asked for ``n_tasks``."""
        return n_tasks

    def sample(self, n_tasks: int, generator: torch.Generator):
        """A batch of ``n_tasks`` episodes."""
        picked = self.classes.sample_group_sets(n_tasks, self.n_way, generator, self.pool)
        rows = self.classes.sample_rows(picked, self.k_shot + self.n_query, generator)
        s = rows[..., : self.k_shot].reshape(n_tasks, -1)
        q = rows[..., self.k_shot :].reshape(n_tasks, -1)
        local = torch.arange(self.n_way, device=rows.device)
        y_s = local.repeat_interleave(self.k_shot).expand(n_tasks, -1)
        y_q = local.repeat_interleave(self.n_query).expand(n_tasks, -1)
        return TaskBatch(self.X[s], y_s, self.X[q], y_q)
