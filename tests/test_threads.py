"""n_threads: the intra-op thread count during fit, and the caller's setting restored after."""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from skorch.callbacks import Callback

from sklearn_meta import MetaRegressor
from sklearn_meta.training import _threads

from .conftest import FAST


class SeenThreads(Callback):
    """Records torch's intra-op thread count at every outer update."""

    def initialize(self):
        self.seen = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.seen.append(torch.get_num_threads())


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _fit(sinusoids, **params):
    X, y, groups, *_ = sinusoids
    seen = SeenThreads()
    MetaRegressor(**{**FAST, "max_iter": 3, **params}, callbacks=[seen]).fit(X, y, groups=groups)
    return seen.seen


def test_auto_uses_one_thread_for_a_small_network_and_restores_the_callers(sinusoids, two_threads):
    assert _fit(sinusoids) == [1, 1, 1]
    assert torch.get_num_threads() == 2


def test_auto_keeps_the_callers_threads_for_large_work(sinusoids, two_threads, monkeypatch):
    monkeypatch.setattr(_threads, "AUTO_THRESHOLD", 0.0)  # every network counts as large
    assert _fit(sinusoids) == [2, 2, 2]


def test_an_int_caps_the_threads_and_none_leaves_them(sinusoids, two_threads):
    assert _fit(sinusoids, n_threads=1) == [1, 1, 1]
    assert _fit(sinusoids, n_threads=None) == [2, 2, 2]
    torch.set_num_threads(1)
    assert _fit(sinusoids, n_threads=4) == [1, 1, 1]  # never more than the caller has
    assert torch.get_num_threads() == 1


def test_a_failed_fit_restores_the_callers_threads(sinusoids, two_threads):
    class Fail(Callback):
        def on_epoch_end(self, net, **kwargs):
            raise RuntimeError("boom")

    X, y, groups, *_ = sinusoids
    with pytest.raises(RuntimeError, match="boom"):
        MetaRegressor(**FAST, callbacks=[Fail()]).fit(X, y, groups=groups)
    assert torch.get_num_threads() == 2


def test_fits_running_at_once_in_threads_take_one_thread_each(sinusoids, two_threads, monkeypatch):
    # Even work that would get all cores alone gets one thread while another fit runs beside it.
    monkeypatch.setattr(_threads, "AUTO_THRESHOLD", 0.0)
    barrier = threading.Barrier(2)

    class Meet(SeenThreads):
        def on_train_begin(self, net, **kwargs):
            barrier.wait(timeout=60)  # both fits are inside fit before either trains

    X, y, groups, *_ = sinusoids

    def fit(seed):
        torch.set_num_threads(2)  # each worker thread starts with the caller's two threads
        seen = Meet()
        MetaRegressor(**{**FAST, "max_iter": 3, "random_state": seed}, callbacks=[seen]).fit(X, y, groups=groups)
        return seen.seen, torch.get_num_threads()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(fit, [0, 1]))
    assert any(seen == [1, 1, 1] for seen, _ in results)  # the later of the two always sees the other
    assert all(after == 2 for _, after in results)  # each thread's own setting restored
    assert torch.get_num_threads() == 2


def test_invalid_n_threads_is_refused(sinusoids):
    X, y, groups, *_ = sinusoids
    for bad in (0, "all", 1.5):
        with pytest.raises(ValueError, match="n_threads"):
            MetaRegressor(**FAST, n_threads=bad).fit(X, y, groups=groups)


def test_forward_flops_counts_the_network_and_scales_to_the_rows():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    flops = _threads.forward_flops(net, torch.zeros(10, 4), 10)
    assert flops == 2 * 10 * (4 * 8 + 8 * 1)
    assert _threads.forward_flops(net, torch.zeros(10, 4), 100) == 10 * flops


def test_joblib_workers_of_a_search_keep_one_thread(sinusoids, routing_on):
    # GridSearchCV(n_jobs=2): joblib's worker processes limit their threads (one each on 2 cores), and
    # fit never raises them, even when asked for more.
    from sklearn.model_selection import GroupKFold, cross_validate

    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**{**FAST, "max_iter": 2}, n_threads=4, callbacks=[SeenThreads()])
    results = cross_validate(est, X, y, params={"groups": groups}, cv=GroupKFold(2), n_jobs=2, return_estimator=True)
    limit = max(1, (os.cpu_count() or 1) // 2)  # what joblib gives each of 2 workers
    for fitted in results["estimator"]:
        assert fitted.callbacks[0].seen == [limit, limit]


@pytest.fixture
def routing_on():
    import sklearn

    with sklearn.config_context(enable_metadata_routing=True):
        yield


class RecordingMLP(torch.nn.Module):
    """A small body that records torch's thread count at every forward pass."""

    seen: list = []

    def __init__(self, n_features_in):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(n_features_in, 8), torch.nn.ReLU())

    def forward(self, x):
        RecordingMLP.seen.append(torch.get_num_threads())
        return self.layers(x)


@pytest.mark.parametrize("threshold", [_threads.AUTO_THRESHOLD, 0.0])
def test_adaptation_and_prediction_follow_the_policy_too(sinusoids, two_threads, monkeypatch, threshold):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**{**FAST, "max_iter": 2}, module=RecordingMLP, head="gradient").fit(X, y, groups=groups)
    monkeypatch.setattr(_threads, "AUTO_THRESHOLD", threshold)
    RecordingMLP.seen = []
    est.partial_adapt(X_test[:10], y_test[:10]).predict(X_test)
    est.score(X_test, y_test, groups=groups_test)
    assert set(RecordingMLP.seen) == ({1} if threshold else {2})
    assert torch.get_num_threads() == 2
