"""The meta-training sampler and validation batch, built from the training rows and plain settings."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from .._warnings import warn
from ..exceptions import SingleTaskWarning
from ._grouping import GroupedRows, encode_groups, validate_groups
from ._samplers import EpisodeSampler, TaskSampler, WholeGroupSampler
from ._splitting import holdout, task_sizes

__all__ = ["Sampling", "class_pool", "episode_sampling", "grouped_sampling"]


class Sampling(NamedTuple):
    """How meta-training draws its batches: the sampler, a fixed validation batch, and the batch shapes.

    ``n_support`` and ``n_query`` are the most support and query rows of a
    task, the widths of a batch (whole groups: 0 and the rows per group in
    one update).
    """

    sampler: Any
    validation_batch: Any
    n_support: int
    n_query: int


def grouped_sampling(
    X_t: torch.Tensor,
    y_t: torch.Tensor,
    groups,
    generator: torch.Generator,
    *,
    n_support,
    n_query,
    whole_groups: bool = False,
    validation_fraction: float | None = None,
) -> Sampling:
    """Tasks given by ``groups`` (all rows one task when ``None``, with a warning).

    ``whole_groups``: every group whole, for the marginal likelihood;
    otherwise random support/query splits: each task adapts on
    ``min(n_support, its rows - 1)`` rows and predicts the others (up to
    ``n_query``); see :func:`~sklearn_meta.tasks.task_sizes`.
    ``validation_fraction``: hold out that fraction of the tasks for a fixed
    validation batch (early stopping), or ``None``.
    """
    device = X_t.device
    n_samples = X_t.shape[0]
    if groups is None:
        codes, labels = np.zeros(n_samples, dtype=np.int64), np.array([0])
    else:
        codes, labels = encode_groups(validate_groups(groups, X_t))
    if len(labels) == 1:
        consequence = (
            "; one group's marginal likelihood does not identify the prior mean, so predict after partial_adapt"
            if whole_groups
            else " and n_support is capped at half of them"
        )
        warn(
            f"fit() received {'no groups' if groups is None else 'a single task'}: all {n_samples} rows "
            f"are treated as one task{consequence}. Pass groups=<task id of each row>. Inside GridSearchCV, "
            "Pipeline or cross_validate, enable metadata routing with "
            "sklearn.set_config(enable_metadata_routing=True), or scikit-learn drops groups.",
            SingleTaskWarning,
        )
    tasks = GroupedRows(codes, device)
    if whole_groups:
        return _whole_groups(X_t, y_t, tasks, generator, n_query, validation_fraction)
    sizes = task_sizes(n_support, n_query, tasks.sizes, labels)
    n_support, n_query = sizes.n_support, sizes.n_query
    pool = torch.as_tensor(np.flatnonzero(sizes.usable), device=device)
    validation_batch = None
    if validation_fraction is not None:
        valid, pool = holdout(pool, validation_fraction, 1, generator, "tasks")
        validation_batch = TaskSampler(X_t, y_t, tasks, valid, n_support, n_query, sizes).fixed(generator)
    sampler = TaskSampler(X_t, y_t, tasks, pool, n_support, n_query, sizes)
    return Sampling(sampler, validation_batch, n_support, n_query)


def _whole_groups(X_t, y_t, tasks: GroupedRows, generator, n_query, validation_fraction) -> Sampling:
    """Whole groups for the marginal likelihood: no support/query split, so every group of any size counts.

    ``n_query`` caps the rows of a group in one update (a random subset of a
    larger group); ``None`` takes every row of the largest group. Reported
    as 0 support rows and that many query rows.
    """
    largest = int(tasks.sizes.max())
    width = largest if n_query is None else min(int(n_query), largest)
    pool = torch.arange(tasks.n_groups, device=X_t.device)
    validation_batch = None
    if validation_fraction is not None:
        valid, pool = holdout(pool, validation_fraction, 1, generator, "tasks")
        validation_batch = WholeGroupSampler(X_t, y_t, tasks, valid, width).fixed(generator)
    return Sampling(WholeGroupSampler(X_t, y_t, tasks, pool, width), validation_batch, 0, width)


def class_pool(codes, n_way: int, k_shot: int, n_query: int, device, where: str):
    """Rows grouped by class for N-way K-shot episodes, checked to be large enough."""
    classes = GroupedRows(codes, device)
    need = k_shot + n_query
    small = np.flatnonzero(classes.sizes < need)
    if len(small):
        raise ValueError(
            f"{where}: every class needs k_shot + n_query = {need} rows for episodes; "
            f"{len(small)} class(es) have fewer. Lower k_shot or n_query."
        )
    if classes.n_groups < n_way:
        raise ValueError(f"{where}: {n_way}-way episodes need at least {n_way} classes; y has {classes.n_groups}.")
    return classes, torch.arange(classes.n_groups, device=device)


def episode_sampling(
    X_t: torch.Tensor,
    codes: np.ndarray,
    generator: torch.Generator,
    *,
    n_way: int,
    k_shot: int,
    n_query: int,
    validation_fraction: float | None = None,
    n_validation_episodes: int = 32,
) -> Sampling:
    """N-way K-shot episodes from the classes ``codes`` of the rows (``n_query`` query rows per class).

    ``validation_fraction``: hold out that fraction of the classes, from which
    ``n_validation_episodes`` fixed validation episodes are drawn.
    """
    classes, pool = class_pool(codes, n_way, k_shot, n_query, X_t.device, "fit()")
    validation_batch = None
    if validation_fraction is not None:
        valid, pool = holdout(pool, validation_fraction, n_way, generator, "classes")
        valid_sampler = EpisodeSampler(X_t, classes, valid, n_way, k_shot, n_query)
        validation_batch = valid_sampler.sample(n_validation_episodes, generator)
    sampler = EpisodeSampler(X_t, classes, pool, n_way, k_shot, n_query)
    return Sampling(sampler, validation_batch, n_way * k_shot, n_way * n_query)
