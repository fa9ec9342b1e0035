import numpy as np
import pytest
import torch

from sklearn_meta.datasets import make_classification_tasks, make_sinusoid_tasks

# The test networks are tiny: one intra-op thread avoids OpenMP spin-waits that make
# them many times slower on a busy 2-core machine.
torch.set_num_threads(1)

# Small settings keep every fit well under a second on 2 CPU cores.
FAST = dict(hidden_layer_sizes=(16,), max_iter=10, meta_batch_size=5, random_state=0)


@pytest.fixture
def sinusoids():
    """60 training tasks of 20 rows and 10 held-out tasks."""
    X, y, groups = make_sinusoid_tasks(n_tasks=60, n_samples_per_task=20, random_state=0)
    X_test, y_test, groups_test = make_sinusoid_tasks(n_tasks=10, n_samples_per_task=20, random_state=1)
    return X, y, groups, X_test, y_test, groups_test


@pytest.fixture
def class_tasks():
    X, y, groups = make_classification_tasks(n_tasks=40, n_samples_per_task=30, random_state=0)
    X_test, y_test, groups_test = make_classification_tasks(n_tasks=8, n_samples_per_task=30, random_state=1)
    return X, y, groups, X_test, y_test, groups_test


@pytest.fixture
def digits_pool():
    """An episodic class pool: 8 classes of 30 rows in 5 features."""
    rng = np.random.RandomState(0)
    centres = rng.normal(scale=3, size=(8, 5))
    y = np.repeat(np.arange(8) * 10, 30)  # labels 0, 10, ..., 70
    X = centres[y // 10] + rng.normal(size=(len(y), 5))
    return X, y
