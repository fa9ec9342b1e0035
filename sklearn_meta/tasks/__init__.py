"""Tasks: rows grouped by ``groups`` (or by class), their support/query sizes, and meta-batch samplers."""

from ._builders import Sampling, class_pool, episode_sampling, grouped_sampling
from ._grouping import GroupedRows, describe, encode_groups, validate_groups
from ._samplers import EpisodeSampler, TaskSampler, WholeGroupSampler
from ._splitting import TaskSizes, check_single_rows, holdout, support_sizes, task_sizes

__all__ = [
    "TaskSizes",
    "EpisodeSampler",
    "GroupedRows",
    "Sampling",
    "TaskSampler",
    "WholeGroupSampler",
    "check_single_rows",
    "class_pool",
    "describe",
    "encode_groups",
    "episode_sampling",
    "grouped_sampling",
    "holdout",
    "support_sizes",
    "task_sizes",
    "validate_groups",
]
