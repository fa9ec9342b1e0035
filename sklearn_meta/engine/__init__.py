"""The bilevel engine: the meta-loss and meta-gradient of a batch of tasks, and batch adaptation.

Functions of tensors and dicts of tensors over any head; tasks run together
under :func:`torch.func.vmap`. Nothing here knows about scikit-learn.
"""

from ._batches import GroupBatch, TaskBatch, batch_size, task_weights
from ._evaluate import adapt_one_task, adapt_tasks, moderates, predict_tasks
from ._meta import compiled_meta_loss, evidence_loss, meta_gradient, meta_loss, weighted_mean

__all__ = [
    "GroupBatch",
    "TaskBatch",
    "adapt_one_task",
    "adapt_tasks",
    "batch_size",
    "compiled_meta_loss",
    "evidence_loss",
    "meta_gradient",
    "meta_loss",
    "moderates",
    "predict_tasks",
    "task_weights",
    "weighted_mean",
]
