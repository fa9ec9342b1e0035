"""Inner optimizers: composable transforms, the same steps as torch.optim, differentiable, pluggable."""

import io
import pickle
from dataclasses import dataclass
from typing import NamedTuple

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone

from sklearn_meta import MetaRegressor
from sklearn_meta.engine import TaskBatch, meta_gradient
from sklearn_meta.heads import FunctionalNetwork, GradientHead
from sklearn_meta.optim import (
    EmptyState,
    InnerOptimizer,
    ScaleByAdamState,
    adam,
    adapted_names,
    apply_updates,
    chain,
    clip,
    clip_by_global_norm,
    masked,
    meta_sgd,
    resolve_inner_optimizer,
    scale_by_adam,
    scale_by_learned_rate,
    scale_by_learning_rate,
    sgd,
)

from .conftest import FAST


def _run(optimizer, torch_optimizer_cls, **kwargs):
    torch.manual_seed(0)
    target = torch.randn(5)
    ours = {"w": torch.zeros(5)}
    state = optimizer.init(ours)
    meta = optimizer.meta_parameters(ours)
    reference = torch.zeros(5, requires_grad=True)
    torch_opt = torch_optimizer_cls([reference], **kwargs)
    for _ in range(6):
        grads = {"w": 2 * (ours["w"] - target) ** 3}
        updates, state = optimizer.update(grads, state, ours, meta)
        ours = apply_updates(ours, updates)
        torch_opt.zero_grad()
        ((reference - target) ** 4 / 2).sum().backward()
        torch_opt.step()
    return ours["w"], reference.detach()


@pytest.mark.parametrize(
    "ours, theirs, kwargs",
    [
        (sgd(0.05), torch.optim.SGD, {"lr": 0.05}),
        (meta_sgd(0.05), torch.optim.SGD, {"lr": 0.05}),
        (adam(0.05, eps_root=0.0), torch.optim.Adam, {"lr": 0.05}),
        (chain(scale_by_adam(eps_root=0.0), scale_by_learning_rate(0.05)), torch.optim.Adam, {"lr": 0.05}),
    ],
)
def test_steps_match_torch_optim(ours, theirs, kwargs):
    got, expected = _run(ours, theirs, **kwargs)
    torch.testing.assert_close(got, expected)


def test_updates_are_pure_and_states_are_typed():
    params = {"w": torch.ones(3)}
    grads = {"w": torch.ones(3)}
    for optimizer in (sgd(), meta_sgd(), adam(), chain(clip(0.5), sgd())):
        state = optimizer.init(params)
        optimizer.update(grads, state, params, optimizer.meta_parameters(params))
        assert torch.equal(params["w"], torch.ones(3)) and torch.equal(grads["w"], torch.ones(3))
    state = adam().init(params)
    assert isinstance(state[0], ScaleByAdamState) and isinstance(state[1], EmptyState)
    adam().update(grads, state, params, ({}, {}))
    assert state[0].count.item() == 0


def test_clipping_transforms():
    params = {"a": torch.zeros(2), "b": torch.zeros(1)}
    grads = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])}  # joint norm 5
    opt = clip_by_global_norm(1.0)
    updates, _ = opt.update(grads, opt.init(params), params, {})
    torch.testing.assert_close(updates["a"], torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(updates["b"], torch.tensor([0.8]))
    small = {"a": torch.tensor([0.3, 0.0]), "b": torch.tensor([0.4])}
    assert opt.update(small, opt.init(params), params, {})[0]["a"].equal(small["a"])  # under the bound: unchanged
    updates, _ = clip(1.0).update(grads, EmptyState(), params, {})
    torch.testing.assert_close(updates["b"], torch.tensor([1.0]))


def test_masked_adapts_only_the_selected_parameters():
    params = {"0.weight": torch.ones(2), "0.bias": torch.ones(1), "2.weight": torch.ones(2)}
    head = masked(meta_sgd(0.5), "2.*")
    assert adapted_names(head, params) == ("2.weight",)
    assert set(head.meta_parameters(params)) == {"2.weight"}  # rates only for what adapts
    grads = {name: torch.ones_like(p) for name, p in params.items()}
    updates, _ = head.update(grads, head.init(params), params, head.meta_parameters(params))
    new = apply_updates(params, updates)
    assert new["0.weight"].equal(params["0.weight"]) and new["0.bias"].equal(params["0.bias"])
    torch.testing.assert_close(new["2.weight"], torch.full((2,), 0.5))
    assert adapted_names(masked(sgd(), ["0.*", "2.weight"]), params) == tuple(params)
    assert adapted_names(chain(masked(sgd(), lambda n: n.endswith("bias")), clip(1.0)), params) == ("0.bias",)
    with pytest.raises(ValueError, match="adapts none of the network's parameters"):
        adapted_names(masked(sgd(), "head.*"), params)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: sgd(-0.1), "lr must be a positive finite number"),
        (lambda: meta_sgd(float("nan")), "lr must be a positive finite number"),
        (lambda: adam(b1=1.0), r"b1 must be in \[0, 1\)"),
        (lambda: scale_by_adam(eps=-1), "eps must be a non-negative"),
        (lambda: clip_by_global_norm(0), "max_norm must be a positive"),
        (lambda: masked(sgd(), []), "mask must be"),
        (lambda: chain(sgd(), object()), "lacks meta_parameters, init, update"),
    ],
)
def test_hyperparameters_are_validated(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_adam_meta_gradient_is_finite_when_a_gradient_is_exactly_zero():
    # A dead ReLU unit has exactly zero gradients; sqrt(v) at v = 0 has an infinite
    # derivative, which turns the meta-gradient into NaN unless eps_root > 0.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        net[0].bias[0] = -100.0  # unit 0 never fires
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    batch = TaskBatch(torch.randn(2, 4, 2), torch.randn(2, 4, 1), torch.randn(2, 4, 2), torch.randn(2, 4, 1))

    def mse(out, y):
        return ((out - y) ** 2).mean()

    network = FunctionalNetwork(net, {}, mse)
    _, good, _ = meta_gradient(network, GradientHead(inner_optimizer=adam(), inner_steps=2), params, ({}, {}), batch)
    assert all(torch.isfinite(g).all() for g in good.values())
    fragile = GradientHead(inner_optimizer=adam(eps_root=0.0), inner_steps=2)
    _, bad, _ = meta_gradient(network, fragile, params, ({}, {}), batch)
    assert not all(torch.isfinite(g).all() for g in bad.values())


def test_unused_parameter_gets_a_zero_meta_gradient():
    class WithSpare(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)
            self.spare = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            return self.linear(x)

    net = WithSpare()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    batch = TaskBatch(torch.randn(2, 4, 2), torch.randn(2, 4, 1), torch.randn(2, 4, 2), torch.randn(2, 4, 1))
    network = FunctionalNetwork(net, {}, torch.nn.functional.mse_loss)
    _, grads, _ = meta_gradient(network, GradientHead(inner_optimizer=sgd()), params, {}, batch)
    assert torch.equal(grads["spare"], torch.zeros(3))


class VelocityState(NamedTuple):
    velocity: dict


@dataclass(frozen=True)
class MomentumSGD:
    """A user-written inner optimizer: SGD with heavy-ball momentum and a typed state."""

    lr: float = 0.01
    momentum: float = 0.9

    def meta_parameters(self, params):
        return {}

    def init(self, params):
        return VelocityState({k: torch.zeros_like(p) for k, p in params.items()})

    def update(self, grads, state, params, meta):
        velocity = {k: self.momentum * state.velocity[k] + grads[k] for k in grads}
        return {k: -self.lr * v for k, v in velocity.items()}, VelocityState(velocity)


def test_user_optimizer_plugs_into_the_estimator(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    assert isinstance(MomentumSGD(), InnerOptimizer)
    est = MetaRegressor(
        head=GradientHead(inner_optimizer=MomentumSGD()), hidden_layer_sizes=(8,), max_iter=3, random_state=0
    )
    est.fit(X, y, groups=groups)
    before = est.predict(X_test[:5])
    est.partial_adapt(X_test[:10], y_test[:10])
    assert set(est.adaptation_state_.velocity) == {name for name, _ in est.module_.network.named_parameters()}
    assert not np.allclose(before, est.predict(X_test[:5]))


def test_named_tuple_state_survives_pickling(sinusoids):
    # Bug: the saved state rebuilt named tuples with type(tree)(generator), which fails.
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST, head=GradientHead(inner_optimizer=MomentumSGD(lr=0.05))).fit(X, y, groups=groups)
    est.partial_adapt(X_test[:10], y_test[:10])
    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    assert isinstance(loaded.adaptation_state_, VelocityState)
    est.partial_adapt(X_test[:10], y_test[:10])  # the momentum carries on identically
    loaded.partial_adapt(X_test[:10], y_test[:10])
    np.testing.assert_array_equal(loaded.predict(X_test), est.predict(X_test))


def test_chained_and_masked_optimizers_fit_adapt_clone_and_pickle(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    opt = chain(clip_by_global_norm(10.0), masked(scale_by_learned_rate(0.05), ["head.*"]))
    est = MetaRegressor(**FAST, head=GradientHead(inner_optimizer=opt)).fit(X, y, groups=groups)  # body "body.0"
    assert clone(est).get_params()["head__inner_optimizer"] == opt
    rates = est.module_.head_meta()[1]
    assert set(rates) == {"head.weight", "head.bias"}  # Meta-SGD rates for the last layer only
    meta_before = {k: v.clone() for k, v in est.module_.init_params().items()}
    est.partial_adapt(X_test[:10], y_test[:10])
    assert all(est.adapted_params_[k].equal(meta_before[k]) for k in meta_before if not k.startswith("head."))
    assert not est.adapted_params_["head.weight"].equal(meta_before["head.weight"])
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict(X_test), est.predict(X_test))


def test_resolve_by_name_uses_inner_lr_and_rejects_non_optimizers():
    assert resolve_inner_optimizer("meta-sgd", 0.3) == meta_sgd(0.3)
    assert resolve_inner_optimizer("adam", 0.2) == adam(0.2)
    assert resolve_inner_optimizer("sgd", 0.1) == sgd(0.1)
    with pytest.raises(TypeError, match="lacks init, update"):
        resolve_inner_optimizer(object.__new__(type("Half", (), {"meta_parameters": lambda s, p: {}})), 0.1)


def test_head_only_newton_fits_adapts_and_pickles(sinusoids):
    from sklearn_meta.optim import newton

    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(head=GradientHead(inner_optimizer=newton(), adapt_params="head"), **FAST)
    assert set(est.fit(X, y, groups=groups).module_.head_meta()) == {"log_damping"}
    before = est.predict(X_test[10:20])
    est.partial_adapt(X_test[:10], y_test[:10])
    assert not np.allclose(est.predict(X_test[10:20]), before)
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict(X_test), est.predict(X_test))
    assert np.isfinite(est.score(X_test, y_test, groups=np.repeat(np.arange(10), 20)))
