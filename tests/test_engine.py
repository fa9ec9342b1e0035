"""The vectorised bilevel step against a task-by-task autograd reference."""

import pytest
import torch
from torch.utils._pytree import tree_leaves, tree_map

from sklearn_meta.engine import adapt_one_task, adapt_tasks, compiled_meta_loss, meta_gradient, predict_tasks
from sklearn_meta.heads import FunctionalNetwork, GradientHead
from sklearn_meta.heads._gradient import inner_loop
from sklearn_meta.optim import (
    adam,
    adapted_names,
    chain,
    clip_by_global_norm,
    masked,
    meta_sgd,
    newton,
    scale_by_learned_rate,
    sgd,
)

from .conftest import float64_problem

N_TASKS, N_STEPS = 4, 3


def _mse(output, target):
    return ((output - target) ** 2).mean()


def _functional(net):
    """A plain module as the engine sees it (no body/last-layer split is needed by a gradient head)."""
    return FunctionalNetwork(net, {}, _mse)


def _head(optimizer, first_order=False, n_steps=N_STEPS):
    return GradientHead(inner_optimizer=optimizer, inner_steps=n_steps, first_order=first_order)


@pytest.fixture
def setup():
    return float64_problem(N_TASKS)


def _reference_step(name, params, meta, grads, state, lr):
    """Each optimizer's update written out again, independently of sklearn_meta.optim."""
    if name == "sgd":
        return [p - lr * g for p, g in zip(params, grads)], state
    if name == "meta-sgd":
        return [p - a * g for p, a, g in zip(params, meta, grads)], state
    step, m, v = state
    step += 1
    m = [0.9 * mi + 0.1 * g for mi, g in zip(m, grads)]
    v = [0.999 * vi + 0.001 * g * g for vi, g in zip(v, grads)]
    new = [
        p - lr * (mi / (1 - 0.9**step)) / (torch.sqrt(vi / (1 - 0.999**step) + 1e-12) + 1e-8)
        for p, mi, vi in zip(params, m, v)
    ]
    return new, (step, m, v)


def _leaves(meta):
    return tree_leaves(meta)


def _meta_leaves(optimizer, params):
    return tree_map(lambda v: v.detach().clone().requires_grad_(True), optimizer.meta_parameters(params))


def _reference_meta_gradient(net, name, params, meta, batch, first_order, lr):
    names = list(params)
    leaves = list(params.values()) + _leaves(meta)
    total = 0.0
    for t in range(N_TASKS):
        current = list(params.values())
        state = (0, [torch.zeros_like(p) for p in current], [torch.zeros_like(p) for p in current])
        for _ in range(N_STEPS):
            out = torch.func.functional_call(net, dict(zip(names, current)), (batch.x_support[t],))
            grads = torch.autograd.grad(_mse(out, batch.y_support[t]), current, create_graph=not first_order)
            current, state = _reference_step(name, current, _leaves(meta), grads, state, lr)
        out = torch.func.functional_call(net, dict(zip(names, current)), (batch.x_query[t],))
        total = total + _mse(out, batch.y_query[t]) / N_TASKS
    return total, torch.autograd.grad(total, leaves)


OPTIMIZERS = {"sgd": sgd(0.1), "adam": adam(0.1), "meta-sgd": meta_sgd(0.1)}


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_meta_gradient_matches_task_by_task_reference(setup, name, first_order):
    net, params, batch = setup
    optimizer = OPTIMIZERS[name]
    meta = _meta_leaves(optimizer, params)

    loss, param_grads, meta_grads = meta_gradient(_functional(net), _head(optimizer, first_order), params, meta, batch)
    ref_loss, ref_grads = _reference_meta_gradient(net, name, params, meta, batch, first_order, 0.1)

    torch.testing.assert_close(loss, ref_loss.detach())
    ours = list(param_grads.values()) + _leaves(meta_grads)
    assert len(ours) == len(ref_grads)
    for got, expected in zip(ours, ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_first_order_drops_second_order_terms(setup, name):
    # Guards the test above against passing vacuously: the two paths must differ.
    net, params, batch = setup
    optimizer = OPTIMIZERS[name]
    meta = _meta_leaves(optimizer, params)
    _, second, _ = meta_gradient(_functional(net), _head(optimizer, False), params, meta, batch)
    _, first, _ = meta_gradient(_functional(net), _head(optimizer, True), params, meta, batch)
    difference = max((second[k] - first[k]).abs().max().item() for k in second)
    assert difference > 1e-4


def test_vectorised_adaptation_matches_one_task_at_a_time(setup):
    net, params, batch = setup
    network, head = _functional(net), _head(adam(0.05))
    meta = adam(0.05).meta_parameters(params)
    adapted = adapt_tasks(network, head, params, meta, batch.x_support, batch.y_support)
    outputs = predict_tasks(network, adapted, batch.x_query)
    for t in range(N_TASKS):
        single = adapt_tasks(network, head, params, meta, batch.x_support[t : t + 1], batch.y_support[t : t + 1])
        torch.testing.assert_close(outputs[t], predict_tasks(network, single, batch.x_query[t : t + 1])[0])
    assert not any(v.requires_grad for v in adapted.values())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_serving_adaptation_equals_the_torch_func_path(setup, name):
    net, params, batch = setup
    optimizer = OPTIMIZERS[name]
    meta = optimizer.meta_parameters(params)
    network, head = _functional(net), _head(optimizer)
    x, y = batch.x_support[0], batch.y_support[0]
    with torch.no_grad():
        expected, expected_state = head.adapt(network, params, meta, head.init(params, meta), x, y)
    got, state = adapt_one_task(network, head, params, meta, head.init(params, meta), x, y)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k])
        assert not got[k].requires_grad
    for a, b in zip(tree_leaves(state), tree_leaves(expected_state)):
        torch.testing.assert_close(a, b)


@pytest.mark.torch_only
@pytest.mark.parametrize("name", ["adam", "meta-sgd"])
def test_compiled_meta_gradient_equals_eager(setup, name):
    # The SGD path is checked end to end in test_training; here the other two optimizers,
    # second order. (Training trajectories with an Adam inner loop drift apart over many
    # updates all the same: its m / sqrt(v) amplifies last-bit rounding differences.)
    net, params, batch = setup
    optimizer = OPTIMIZERS[name]
    meta = _meta_leaves(optimizer, params)
    network, head = _functional(net), _head(optimizer)
    eager = meta_gradient(network, head, params, meta, batch)
    compiled = meta_gradient(network, head, params, meta, batch, loss_fn=compiled_meta_loss(network, head))
    torch.testing.assert_close(compiled[0], eager[0])
    for got, expected in zip([*compiled[1].values(), *_leaves(compiled[2])], [*eager[1].values(), *_leaves(eager[2])]):
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10)


def _reference_masked_chain_gradient(net, params, rates, batch, first_order, max_norm):
    """Head-only Meta-SGD with global-norm clipping, written out task by task with autograd."""
    names = list(params)
    head = [n for n in names if n.startswith("2.")]
    leaves = list(params.values()) + [rates[n] for n in head]
    total = 0.0
    for t in range(N_TASKS):
        current = dict(params)
        for _ in range(N_STEPS):
            out = torch.func.functional_call(net, current, (batch.x_support[t],))
            grads = torch.autograd.grad(_mse(out, batch.y_support[t]), [current[n] for n in head],
                                        create_graph=not first_order)  # fmt: skip
            norm = torch.sqrt(sum((g * g).sum() for g in grads))
            factor = torch.clamp(max_norm / (norm + 1e-12), max=1.0)
            current = {**current, **{n: current[n] - rates[n] * g * factor for n, g in zip(head, grads)}}
        out = torch.func.functional_call(net, current, (batch.x_query[t],))
        total = total + _mse(out, batch.y_query[t]) / N_TASKS
    return total, torch.autograd.grad(total, leaves)


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
def test_head_only_chained_meta_gradient_matches_task_by_task_reference(setup, first_order):
    # Only the head ("2.*") adapts; the body is meta-learned through the query loss alone.
    net, params, batch = setup
    max_norm = 0.05  # small enough that the clipping is active
    optimizer = chain(clip_by_global_norm(max_norm), masked(scale_by_learned_rate(0.1), "2.*"))
    meta = _meta_leaves(optimizer, params)
    assert set(meta[1]) == {"2.weight", "2.bias"}
    assert adapted_names(optimizer, params) == ("2.weight", "2.bias")

    loss, param_grads, meta_grads = meta_gradient(_functional(net), _head(optimizer, first_order), params, meta, batch)
    ref_loss, ref_grads = _reference_masked_chain_gradient(net, params, meta[1], batch, first_order, max_norm)

    torch.testing.assert_close(loss, ref_loss.detach())
    ours = list(param_grads.values()) + _leaves(meta_grads)
    assert len(ours) == len(ref_grads)
    for got, expected in zip(ours, ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    # the clipping was active, and the body moved only through the query loss
    x, y = batch.x_support[0], batch.y_support[0]
    grads = torch.autograd.grad(_mse(torch.func.functional_call(net, params, (x,)), y), [params["2.weight"]])
    assert grads[0].norm() > max_norm


def test_serving_adapts_only_the_masked_parameters(setup):
    net, params, batch = setup
    head = GradientHead(inner_optimizer=adam(0.1), adapt_params=["2.*"], inner_steps=2)
    network, x, y = _functional(net), batch.x_support[0], batch.y_support[0]
    meta = head.meta_parameters(params)
    with torch.no_grad():
        expected, _ = head.adapt(network, params, meta, head.init(params, meta), x, y)
    got, _ = adapt_one_task(network, head, params, meta, head.init(params, meta), x, y)
    for name in params:
        torch.testing.assert_close(got[name], expected[name])
        assert got[name].equal(params[name].detach()) != name.startswith("2.")


def _reference_newton_gradient(net, params, log_damping, batch, first_order):
    """Head-only damped Newton steps, task by task, with an explicit Hessian (torch.autograd.functional)."""
    head = [n for n in params if n.startswith("2.")]
    leaves = list(params.values()) + [log_damping]
    total = 0.0
    for t in range(N_TASKS):
        current = dict(params)
        for _ in range(N_STEPS):
            flat = torch.cat([current[n].reshape(-1) for n in head])

            def loss_of(v, current=current, t=t):
                pieces = torch.split(v, [current[n].numel() for n in head])
                swapped = {**current, **{n: p.reshape(current[n].shape) for n, p in zip(head, pieces)}}
                return _mse(torch.func.functional_call(net, swapped, (batch.x_support[t],)), batch.y_support[t])

            g = torch.autograd.grad(loss_of(flat), flat, create_graph=not first_order)[0]
            h = torch.autograd.functional.hessian(loss_of, flat, create_graph=not first_order)
            if first_order:
                g, h = g.detach(), h.detach()
            step = torch.linalg.solve(h + log_damping.exp() * torch.eye(len(flat), dtype=flat.dtype), g)
            new = flat - step
            pieces = torch.split(new, [current[n].numel() for n in head])
            current = {**current, **{n: p.reshape(current[n].shape) for n, p in zip(head, pieces)}}
        total = total + _mse(torch.func.functional_call(net, current, (batch.x_query[t],)), batch.y_query[t]) / N_TASKS
    return total, torch.autograd.grad(total, leaves)


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
def test_head_only_newton_meta_gradient_matches_task_by_task_reference(setup, first_order):
    net, params, batch = setup
    optimizer = masked(newton(damping=0.5), "2.*")
    meta = _meta_leaves(optimizer, params)
    loss, param_grads, meta_grads = meta_gradient(_functional(net), _head(optimizer, first_order), params, meta, batch)
    ref_loss, ref_grads = _reference_newton_gradient(net, params, meta["log_damping"], batch, first_order)
    torch.testing.assert_close(loss, ref_loss.detach())
    ours = list(param_grads.values()) + _leaves(meta_grads)
    for got, expected in zip(ours, ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-11)


def test_newton_conjugate_gradient_equals_the_exact_solve(setup):
    net, params, batch = setup
    x, y = batch.x_support[0], batch.y_support[0]
    results = []
    for opt in (newton(damping=0.5), newton(damping=0.5, max_exact=0, cg_iters=40)):
        meta = opt.meta_parameters(params)
        with torch.no_grad():
            results.append(inner_loop(_functional(net), opt, params, meta, opt.init(params), x, y, 1)[0])
    for name in params:
        torch.testing.assert_close(results[1][name], results[0][name], rtol=1e-6, atol=1e-8)
