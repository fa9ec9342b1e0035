"""Inner optimizers: the same steps as torch.optim, differentiable, and pluggable."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from sklearn_meta import MetaRegressor
from sklearn_meta._engine import Learner, TaskBatch, meta_gradient
from sklearn_meta.optim import SGD, Adam, InnerOptimizer, MetaSGD, resolve_inner_optimizer


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
        ours, state = optimizer.update(grads, state, ours, meta)
        torch_opt.zero_grad()
        ((reference - target) ** 4 / 2).sum().backward()
        torch_opt.step()
    return ours["w"], reference.detach()


@pytest.mark.parametrize(
    "ours, theirs, kwargs",
    [
        (SGD(lr=0.05), torch.optim.SGD, {"lr": 0.05}),
        (MetaSGD(lr=0.05), torch.optim.SGD, {"lr": 0.05}),
        (Adam(lr=0.05, eps_root=0.0), torch.optim.Adam, {"lr": 0.05}),
    ],
)
def test_steps_match_torch_optim(ours, theirs, kwargs):
    got, expected = _run(ours, theirs, **kwargs)
    torch.testing.assert_close(got, expected)


def test_updates_are_pure():
    params = {"w": torch.ones(3)}
    grads = {"w": torch.ones(3)}
    for optimizer in (SGD(), MetaSGD(), Adam()):
        state = optimizer.init(params)
        optimizer.update(grads, state, params, optimizer.meta_parameters(params))
        assert torch.equal(params["w"], torch.ones(3))
    state = Adam().init(params)
    Adam().update(grads, state, params, {})
    assert state["step"].item() == 0


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

    _, good, _ = meta_gradient(Learner(net, {}, mse, Adam()), params, {}, batch, 2)
    assert all(torch.isfinite(g).all() for g in good.values())
    _, bad, _ = meta_gradient(Learner(net, {}, mse, Adam(eps_root=0.0)), params, {}, batch, 2)
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
    _, grads, _ = meta_gradient(Learner(net, {}, torch.nn.functional.mse_loss, SGD()), params, {}, batch, 1)
    assert torch.equal(grads["spare"], torch.zeros(3))


@dataclass(frozen=True)
class MomentumSGD:
    """A user-written inner optimizer: SGD with heavy-ball momentum."""

    lr: float = 0.01
    momentum: float = 0.9

    def meta_parameters(self, params):
        return {}

    def init(self, params):
        return {k: torch.zeros_like(p) for k, p in params.items()}

    def update(self, grads, state, params, meta):
        velocity = {k: self.momentum * state[k] + grads[k] for k in params}
        return {k: p - self.lr * velocity[k] for k, p in params.items()}, velocity


def test_user_optimizer_plugs_into_the_estimator(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    assert isinstance(MomentumSGD(), InnerOptimizer)
    est = MetaRegressor(inner_optimizer=MomentumSGD(), hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    est.fit(X, y, groups=groups)
    before = est.predict(X_test[:5])
    est.partial_adapt(X_test[:10], y_test[:10])
    state = est.inner_state_
    assert set(state) == {name for name, _ in est.module_.named_parameters()}
    assert not np.allclose(before, est.predict(X_test[:5]))


def test_resolve_by_name_uses_inner_lr_and_rejects_non_optimizers():
    assert resolve_inner_optimizer("meta-sgd", 0.3) == MetaSGD(lr=0.3)
    assert resolve_inner_optimizer("adam", 0.2).lr == 0.2
    with pytest.raises(TypeError, match="lacks init, update"):
        resolve_inner_optimizer(object.__new__(type("Half", (), {"meta_parameters": lambda s, p: {}})), 0.1)
