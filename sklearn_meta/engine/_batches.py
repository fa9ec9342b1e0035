"""What meta-training and evaluation are given: batches of tasks, as tensors with the task first."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["GroupBatch", "TaskBatch", "batch_size"]


class TaskBatch(NamedTuple):
    """Support and query rows of several tasks; the leading dimension is the task."""

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor


class GroupBatch(NamedTuple):
    """Whole groups, padded to one width: ``mask`` is 1 at real rows, 0 at padding (leading dimension: group).

    The batch of ``meta_objective="marginal_likelihood"``: every row of a
    group counts, with no support/query split.
    """

    x: Tensor
    y: Tensor
    mask: Tensor


def batch_size(batch: TaskBatch | GroupBatch) -> int:
    """What a batch's loss is a mean over: its tasks, or the real rows of its whole groups.

    The history's ``train_batch_size``, and the weight of a rank's loss and
    gradients in a distributed update, so that ranks holding groups of
    different sizes average to the single-process loss.
    """
    if isinstance(batch, GroupBatch):
        return int(batch.mask.sum().item())
    return len(batch.x_support)
