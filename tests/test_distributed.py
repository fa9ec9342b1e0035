"""Meta-training on torch.distributed: two ranks launched with ``torchrun`` (gloo, localhost).

One launch runs every scenario of ``_distributed_worker`` on both ranks
(about 15 s on 2 cores); the tests read what each rank reported.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from sklearn_meta.training import Ranks

from ._distributed_worker import EQUIVALENT, MARGINAL_LIKELIHOOD, data, estimator, ragged

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

WORKER = Path(__file__).with_name("_distributed_worker.py")


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command = [*launcher, str(WORKER), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return out, reports


def _params(out, name, rank):
    return torch.load(out / f"{name}_rank{rank}.pt")


def _assert_same(a, b, **tolerance):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **tolerance, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("name", list(EQUIVALENT))
def test_two_ranks_equal_one_process_on_the_whole_meta_batch(launched, name):
    # Each rank computes its slice of the meta-batch; the averaged step is the single-process one.
    out, reports = launched
    whole = EQUIVALENT[name].get("meta_batch_size", 8)
    for rank, share in enumerate([(whole + 1) // 2, whole // 2]):
        assert reports[rank][name]["error"] is None
        assert reports[rank][name]["n_iter"] == 6
        assert reports[rank][name]["shard_sizes"] == [share] * 6  # each rank computed only its slice
        assert reports[rank][name]["batch_sizes"] == [whole] * 6  # and the update averaged them all
    X, y, groups = data()
    single = estimator(**EQUIVALENT[name]).fit(X, y, groups=groups)
    for rank in (0, 1):
        _assert_same(_params(out, name, rank), single.module_.state_dict(), rtol=1e-4, atol=1e-5)


def test_two_ranks_with_groups_of_different_sizes_equal_one_process_on_the_marginal_likelihood(launched):
    # The ranks' losses are per-row means over different numbers of rows: weighted by rows, their
    # average is the single-process loss over all 7 groups (weighted by groups it would not be).
    out, reports = launched
    name = "marginal_likelihood_ragged"
    single = estimator(**MARGINAL_LIKELIHOOD).fit(*ragged()[:2], groups=ragged()[2])
    rows = [row["batches"][0]["train_batch_size"] for row in single.history_]
    assert len(set(rows)) > 1  # the groups drawn differ in size from update to update
    for rank, share in enumerate([4, 3]):
        assert reports[rank][name]["error"] is None
        _assert_same(_params(out, name, rank), single.module_.state_dict(), rtol=1e-4, atol=1e-5)
        assert reports[rank][name]["shard_sizes"] == [share] * 6
        assert reports[rank][name]["batch_sizes"] == rows  # every real row of the update, once


def test_fewer_whole_groups_than_ranks_is_a_clear_error_on_every_rank(launched):
    out, reports = launched
    for rank in (0, 1):
        error = reports[rank]["marginal_likelihood_one_group"]["error"]
        assert error is not None and "too few to share among 2 processes" in error["message"], error


@pytest.mark.parametrize("name", ["own_tasks", "own_tasks_early_stopping"])
def test_ranks_holding_different_tasks_end_identical(launched, name):
    # No random_state and different data per rank: rank 0's seeds and initial parameters win,
    # and early stopping (on each rank's own validation tasks, averaged) stops both together.
    out, reports = launched
    assert reports[0][name]["n_iter"] == reports[1][name]["n_iter"] > 0
    _assert_same(_params(out, name, 0), _params(out, name, 1), rtol=0, atol=0)
    if name == "own_tasks_early_stopping":
        assert reports[0][name]["n_iter"] < 30


def test_non_finite_loss_on_one_rank_stops_both_with_the_warning(launched):
    out, reports = launched
    for rank in (0, 1):
        report = reports[rank]["non_finite_on_rank_1"]
        assert report["n_iter"] == 2  # the third update's loss was NaN on rank 1
        assert any(w.startswith("NonFiniteLossWarning") for w in report["warnings"]), report
    _assert_same(_params(out, "non_finite_on_rank_1", 0), _params(out, "non_finite_on_rank_1", 1), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["stop_on_rank_1", "ctrl_c_on_rank_1"])
def test_stopping_one_rank_stops_all_at_the_same_update(launched, name):
    # A callback raising KeyboardInterrupt, or a real SIGINT, on rank 1 after update 2.
    out, reports = launched
    for rank in (0, 1):
        assert reports[rank][name]["error"] is None
        assert reports[rank][name]["n_iter"] == 2
    _assert_same(_params(out, name, 0), _params(out, name, 1), rtol=0, atol=0)


def test_an_error_on_one_rank_fails_every_rank_without_hanging(launched):
    _, reports = launched
    failed = {"type": "RuntimeError", "message": "a callback failed on this rank"}
    assert reports[1]["error_on_rank_1"]["error"] == failed
    assert reports[0]["error_on_rank_1"]["error"]["type"] == "RankFailedError"
    assert not reports[0]["error_on_rank_1"]["fitted"] and not reports[1]["error_on_rank_1"]["fitted"]


def test_bad_input_on_one_rank_fails_every_rank_with_its_message(launched):
    _, reports = launched
    assert reports[1]["bad_input_on_rank_1"]["error"]["type"] == "ValueError"
    rank_0 = reports[0]["bad_input_on_rank_1"]["error"]
    assert rank_0["type"] == "RankFailedError" and "rank 1" in rank_0["message"] and "NaN" in rank_0["message"]


def test_ranks_with_different_features_refuse_to_train(launched):
    _, reports = launched
    for rank in (0, 1):
        error = reports[rank]["different_features"]["error"]
        assert error["type"] == "ValueError" and "prepared different models" in error["message"]


def test_destroy_process_group_after_fit_ends_the_groups_threads(launched):
    """After fits, destroy_process_group leaves no gloo thread behind.

    A group kept alive past it (torch.distributed.nn.functional, imported
    lazily during fit, bound it as a default argument) keeps its gloo threads
    until interpreter exit, where their teardown aborted about one process in 60.
    """
    out, _ = launched
    for rank in (0, 1):
        threads = json.loads((out / f"rank{rank}_teardown.json").read_text())["threads"]
        if threads is None:
            pytest.skip("this platform does not list a process's threads in /proc")
        assert not [name for name in threads if "gloo" in name], threads


def test_outside_a_process_group_fit_is_a_single_process_fit():
    assert not dist.is_initialized()
    assert Ranks.current() is None


@pytest.mark.parametrize(("n", "size"), [(25, 2), (7, 2), (8, 3), (3, 3)])
def test_shards_cover_the_meta_batch_once(n, size, monkeypatch):
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: size)
    slices = []
    for rank in range(size):
        ranks = Ranks()
        ranks.rank = rank
        slices.append(ranks.bounds(n))
    covered = [i for start, stop in slices for i in range(start, stop)]
    assert covered == list(range(n))
    assert max(stop - start for start, stop in slices) - min(stop - start for start, stop in slices) <= 1
