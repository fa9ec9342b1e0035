import numpy as np
import pytest
import torch

from sklearn_meta.datasets import make_classification_tasks, make_sinusoid_tasks
from sklearn_meta.engine import TaskBatch
from sklearn_meta.training import _compiling

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


def float64_problem(n_tasks: int):
    """A tanh MLP's parameters and a meta-batch of random tasks, in float64 (6 support, 7 query rows).

    tanh and float64: second-order terms are large and gradient comparisons can be tight.
    """
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    shapes = ((6, 2), (6, 1), (7, 2), (7, 1))
    batch = TaskBatch(*(torch.randn(n_tasks, n, d, dtype=torch.float64) for n, d in shapes))
    return net, params, batch


@pytest.fixture(autouse=True)
def _no_compile_markers(tmp_path_factory, monkeypatch):
    """compile="auto" reads markers of earlier compiled fits on this machine: tests never see the user's."""
    folder = tmp_path_factory.mktemp("compile_markers")
    monkeypatch.setattr(_compiling, "_folder", lambda: folder)
