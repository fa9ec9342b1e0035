"""Grouping rows into tasks and sampling support/query splits."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sklearn_meta.exceptions import SmallTaskWarning
from sklearn_meta.tasks import (
    EpisodeSampler,
    GroupedRows,
    TaskSampler,
    WholeGroupSampler,
    encode_groups,
    grouped_sampling,
)


def test_encode_groups_keeps_order_of_first_appearance():
    codes, labels = encode_groups(np.array(["b", "a", "b", "c", "a"]))
    assert codes.tolist() == [0, 1, 0, 2, 1]
    assert labels.tolist() == ["b", "a", "c"]


def test_encode_groups_accepts_unorderable_mixed_labels():
    groups = np.empty(4, dtype=object)
    groups[:] = [1, "x", 1, ("t", 2)]
    codes, labels = encode_groups(groups)
    assert codes.tolist() == [0, 1, 0, 2]
    assert list(labels) == [1, "x", ("t", 2)]


def _generator(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_sampled_rows_are_distinct_rows_of_their_own_group():
    codes = np.array([2, 0, 1, 0, 2, 1, 0, 2, 2, 1])  # group sizes 3, 3, 4
    rows = GroupedRows(codes)
    groups = torch.tensor([0, 2, 2, 1])
    picked = rows.sample_rows(groups, 3, _generator())
    assert picked.shape == (4, 3)
    for g, r in zip(groups.tolist(), picked.tolist()):
        assert len(set(r)) == 3
        assert all(codes[i] == g for i in r)


def test_sampling_is_reproducible_from_the_generator_seed():
    rows = GroupedRows(np.repeat(np.arange(20), 7))
    draw = [rows.sample_rows(rows.sample_groups(5, _generator(s)), 4, _generator(s)) for s in (1, 1, 2)]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], draw[2])


def test_task_sampler_splits_each_task_into_disjoint_support_and_query():
    codes = np.repeat(np.arange(6), 9)
    X = torch.arange(len(codes), dtype=torch.float32)[:, None]  # X holds the row index
    y = torch.tensor(codes, dtype=torch.float32)[:, None]  # y holds the task code
    sampler = TaskSampler(X, y, GroupedRows(codes), torch.arange(6), n_support=4, n_query=5)
    batch = sampler.sample(6, _generator())
    assert batch.x_support.shape == (6, 4, 1) and batch.x_query.shape == (6, 5, 1)
    for t in range(6):
        support = set(batch.x_support[t, :, 0].tolist())
        query = set(batch.x_query[t, :, 0].tolist())
        assert not support & query
        assert len(set(batch.y_support[t, :, 0].tolist()) | set(batch.y_query[t, :, 0].tolist())) == 1
    # all six tasks drawn without replacement
    assert sorted(batch.y_support[:, 0, 0].tolist()) == list(range(6))


def test_task_sampler_draws_only_from_its_pool():
    codes = np.repeat(np.arange(10), 5)
    y = torch.tensor(codes, dtype=torch.float32)[:, None]
    sampler = TaskSampler(y, y, GroupedRows(codes), torch.tensor([3, 7]), n_support=2, n_query=2)
    batch = sampler.sample(8, _generator())  # more tasks than the pool: with replacement
    assert set(batch.y_query.unique().tolist()) <= {3.0, 7.0}


def test_episodes_relabel_distinct_classes_locally():
    labels = np.repeat(np.arange(5), 8)
    X = torch.tensor(labels, dtype=torch.float32)[:, None]  # X reveals the true class
    sampler = EpisodeSampler(X, GroupedRows(labels), torch.arange(5), n_way=3, k_shot=2, n_query=4)
    batch = sampler.sample(10, _generator())
    assert batch.x_support.shape == (10, 6, 1) and batch.x_query.shape == (10, 12, 1)
    assert batch.y_support[0].tolist() == [0, 0, 1, 1, 2, 2]
    seen_orders = set()
    for t in range(10):
        true_s = batch.x_support[t, :, 0].long()
        true_q = batch.x_query[t, :, 0].long()
        mapping = dict(zip(batch.y_support[t].tolist(), true_s.tolist()))
        assert len(set(mapping.values())) == 3  # three distinct classes
        assert all(mapping[local] == true for local, true in zip(batch.y_query[t].tolist(), true_q.tolist()))
        seen_orders.add(tuple(mapping[i] for i in range(3)))
    assert len(seen_orders) > 1  # no class owns an output unit


def test_whole_group_sampler_gives_every_row_of_a_small_group_once_and_masks_the_padding():
    codes = np.repeat(np.arange(5), [1, 3, 6, 2, 9])
    X = torch.arange(len(codes), dtype=torch.float32)[:, None]  # X holds the row index
    sampler = WholeGroupSampler(X, X, GroupedRows(codes), torch.arange(5), width=6)
    batch = sampler.fixed(_generator())
    assert batch.x.shape == (5, 6, 1) and batch.mask.shape == (5, 6)
    assert batch.mask.sum(1).tolist() == [1, 3, 6, 2, 6]  # the 9-row group: a random 6 of its rows
    for g in range(5):
        real = batch.x[g, batch.mask[g] == 1, 0].long().tolist()
        assert len(set(real)) == len(real) and all(codes[i] == g for i in real)
        if g < 4:  # groups of at most `width` rows: all of them
            assert sorted(real) == np.flatnonzero(codes == g).tolist()


def test_whole_group_sampler_draws_distinct_groups_and_no_more_than_its_pool_holds():
    codes = np.repeat(np.arange(10), 4)
    y = torch.tensor(codes, dtype=torch.float32)[:, None]
    sampler = WholeGroupSampler(y, y, GroupedRows(codes), torch.tensor([2, 5, 7]), width=4)
    assert sorted(sampler.sample(2, _generator()).y[:, 0, 0].tolist()) in ([2, 5], [2, 7], [5, 7])
    assert sorted(sampler.sample(8, _generator()).y[:, 0, 0].tolist()) == [2, 5, 7]


# --- tasks of different sizes ---------------------------------------------------------------------------------

EQUAL_SIZES = Path(__file__).parent / "data" / "equal_sizes"


def test_tasks_of_equal_sizes_train_exactly_as_before_ragged_batches():
    # tests/data/equal_sizes/reference.npz was written by the code before padded, masked batches
    # (make_reference.py, at commit 9e50a5b): equal-size tasks take no masks, so the arithmetic is the same.
    # It is compared to float32 rounding, not bit for bit: float32 kernels are chosen by the CPU's
    # instruction set, and on an AVX-512 Xeon the predictions differed from the AVX2 machine's by up to
    # 7.7e-7 (the loss curves by 4e-7).
    spec = importlib.util.spec_from_file_location("make_reference", EQUAL_SIZES / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = np.load(EQUAL_SIZES / "reference.npz")
    got = module.trajectories()
    assert sorted(got) == sorted(expected.files)
    for name in expected.files:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_ragged_tasks_take_their_own_support_and_query_rows():
    # tasks of 2, 3, 7 and 30 rows, n_support=5, n_query=None: 1+1, 2+1, 5+2 and 5+25 rows
    sizes = [2, 3, 7, 30]
    codes = np.repeat(np.arange(4), sizes)
    X = torch.arange(len(codes), dtype=torch.float32)[:, None]
    y = torch.as_tensor(codes, dtype=torch.float32)[:, None]
    sampling = grouped_sampling(X, y, codes, torch.Generator().manual_seed(0), n_support=5, n_query=None)
    assert (sampling.n_support, sampling.n_query) == (5, 25) and sampling.sampler.ragged
    batch = sampling.sampler.sample(4, torch.Generator().manual_seed(1))
    for t in range(4):
        task = int(batch.y_support[t, 0, 0])
        s, q = batch.support_mask[t].bool(), batch.query_mask[t].bool()
        support, query = batch.x_support[t, s, 0].tolist(), batch.x_query[t, q, 0].tolist()
        n = sizes[task]
        assert len(support) == min(5, n - 1) and len(query) == n - len(support)
        # every real row of the task exactly once, and no other task's row
        assert sorted(support + query) == np.flatnonzero(codes == task).tolist()
        assert (batch.y_support[t, s] == task).all() and (batch.y_query[t, q] == task).all()
    capped = grouped_sampling(X, y, codes, torch.Generator().manual_seed(0), n_support=5, n_query=3)
    assert capped.n_query == 3 and capped.sampler.sample(4, torch.Generator()).query_mask.sum(1).max() == 3


def test_one_row_tasks_are_left_out_with_a_warning_and_an_error_only_when_none_is_left():
    X = torch.zeros(6, 1)
    with pytest.warns(SmallTaskWarning, match=r"1 of 3 tasks have a single row.*task ids 'b'"):
        sampling = grouped_sampling(X, X, np.array(list("aaabcc")), torch.Generator(), n_support=2, n_query=None)
    assert sorted(sampling.sampler.pool.tolist()) == [0, 2]
    with pytest.raises(ValueError, match="every task has a single row"):
        grouped_sampling(X[:3], X[:3], np.array([0, 1, 2]), torch.Generator(), n_support=2, n_query=None)
