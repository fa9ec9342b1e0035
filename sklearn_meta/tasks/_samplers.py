"""Meta-batches drawn from grouped rows: support/query splits, whole groups, N-way K-shot episodes."""

from __future__ import annotations

import torch
from torch import Tensor

from ..engine import GroupBatch, TaskBatch
from ._grouping import GroupedRows

__all__ = ["EpisodeSampler", "TaskSampler", "WholeGroupSampler"]


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
    """Meta-batches of tasks with random support/query splits: ``n_support`` then ``n_query`` rows per task.

    With ``sizes`` (a :class:`~sklearn_meta.tasks.TaskSizes` of every task)
    and ``sizes.ragged``, each task takes its own number of support and
    query rows and the batch is padded to ``n_support`` and ``n_query``
    rows, with masks; otherwise every task takes ``n_support`` and
    ``n_query`` rows and the batch has no masks.
    """

    def __init__(self, X, y, tasks: GroupedRows, pool: Tensor, n_support: int, n_query: int, sizes=None):
        super().__init__(X, y, tasks, pool)
        self.n_support, self.n_query = n_support, n_query
        self.ragged = sizes is not None and sizes.ragged
        if self.ragged:
            device = tasks.rows.device
            self._support = torch.as_tensor(sizes.support, device=device)
            self._query = torch.as_tensor(sizes.query, device=device)

    def _batch(self, groups, generator):
        if not self.ragged:
            rows = self.tasks.sample_rows(groups, self.n_support + self.n_query, generator)
            s, q = rows[:, : self.n_support], rows[:, self.n_support :]
            return TaskBatch(self.X[s], self.y[s], self.X[q], self.y[q])
        # every row of each task in random order (real rows first), then its own split of them
        rows = self.tasks.sample_rows(groups, self.tasks.rows.shape[1], generator)
        n_support, n_query = self._support[groups][:, None], self._query[groups][:, None]
        s = rows[:, : self.n_support]
        offsets = torch.arange(self.n_query, device=rows.device)
        q = rows.gather(1, (n_support + offsets).clamp(max=rows.shape[1] - 1))
        dtype = self.X.dtype
        support_mask = (torch.arange(self.n_support, device=rows.device) < n_support).to(dtype)
        query_mask = (offsets < n_query).to(dtype)
        return TaskBatch(self.X[s], self.y[s], self.X[q], self.y[q], support_mask, query_mask)


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
