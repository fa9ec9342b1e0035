"""Task collections for examples, tests and benchmarks."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["make_classification_tasks", "make_sinusoid_tasks"]


def make_sinusoid_tasks(
    n_tasks: int = 100,
    n_samples_per_task: int = 20,
    *,
    amplitude_range: tuple[float, float] = (0.1, 5.0),
    phase_range: tuple[float, float] = (0.0, np.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
    noise: float = 0.0,
    return_params: bool = False,
    random_state=None,
):
    """Sinusoid regression tasks, the benchmark of the MAML paper.

    Task ``t`` is ``y = A_t sin(x - phi_t)`` with ``A_t`` uniform in
    ``amplitude_range``, ``phi_t`` uniform in ``phase_range`` and ``x``
    uniform in ``x_range`` (Finn et al., 2017).

    Parameters
    ----------
    n_tasks : int, default=100
        Number of tasks.
    n_samples_per_task : int, default=20
        Rows per task.
    amplitude_range, phase_range, x_range : tuple of float
        Ranges of the uniform distributions.
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to ``y``.
    return_params : bool, default=False
        Also return each task's amplitude and phase.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_tasks * n_samples_per_task, 1)
    y : ndarray of shape (n_tasks * n_samples_per_task,)
    groups : ndarray of shape (n_tasks * n_samples_per_task,)
        Task id of each row, ``0 .. n_tasks - 1``; rows of a task are contiguous.
    amplitude, phase : ndarray of shape (n_tasks,)
        Only with ``return_params=True``.

    Examples
    --------
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=3, n_samples_per_task=5, random_state=0)
    >>> X.shape, y.shape, groups.tolist()
    ((15, 1), (15,), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    """
    rng = check_random_state(random_state)
    amplitude = rng.uniform(*amplitude_range, size=n_tasks)
    phase = rng.uniform(*phase_range, size=n_tasks)
    x = rng.uniform(*x_range, size=(n_tasks, n_samples_per_task))
    y = amplitude[:, None] * np.sin(x - phase[:, None])
    if noise:
        y = y + rng.normal(scale=noise, size=y.shape)
    groups = np.repeat(np.arange(n_tasks), n_samples_per_task)
    out = (x.reshape(-1, 1), y.ravel(), groups)
    return out + (amplitude, phase) if return_params else out


def make_classification_tasks(
    n_tasks: int = 100,
    n_samples_per_task: int = 40,
    *,
    n_classes: int = 3,
    n_features: int = 2,
    class_sep: float = 2.0,
    task_shift: float = 3.0,
    random_state=None,
):
    """Few-shot classification tasks whose labels mean the same thing everywhere.

    All tasks share ``n_classes`` Gaussian classes, but each task moves the
    whole input space by its own random offset (a site, a sensor, a
    patient): a model pooled over tasks blurs the classes together, while a
    few labelled rows of a task tell where its classes lie. The class centres
    depend only on ``n_classes``, ``n_features`` and ``class_sep``, not on
    ``random_state``, so calls with different seeds give new tasks of the
    same classes (a training and a held-out collection).

    Parameters
    ----------
    n_tasks : int, default=100
        Number of tasks.
    n_samples_per_task : int, default=40
        Rows per task.
    n_classes : int, default=3
        Classes, shared by all tasks.
    n_features : int, default=2
        Input dimensions.
    class_sep : float, default=2.0
        Scale of the class centres (unit-variance classes around them).
    task_shift : float, default=3.0
        Standard deviation of each task's offset.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_tasks * n_samples_per_task, n_features)
    y : ndarray of shape (n_tasks * n_samples_per_task,)
        Class labels ``0 .. n_classes - 1``.
    groups : ndarray of shape (n_tasks * n_samples_per_task,)
        Task id of each row.

    Examples
    --------
    >>> from sklearn_meta.datasets import make_classification_tasks
    >>> X, y, groups = make_classification_tasks(n_tasks=4, n_samples_per_task=10, random_state=0)
    >>> X.shape, sorted(set(y.tolist())), len(set(groups.tolist()))
    ((40, 2), [0, 1, 2], 4)
    """
    centres = np.random.RandomState(0).normal(scale=class_sep, size=(n_classes, n_features))
    rng = check_random_state(random_state)
    offsets = rng.normal(scale=task_shift, size=(n_tasks, n_features))
    y = rng.randint(n_classes, size=(n_tasks, n_samples_per_task))
    X = centres[y] + offsets[:, None, :] + rng.normal(size=(n_tasks, n_samples_per_task, n_features))
    groups = np.repeat(np.arange(n_tasks), n_samples_per_task)
    return X.reshape(-1, n_features), y.ravel(), groups
