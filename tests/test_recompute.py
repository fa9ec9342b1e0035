"""Meta-gradients that recompute the inner trajectory in the backward pass equal the stored-graph ones."""

import math
import warnings
import weakref
from typing import NamedTuple

import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError
from torch.utils._pytree import tree_leaves, tree_map

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta.engine import compiled_meta_loss, meta_gradient
from sklearn_meta.heads import FunctionalNetwork, GradientHead
from sklearn_meta.heads._recompute import checkpointed_value_and_grad
from sklearn_meta.optim import adam, chain, clip_by_global_norm, masked, meta_sgd, newton, scale_by_learned_rate, sgd

from .conftest import FAST, float64_problem

N_TASKS = 3


def _mse(output, target):
    return ((output - target) ** 2).mean()


@pytest.fixture
def setup():
    return float64_problem(N_TASKS)


class _CountState(NamedTuple):
    count: torch.Tensor  # an integer leaf: passes through the recomputation undifferentiated


class _DecayingSGD:
    """SGD with a step size lr / (1 + count), its count an integer tensor (a user's own optimizer)."""

    def meta_parameters(self, params):
        return {}

    def init(self, params):
        return _CountState(torch.zeros((), dtype=torch.int64))

    def update(self, updates, state, params, meta):
        lr = 0.2 / (1 + state.count)
        return {k: -lr * u for k, u in updates.items()}, _CountState(state.count + 1)


OPTIMIZERS = {
    "sgd": sgd(0.1),
    "meta-sgd": meta_sgd(0.1),
    "adam": adam(0.1),
    "head-adam": masked(adam(0.1), "2.*"),
    "head-clipped-meta-sgd": chain(clip_by_global_norm(0.05), masked(scale_by_learned_rate(0.1), "2.*")),
    "head-newton": masked(newton(damping=0.5), "2.*"),
    "integer-state": _DecayingSGD(),
}


def _assert_same(got, expected):
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-14)
    assert list(got[1]) == list(expected[1])
    assert len(tree_leaves(got[2])) == len(tree_leaves(expected[2]))
    for a, b in zip(tree_leaves(got[1:]), tree_leaves(expected[1:])):
        assert not a.requires_grad
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("n_steps", [1, 5])
@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_recomputed_meta_gradient_equals_the_stored_graph_one(setup, name, first_order, n_steps):
    net, params, batch = setup
    network = FunctionalNetwork(net, {}, _mse)
    head = GradientHead(inner_optimizer=OPTIMIZERS[name], inner_steps=n_steps, first_order=first_order)
    meta = tree_map(lambda v: v.detach().clone().requires_grad_(True), head.meta_parameters(params))
    expected = meta_gradient(network, head, params, meta, batch)
    got = meta_gradient(network, head.set_params(recompute_inner=True), params, meta, batch)
    _assert_same(got, expected)
    if name.startswith("head") and not first_order:  # the frozen body gets its share through every step
        assert got[1]["0.weight"].abs().sum() > 0


def test_recomputation_keeps_logarithmically_many_carries():
    # carry_0 = 2b, carry_{t+1} = carry_t * a + b, against autograd through the unrolled loop; the steps run
    # and the carries alive at once are counted.
    a, b = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    for n in [0, 1, 2, 3, 7, 20, 33]:
        calls, alive, peak = [0], [0], [0]

        def step(carry, inputs, calls=calls, alive=alive, peak=peak):
            calls[0] += 1
            out = carry * inputs[0] + inputs[1]
            if not torch.is_grad_enabled():  # a carry of the no-graph forward pass: count it while referenced
                alive[0] += 1
                peak[0] = max(peak[0], alive[0])
                weakref.finalize(out, lambda: alive.__setitem__(0, alive[0] - 1))
            return out

        def init(inputs):  # the initial carry depends on the inputs too
            return 2 * inputs[1]

        value, grads = checkpointed_value_and_grad(init, step, lambda carry, inputs: carry * carry, (a, b), n)
        leaves = [a.clone().requires_grad_(True), b.clone().requires_grad_(True)]
        carry = init(leaves)
        for _ in range(n):
            carry = carry * leaves[0] + leaves[1]
        expected = torch.autograd.grad(carry * carry, leaves, allow_unused=True, materialize_grads=True)
        torch.testing.assert_close(value, (carry * carry).detach())
        torch.testing.assert_close(grads, expected)
        log = math.ceil(math.log2(n)) if n > 1 else 1
        assert calls[0] <= n + n * log / 2 + n  # forward, recomputation, one recomputed step per vjp
        assert peak[0] <= log + 2


def test_recompute_cannot_take_a_compiled_loss(setup):
    net, params, batch = setup
    network, head = FunctionalNetwork(net, {}, _mse), GradientHead(inner_optimizer=sgd(0.1), recompute_inner=True)
    with pytest.raises(ValueError, match="recomputes its inner loop computes the meta-gradient eagerly"):
        meta_gradient(network, head, params, {}, batch, loss_fn=compiled_meta_loss(network, head))


@pytest.mark.parametrize(
    "options",
    [
        dict(inner_optimizer="sgd", inner_steps=3),
        dict(inner_optimizer="meta-sgd", inner_steps=2, adapt_params="head"),
        dict(inner_optimizer="adam", inner_steps=2, first_order=True),
    ],
    ids=["maml", "anil-meta-sgd", "first-order-adam"],
)
def test_fit_with_recompute_inner_learns_the_same_parameters(sinusoids, options):
    X, y, groups, *_ = sinusoids
    common = {**FAST, "max_iter": 4}
    plain = MetaRegressor(**common, head=GradientHead(**options), compile=False).fit(X, y, groups=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compile=True is not used, and says nothing
        recomputing = GradientHead(**options, recompute_inner=True)
        recomputed = MetaRegressor(**common, head=recomputing, compile=True).fit(X, y, groups=groups)
    assert recomputed.n_iter_ == plain.n_iter_ == 4
    for (name, got), expected in zip(recomputed.module_.state_dict().items(), plain.module_.state_dict().values()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_classifier_accepts_recompute_inner(class_tasks):
    X, y, groups, *_ = class_tasks
    common = {**FAST, "max_iter": 3}
    plain = MetaClassifier(**common, head=GradientHead(inner_steps=2)).fit(X, y, groups=groups)
    recomputing = GradientHead(inner_steps=2, recompute_inner=True)
    recomputed = MetaClassifier(**common, head=recomputing).fit(X, y, groups=groups)
    for got, expected in zip(recomputed.module_.state_dict().values(), plain.module_.state_dict().values()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_recompute_inner_is_validated(sinusoids):
    X, y, groups, *_ = sinusoids
    with pytest.raises(InvalidParameterError, match="recompute_inner"):
        MetaRegressor(head=GradientHead(recompute_inner="yes")).fit(X, y, groups=groups)
