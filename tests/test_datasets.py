"""Task generators."""

import numpy as np

from sklearn_meta.datasets import make_classification_tasks, make_sinusoid_tasks


def test_sinusoid_tasks_follow_the_maml_ranges():
    X, y, groups, amplitude, phase = make_sinusoid_tasks(50, 8, return_params=True, random_state=0)
    assert X.shape == (400, 1) and np.all((-5 <= X) & (X <= 5))
    assert np.all((0.1 <= amplitude) & (amplitude <= 5)) and np.all((0 <= phase) & (phase <= np.pi))
    np.testing.assert_allclose(y, amplitude[groups] * np.sin(X[:, 0] - phase[groups]))


def test_classification_tasks_from_different_seeds_share_their_classes():
    X0, y0, _ = make_classification_tasks(n_tasks=300, n_samples_per_task=20, task_shift=0, random_state=0)
    X1, y1, _ = make_classification_tasks(n_tasks=300, n_samples_per_task=20, task_shift=0, random_state=1)
    for c in range(3):
        np.testing.assert_allclose(X0[y0 == c].mean(axis=0), X1[y1 == c].mean(axis=0), atol=0.15)
    assert not np.allclose(X0, X1)
