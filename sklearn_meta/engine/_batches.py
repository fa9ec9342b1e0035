"""What meta-training and evaluation are given: batches of tasks, as tensors with the task first."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["GroupBatch", "TaskBatch", "batch_size", "task_weights"]


class TaskBatch(NamedTuple):
    """Support and query rows of several tasks; the leading dimension is the task.

    Tasks of different sizes (ragged) are padded to one width:
    ``support_mask`` and ``query_mask`` are 1 at a task's real rows and 0 at
    its padding, and every head gives padding rows no weight. Both are
    ``None`` when every task of the collection has the same numbers of
    support and query rows (no padding: the arithmetic is that of equal-size
    tasks, to the last bit).
    """

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor
    support_mask: Tensor | None = None
    query_mask: Tensor | None = None

    @property
    def ragged(self) -> bool:
        """Whether the batch is padded (its tasks have different sizes)."""
        return self.query_mask is not None


class GroupBatch(NamedTuple):
    """Whole groups, padded to one width: ``mask`` is 1 at real rows, 0 at padding (leading dimension: group).

    The batch of ``meta_objective="marginal_likelihood"``: every row of a
    group counts, with no support/query split.
    """

    x: Tensor
    y: Tensor
    mask: Tensor


def task_weights(batch: TaskBatch) -> Tensor | None:
    """Each task's weight in the meta-loss of a ragged batch: its number of query rows; ``None``: equal.

    The meta-loss is then the mean loss per query row of the batch, so that
    a row counts the same in a small group and in a large one, as in a
    mixed model's likelihood (chosen from measurements: see the user
    guide's section on small groups). Equal-size batches weigh their tasks
    equally, which is the same thing.
    """
    return None if batch.query_mask is None else batch.query_mask.sum(dim=1)


def batch_size(batch: TaskBatch | GroupBatch) -> int:
    """What a batch's loss is a mean over: its tasks, or the real rows of its whole groups or ragged tasks.

    The history's ``train_batch_size``, and the weight of a rank's loss and
    gradients in a distributed update, so that ranks holding groups of
    different sizes average to the single-process loss.
    """
    if isinstance(batch, GroupBatch):
        return int(batch.mask.sum().item())
    weights = task_weights(batch)
    return len(batch.x_support) if weights is None else int(weights.sum().item())
