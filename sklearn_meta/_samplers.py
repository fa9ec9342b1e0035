"""Building the meta-training sampler and validation batch of an estimator from its arguments."""

from __future__ import annotations

import numpy as np
import torch

from ._splitting import holdout, split_sizes, validate_groups
from ._tasks import EpisodeSampler, GroupedRows, TaskSampler, WholeGroupSampler, encode_groups
from ._warnings import warn
from .exceptions import SingleTaskWarning

__all__ = ["class_pool", "episode_sampler", "grouped_sampler"]


def grouped_sampler(estimator, X_t, y_t, groups, generator):
    """Tasks given by ``groups``: the sampler, a fixed validation batch or ``None``, n_support, n_query."""
    device = X_t.device
    n_samples = X_t.shape[0]
    if groups is None:
        codes, labels = np.zeros(n_samples, dtype=np.int64), np.array([0])
    else:
        codes, labels = encode_groups(validate_groups(groups, X_t))
    whole = getattr(estimator, "meta_objective", "episodes") == "marginal_likelihood"
    if len(labels) == 1:
        consequence = (
            "; one group's marginal likelihood does not identify the prior mean, so predict after partial_adapt"
            if whole
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
    if whole:
        return _whole_group_sampler(estimator, X_t, y_t, tasks, generator)
    n_support, n_query = split_sizes(estimator.n_support, estimator.n_query, tasks.sizes, labels)
    pool = torch.arange(tasks.n_groups, device=device)
    validation_batch = None
    if estimator.early_stopping:
        valid, pool = holdout(pool, estimator.validation_fraction, 1, generator, "tasks")
        validation_batch = TaskSampler(X_t, y_t, tasks, valid, n_support, n_query).fixed(generator)
    return TaskSampler(X_t, y_t, tasks, pool, n_support, n_query), validation_batch, n_support, n_query


def _whole_group_sampler(estimator, X_t, y_t, tasks: GroupedRows, generator):
    """Whole groups for the marginal likelihood: no support/query split, so every group of any size counts.

    ``n_query`` caps the rows of a group in one update (a random subset of a
    larger group); ``None`` takes every row of the largest group. Reported
    as 0 support rows and that many query rows.
    """
    largest = int(tasks.sizes.max())
    width = largest if estimator.n_query is None else min(int(estimator.n_query), largest)
    pool = torch.arange(tasks.n_groups, device=X_t.device)
    validation_batch = None
    if estimator.early_stopping:
        valid, pool = holdout(pool, estimator.validation_fraction, 1, generator, "tasks")
        validation_batch = WholeGroupSampler(X_t, y_t, tasks, valid, width).fixed(generator)
    return WholeGroupSampler(X_t, y_t, tasks, pool, width), validation_batch, 0, width


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


def episode_sampler(estimator, X_t, y_encoded, n_query: int, generator):
    """N-way K-shot episodes from the classes of ``y``: the sampler, validation batch, n_support, n_query."""
    n_way, k_shot = estimator.n_way, estimator.k_shot
    classes, pool = class_pool(y_encoded, n_way, k_shot, n_query, X_t.device, "fit()")
    validation_batch = None
    if estimator.early_stopping:
        valid, pool = holdout(pool, estimator.validation_fraction, n_way, generator, "classes")
        valid_sampler = EpisodeSampler(X_t, classes, valid, n_way, k_shot, n_query)
        validation_batch = valid_sampler.sample(max(estimator.meta_batch_size, 32), generator)
    sampler = EpisodeSampler(X_t, classes, pool, n_way, k_shot, n_query)
    return sampler, validation_batch, n_way * k_shot, n_way * n_query
