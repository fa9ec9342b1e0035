"""Meta-training throughput of ``MetaRegressor.fit`` against a bare torch.func step and peers.

The MAML sinusoid setup (Finn et al., 2017): an MLP 1-40-40-1 with ReLU, inner
SGD with step size 0.01, K=10 support and 10 query points per task, Adam with
meta learning rate 1e-3. Every implementation runs in this one process; within
each round they take turns (round-robin, starting implementation rotated each
round), and the table reports the median over rounds. Implementations:

* ``sklearn_meta``: ``MetaRegressor(...).fit(X, y, groups=groups)`` with
  ``max_iter`` = outer steps per run. Its per-update throughput subtracts the
  fixed cost of a ``fit`` call (validation, conversion to tensors, building the
  net), measured each round as ``fit`` with ``max_iter=0``.
* ``bare torch.func``: the same bilevel step written directly with
  ``functional_call`` + ``grad`` + ``vmap``, ``torch.autograd.grad`` for the
  outer gradient and ``torch.optim.Adam``: the speed reference.
* ``higher``: ``higher.innerloop_ctx`` in a Python loop over the tasks, as in
  higher's README and MAML example.
* ``TorchOpt (loop)``: ``torchopt.MetaSGD`` in a Python loop over the tasks with
  ``extract_state_dict``/``recover_state_dict``, as in TorchOpt's MAML example.
* ``TorchOpt (vmap)``: TorchOpt's functional ``torchopt.sgd`` inside
  ``torch.func.vmap``, as in TorchOpt's functorch MAML example.

The peers sample tasks the way the estimator does (index tensors drawn from a
seeded generator), inside the timed region. Before timing, the script checks
that all implementations compute the same meta-gradient on one batch and that
the estimator and the bare step follow the same loss trajectory.

Usage::

    python benchmarks/speed.py            # full run, 5-10 minutes on 2 cores
    python benchmarks/speed.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.metadata
import io
import json
import pstats
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from _common import RESULTS, fmt, machine_line, markdown_table, median, timed, try_pyplot, write_result
from skorch.callbacks import Callback
from torch import nn
from torch.func import functional_call, grad, vmap

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta.datasets import make_classification_tasks, make_sinusoid_tasks
from sklearn_meta.engine import TaskBatch, meta_gradient
from sklearn_meta.heads import FunctionalNetwork, GradientHead
from sklearn_meta.optim import newton

INNER_LR = 0.01
META_LR = 1e-3
N_SUPPORT = 10
N_QUERY = 10
ROWS_PER_TASK = 20


# ----------------------------------------------------------------------
# Shared pieces of the reference implementations


def make_net(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def as_sequential(network: nn.Module) -> tuple[nn.Sequential, dict[str, str]]:
    """An estimator's network as a plain ``nn.Sequential`` sharing its parameters, and the names' map.

    The estimator's network is its body's layers then the last layer, with
    parameters named ``body.<i>.*`` and ``head.*``; the Sequential holds the
    same layers in the same order, so its parameters (``<i>.*``) are the
    same tensors, position by position. Returns the Sequential and the map
    from the estimator's parameter names to the Sequential's.
    """
    plain = nn.Sequential(*network.body, network.head)
    theirs, ours = dict(network.named_parameters()), dict(plain.named_parameters())
    assert [p.shape for p in theirs.values()] == [p.shape for p in ours.values()], (list(theirs), list(ours))
    return plain, dict(zip(theirs, ours))


class TaskSampler:
    """Meta-batches as the estimator draws them: tasks without replacement, a random split of their rows."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, seed: int = 0):
        self.X, self.Y = X, Y  # (n_tasks, rows, 1)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, n_tasks: int):
        g = self.generator
        tasks = torch.randperm(self.X.shape[0], generator=g)[:n_tasks]
        rows = torch.rand(n_tasks, self.X.shape[1], generator=g).argsort(dim=-1)[:, : N_SUPPORT + N_QUERY]
        x, y = self.X[tasks[:, None], rows], self.Y[tasks[:, None], rows]
        return x[:, :N_SUPPORT], y[:, :N_SUPPORT], x[:, N_SUPPORT:], y[:, N_SUPPORT:]


class Reference:
    """Base of the reference implementations: a network, a meta-optimizer and a sampler."""

    name = ""

    def __init__(self, n_steps: int, first_order: bool, batch_size: int, sampler: TaskSampler, net: nn.Module):
        self.n_steps, self.first_order, self.batch_size = n_steps, first_order, batch_size
        self.sampler, self.net = sampler, net
        self.meta_opt = torch.optim.Adam(net.parameters(), lr=META_LR)

    def meta_grad(self, batch) -> torch.Tensor:
        """Leave the meta-gradient of ``batch`` in ``p.grad``; return the meta-loss."""
        raise NotImplementedError

    def step(self, batch) -> torch.Tensor:
        loss = self.meta_grad(batch)
        self.meta_opt.step()
        return loss

    def run(self, n_outer: int) -> float:
        def loop():
            for _ in range(n_outer):
                self.step(self.sampler.sample(self.batch_size))

        return timed(loop)

    def grads(self) -> list[torch.Tensor]:
        return [p.grad.detach().clone() for p in self.net.parameters()]


class BareTorchFunc(Reference):
    name = "bare torch.func"

    def __init__(self, *args):
        super().__init__(*args)
        self.params = dict(self.net.named_parameters())

    def loss(self, params, x, y):
        return F.mse_loss(functional_call(self.net, params, (x,)), y)

    def task_loss(self, params, xs, ys, xq, yq):
        support_grad = grad(self.loss)
        for _ in range(self.n_steps):
            grads = support_grad(params, xs, ys)
            if self.first_order:
                grads = {k: g.detach() for k, g in grads.items()}
            params = {k: p - INNER_LR * grads[k] for k, p in params.items()}
        return self.loss(params, xq, yq)

    def meta_grad(self, batch):
        loss = vmap(self.task_loss, in_dims=(None, 0, 0, 0, 0))(self.params, *batch).mean()
        tensors = list(self.params.values())
        for p, g in zip(tensors, torch.autograd.grad(loss, tensors)):
            p.grad = g
        return loss.detach()


def _detach_all(grads):
    return [None if g is None else g.detach() for g in grads]


class Higher(Reference):
    name = "higher"

    def __init__(self, *args):
        import higher

        super().__init__(*args)
        self.higher = higher
        self.inner_opt = torch.optim.SGD(self.net.parameters(), lr=INNER_LR)

    def meta_grad(self, batch):
        xs, ys, xq, yq = batch
        n_tasks = xs.shape[0]
        self.meta_opt.zero_grad()
        total = torch.zeros(())
        callback = _detach_all if self.first_order else None
        for i in range(n_tasks):
            with self.higher.innerloop_ctx(self.net, self.inner_opt, copy_initial_weights=False) as (fnet, diffopt):
                for _ in range(self.n_steps):
                    diffopt.step(F.mse_loss(fnet(xs[i]), ys[i]), grad_callback=callback)
                query_loss = F.mse_loss(fnet(xq[i]), yq[i]) / n_tasks
                query_loss.backward()
                total += query_loss.detach()
        return total


def _stop_gradient_transform():
    """A TorchOpt GradientTransformation that detaches the gradients: first-order MAML."""
    import torchopt
    from torchopt.base import EmptyState, GradientTransformation

    def init(params):
        return EmptyState()

    def update(updates, state, *, params=None, inplace=True):
        return torchopt.pytree.tree_map(lambda g: None if g is None else g.detach(), updates), state

    return GradientTransformation(init, update)


class TorchOptLoop(Reference):
    name = "TorchOpt (loop)"

    def __init__(self, *args):
        import torchopt

        super().__init__(*args)
        self.torchopt = torchopt
        if self.first_order:
            # MetaSGD always differentiates through the inner gradient; first-order MAML
            # chains a transform that detaches it in front of the same SGD update.
            impl = torchopt.chain(_stop_gradient_transform(), torchopt.sgd(lr=INNER_LR))
            self.inner_opt = torchopt.MetaOptimizer(self.net, impl)
        else:
            self.inner_opt = torchopt.MetaSGD(self.net, lr=INNER_LR)

    def meta_grad(self, batch):
        tp = self.torchopt
        xs, ys, xq, yq = batch
        self.meta_opt.zero_grad()
        net_state = tp.extract_state_dict(self.net, by="reference", detach_buffers=True)
        opt_state = tp.extract_state_dict(self.inner_opt, by="reference")
        losses = []
        for i in range(xs.shape[0]):
            for _ in range(self.n_steps):
                self.inner_opt.step(F.mse_loss(self.net(xs[i]), ys[i]))
            losses.append(F.mse_loss(self.net(xq[i]), yq[i]))
            tp.recover_state_dict(self.net, net_state)
            tp.recover_state_dict(self.inner_opt, opt_state)
        loss = torch.stack(losses).mean()
        loss.backward()
        return loss.detach()


class TorchOptVmap(Reference):
    name = "TorchOpt (vmap)"

    def __init__(self, *args):
        import torchopt

        super().__init__(*args)
        self.torchopt = torchopt
        self.inner = torchopt.sgd(lr=INNER_LR)
        self.params = dict(self.net.named_parameters())

    def loss(self, params, x, y):
        return F.mse_loss(functional_call(self.net, params, (x,)), y)

    def task_loss(self, params, xs, ys, xq, yq):
        tp = self.torchopt
        state = self.inner.init(params)
        for _ in range(self.n_steps):
            grads = grad(self.loss)(params, xs, ys)
            if self.first_order:
                grads = {k: g.detach() for k, g in grads.items()}
            updates, state = self.inner.update(grads, state, inplace=False)
            params = tp.apply_updates(params, updates, inplace=False)
        return self.loss(params, xq, yq)

    def meta_grad(self, batch):
        self.meta_opt.zero_grad()
        losses = vmap(self.task_loss, in_dims=(None, 0, 0, 0, 0))(self.params, *batch)
        loss = losses.mean()
        loss.backward()
        return loss.detach()


def gradient_head(n_steps: int, first_order: bool, **changes) -> GradientHead:
    """The grid's inner loop: ``n_steps`` SGD steps of size ``INNER_LR``, second or first order."""
    settings = dict(inner_optimizer="sgd", inner_lr=INNER_LR, inner_steps=n_steps, first_order=first_order)
    return GradientHead(**{**settings, **changes})


class Ours:
    """``MetaRegressor.fit`` with ``max_iter`` outer steps.

    ``head``: ``GradientHead`` arguments that replace the grid's (a dict), or
    a head that replaces the gradient head (e.g. ``"ridge"``; the inner steps
    and order then do not apply); ``estimator``: other ``MetaRegressor``
    arguments.
    """

    name = "sklearn_meta"

    def __init__(self, n_steps, first_order, batch_size, data, head=None, **estimator):
        self.X, self.y, self.groups = data
        if head is None or isinstance(head, dict):
            head = gradient_head(n_steps, first_order, **(head or {}))
        settings = dict(
            hidden_layer_sizes=(40, 40),
            activation="relu",
            head=head,
            meta_optimizer="adam",
            meta_lr=META_LR,
            meta_batch_size=batch_size,
            n_support=N_SUPPORT,
            n_query=N_QUERY,
            random_state=0,
        )
        self.est = MetaRegressor(**{**settings, **estimator})

    def run(self, n_outer: int) -> float:
        self.est.set_params(max_iter=n_outer)
        return timed(lambda: self.est.fit(self.X, self.y, groups=self.groups))


PEERS = {"bare": BareTorchFunc, "higher": Higher, "torchopt_loop": TorchOptLoop, "torchopt_vmap": TorchOptVmap}
LOOP_PEERS = {"higher", "torchopt_loop"}
LABELS = {
    "ours": "sklearn_meta fit",
    "bare": "bare torch.func",
    "higher": "higher",
    "torchopt_loop": "TorchOpt (loop)",
    "torchopt_vmap": "TorchOpt (vmap)",
}


def peer_status() -> dict[str, str]:
    """``"ok"`` or why a peer cannot run here."""
    status = {"bare": "ok"}
    for key, module in (("higher", "higher"), ("torchopt_loop", "torchopt"), ("torchopt_vmap", "torchopt")):
        try:
            __import__(module)
            ref = PEERS[key](1, False, 2, None, make_net())
            x = torch.zeros(2, N_SUPPORT, 1)
            ref.meta_grad((x, x, x, x))
            status[key] = f"ok ({module} {importlib.metadata.version(module)})"
        except Exception as exc:  # noqa: BLE001 - reported in the table
            status[key] = f"unavailable: {type(exc).__name__}: {exc}".splitlines()[0][:160]
    return status


def training_data(n_tasks: int):
    X, y, groups = make_sinusoid_tasks(n_tasks=n_tasks, n_samples_per_task=ROWS_PER_TASK, random_state=0)
    Xt = torch.tensor(X, dtype=torch.float32).reshape(n_tasks, ROWS_PER_TASK, 1)
    Yt = torch.tensor(y, dtype=torch.float32).reshape(n_tasks, ROWS_PER_TASK, 1)
    return (X, y, groups), (Xt, Yt)


# ----------------------------------------------------------------------
# Correctness: same meta-gradient, same trajectory


class _RecordBatches(Callback):
    def __init__(self):
        self.batches = []

    def on_grad_computed(self, net, named_parameters, batch=None, **kwargs):
        self.batches.append(tuple(t.clone() for t in batch))


def check_gradients(status, tensors) -> list[list]:
    """Meta-gradient of one batch from every implementation, against the estimator's engine.

    The engine's call is the one ``fit`` makes on every update:
    ``meta_gradient(network, head, init_params, head_meta, batch)``, here on
    ``make_net(1)`` (a plain ``nn.Sequential``) and the grid's gradient head.
    """
    rows = []
    sampler = TaskSampler(*tensors, seed=123)
    batch = sampler.sample(8)
    for n_steps in (1, 5):
        for first_order in (False, True):
            net = make_net(1)
            network = FunctionalNetwork(net, {}, F.mse_loss)
            head = gradient_head(n_steps, first_order)
            params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
            loss, ref_grads, _ = meta_gradient(network, head, params, head.meta_parameters(params), TaskBatch(*batch))
            ref = list(ref_grads.values())
            scale = max(float(g.abs().max()) for g in ref)
            row = [n_steps, "first" if first_order else "second", f"{loss.item():.6f}"]
            for key in PEERS:
                if not status[key].startswith("ok"):
                    row.append("n/a")
                    continue
                impl = PEERS[key](n_steps, first_order, 8, None, make_net(1))
                peer_loss = impl.meta_grad(batch)
                diff = max(float((a - b).abs().max()) for a, b in zip(impl.grads(), ref))
                row.append(f"{diff / scale:.1e} (loss Δ {abs(peer_loss.item() - loss.item()):.0e})")
            rows.append(row)
    return rows


def check_trajectory(data, n_iter: int = 30) -> dict:
    """Fit the estimator, then replay its batches through the bare step from the same initialisation."""
    X, y, groups = data
    out = {}
    for n_steps, first_order in ((1, False), (5, True)):
        recorder = _RecordBatches()
        kwargs = dict(
            activation="relu",  # make_net's, the reference network (the regressor's default body is tanh)
            head=gradient_head(n_steps, first_order),
            meta_lr=META_LR,
            meta_batch_size=25,
            n_support=N_SUPPORT,
            n_query=N_QUERY,
            random_state=0,
        )
        init = MetaRegressor(max_iter=0, **kwargs).fit(X, y, groups=groups)
        est = MetaRegressor(max_iter=n_iter, callbacks=[recorder], **kwargs).fit(X, y, groups=groups)
        # The estimator's parameters (body.0.*, body.2.*, head.*) are make_net's (0.*, 2.*, 4.*) by position.
        net = make_net()
        with torch.no_grad():
            for p, q in zip(net.parameters(), init.module_.network.parameters(), strict=True):
                p.copy_(q)
        bare = BareTorchFunc(n_steps, first_order, 25, None, net)
        losses = [bare.step(b).item() for b in recorder.batches]
        loss_diff = max(abs(a - b) for a, b in zip(losses, est.loss_curve_))
        with torch.no_grad():
            param_diff = max(
                float((p - q).abs().max())
                for p, q in zip(net.parameters(), est.module_.network.parameters(), strict=True)
            )
        out[f"{n_steps} step(s), {'first' if first_order else 'second'} order"] = {
            "updates": len(losses),
            "max |loss diff|": loss_diff,
            "max |param diff| after": param_diff,
            "first/last loss": (est.loss_curve_[0], est.loss_curve_[-1]),
        }
    return out


# ----------------------------------------------------------------------
# Throughput


def grid_cells(args) -> list[tuple]:
    """The grid (inner steps, first order, meta-batch), or the cells ``--cells`` names."""
    cells = [(n, fo, b) for n in (1, 5) for fo in (False, True) for b in (25, 100)]
    if args.cells:
        wanted = {tuple(c.split(":")) for c in args.cells}
        cells = [c for c in cells if (str(c[0]), "fo" if c[1] else "so", str(c[2])) in wanted]
    return cells


def throughput(args, status, data, tensors):
    cells = grid_cells(args)
    keys = ["ours"] + [k for k in PEERS if status[k].startswith("ok") and k in args.impls]
    impls = {}
    for cell in cells:
        n, fo, b = cell
        impls[cell] = {"ours": Ours(n, fo, b, data)}
        for key in keys[1:]:
            impls[cell][key] = PEERS[key](n, fo, b, TaskSampler(*tensors, seed=0), make_net())
    times = {cell: {k: [] for k in keys + ["ours_overhead"]} for cell in cells}
    total_rounds = args.warmup + args.rounds
    for r in range(total_rounds):
        start = time.perf_counter()
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for cell in cells:
            for key in order:
                steps = args.loop_steps if key in LOOP_PEERS else args.steps
                t = impls[cell][key].run(steps)
                if r >= args.warmup:
                    times[cell][key].append(t)
            t0 = impls[cell]["ours"].run(0)
            if r >= args.warmup:
                times[cell]["ours_overhead"].append(t0)
        tag = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}/{args.rounds}"
        print(f"  {tag}: {time.perf_counter() - start:.1f} s", flush=True)
    return cells, keys, times


def tasks_per_second(cell, key, times, args):
    n, fo, b = cell
    t = times[cell][key]
    if not t:
        return float("nan")
    steps = args.loop_steps if key in LOOP_PEERS else args.steps
    return steps * b / median(t)


def ours_per_update(cell, times, args):
    """Tasks/s of the outer updates alone: the fit call minus the median cost of fit(max_iter=0).

    Returns the median, the overhead, and the value of every round (for paired ratios).
    """
    b = cell[2]
    overhead = median(times[cell]["ours_overhead"])
    per_round = [args.steps * b / max(t - overhead, 1e-9) for t in times[cell]["ours"]]
    return median(per_round), overhead, per_round


def paired_ratio(cell, key, times, args, ours_rounds):
    """Median over rounds of ours / key within the same round: slow drifts of machine load cancel."""
    steps = args.loop_steps if key in LOOP_PEERS else args.steps
    return median([o / (steps * cell[2] / t) for o, t in zip(ours_rounds, times[cell][key])])


# ----------------------------------------------------------------------
# Serving: partial_adapt, predict, score


def serving(args, data):
    """Rows of the serving table: operation, sklearn_meta, bare torch.func, bare autograd, ratio."""
    X, y, groups = data
    est = MetaRegressor(head=GradientHead(inner_lr=INNER_LR), max_iter=args.serve_fit_iter, random_state=0)
    est.fit(X, y, groups=groups)
    Xn, yn, _ = make_sinusoid_tasks(n_tasks=1, n_samples_per_task=110, random_state=7)
    xs, ys = Xn[:10], yn[:10]
    # The bare reference runs a plain nn.Sequential holding the fitted layers, not the estimator's network.
    net, plain_name = as_sequential(est.module_.network)
    params = {k: p.detach() for k, p in net.named_parameters()}

    def bare_loss(p, x, y_):
        return F.mse_loss(functional_call(net, p, (x,)), y_)

    support_grad = grad(bare_loss)

    def as_tensors(x, y_):
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y_, dtype=torch.float32).reshape(-1, 1)

    def adapt_func(steps):
        with torch.no_grad():
            x_t, y_t = as_tensors(xs, ys)
            p = params
            for _ in range(steps):
                g = support_grad(p, x_t, y_t)
                p = {k: v - INNER_LR * g[k] for k, v in p.items()}
        return p

    def adapt_autograd(steps):
        x_t, y_t = as_tensors(xs, ys)
        p = params
        for _ in range(steps):
            leaves = {k: v.detach().requires_grad_() for k, v in p.items()}
            with torch.enable_grad():
                gs = torch.autograd.grad(bare_loss(leaves, x_t, y_t), list(leaves.values()))
            p = {k: v.detach() - INNER_LR * g for (k, v), g in zip(leaves.items(), gs)}
        return p

    def us(seconds):
        return f"{median(seconds) * 1e6:,.0f} µs"

    def interleaved(*fns):
        """Median-ready timings of each function, calls taken in turn so that load changes hit all alike."""
        out = [[] for _ in fns]
        for _ in range(args.calls):
            for times, fn in zip(out, fns):
                times.append(timed(fn))
        return out

    def adapt_ours():
        est.reset_adaptation()  # cheap: drops the adapted state; included in the timing
        est.partial_adapt(xs, ys)

    rows = []
    for steps in (1, 10):
        est.head_.set_params(adapt_steps=steps)
        lat, func, auto = interleaved(adapt_ours, lambda s=steps: adapt_func(s), lambda s=steps: adapt_autograd(s))
        rows.append(
            [
                f"partial_adapt, 10 rows, {steps} step(s)",
                us(lat),
                us(func),
                us(auto),
                fmt(median(lat) / min(median(func), median(auto))),
            ]
        )

    est.head_.set_params(adapt_steps=None)
    est.reset_adaptation().partial_adapt(xs, ys)
    xq = Xn[10:20]
    adapted = {plain_name[k]: v.detach() for k, v in est.adapted_params_.items()}

    def bare_predict():
        with torch.inference_mode():
            return functional_call(net, adapted, (torch.tensor(xq, dtype=torch.float32),)).numpy().ravel()

    lat, bare = interleaved(lambda: est.predict(xq), bare_predict)
    rows.append(["predict, 10 rows", us(lat), us(bare), "—", fmt(median(lat) / median(bare))])

    n_tasks, n_rows = 600, 110
    Xs, ys_, gs = make_sinusoid_tasks(n_tasks=n_tasks, n_samples_per_task=n_rows, random_state=11)
    for steps in (1, 10):
        est.head_.set_params(adapt_steps=steps)

        def bare_score(steps=steps):
            x = torch.tensor(Xs, dtype=torch.float32).reshape(n_tasks, n_rows, 1)
            t = torch.tensor(ys_, dtype=torch.float32).reshape(n_tasks, n_rows, 1)

            def one(xs_, ys__, xq_):
                p = params
                for _ in range(steps):
                    g = support_grad(p, xs_, ys__)
                    p = {k: v - INNER_LR * g[k] for k, v in p.items()}
                return functional_call(net, p, (xq_,))

            with torch.no_grad():
                pred = vmap(one)(x[:, :N_SUPPORT], t[:, :N_SUPPORT], x[:, N_SUPPORT:])
                yq = t[:, N_SUPPORT:]
                ss_res = ((pred - yq) ** 2).sum()
                ss_tot = ((yq - yq.mean(dim=1, keepdim=True)) ** 2).sum()
            return 1 - float(ss_res / ss_tot)

        reps, bare = [], []
        for _ in range(args.score_reps):
            reps.append(timed(lambda: est.score(Xs, ys_, groups=gs)))
            bare.append(timed(bare_score))
        r2_ours, r2_bare = est.score(Xs, ys_, groups=gs), bare_score()
        rows.append(
            [
                f"score, {n_tasks} tasks × (10 support + 100 query), {steps} step(s)",
                f"{n_tasks / median(reps):,.0f} tasks/s",
                f"{n_tasks / median(bare):,.0f} tasks/s",
                "—",
                fmt(median(reps) / median(bare)) + f" (R² {r2_ours:.4f} vs {r2_bare:.4f})",
            ]
        )
    return rows


def batch_serving(args, data):
    """Rows of the batch table: new tasks per second of ``predict(X, groups=..., y_support=..., support=...)``
    against the per-task ``reset_adaptation`` / ``partial_adapt`` / ``predict`` loop."""
    n_tasks, rows_per_task = args.batch_tasks, N_SUPPORT + N_QUERY
    training = {MetaRegressor: data, MetaClassifier: make_classification_tasks(n_tasks=200, n_samples_per_task=30,
                                                                               random_state=0)}  # fmt: skip
    new_tasks = {
        MetaRegressor: make_sinusoid_tasks(n_tasks=n_tasks, n_samples_per_task=rows_per_task, random_state=13),
        MetaClassifier: make_classification_tasks(n_tasks=n_tasks, n_samples_per_task=rows_per_task, random_state=13),
    }
    rows = []
    for cls, (X, y, groups) in training.items():
        for head in (cls().head, "gradient"):
            est = cls(head=head, max_iter=args.serve_fit_iter, random_state=0).fit(X, y, groups=groups)
            batch, loop, agreement = _batch_and_loop(est, *new_tasks[cls], n_tasks, args)
            rows.append([cls.__name__, f'"{head}"', f"{n_tasks / batch:,.0f}", f"{n_tasks / loop:,.0f}",
                         fmt(loop / batch), agreement])  # fmt: skip
    return rows


def _batch_and_loop(est, X_new, y_new, groups_new, n_tasks, args):
    """Median seconds of the batch call and of the per-task loop (interleaved), and how their predictions agree."""
    rows_per_task = N_SUPPORT + N_QUERY
    support = np.tile(np.arange(rows_per_task) < N_SUPPORT, n_tasks)  # each task: its support rows, then queries

    def batch():
        return est.predict(X_new, groups=groups_new, y_support=y_new, support=support)

    def loop():
        out = np.empty(len(X_new), dtype=np.asarray(y_new).dtype)
        for start in range(0, len(X_new), rows_per_task):
            s, q = slice(start, start + N_SUPPORT), slice(start + N_SUPPORT, start + rows_per_task)
            out[q] = est.reset_adaptation().partial_adapt(X_new[s], y_new[s]).predict(X_new[q])
        return out

    times = [[], []]
    for round_ in range(args.warmup + args.batch_reps):
        seconds = timed(batch), timed(loop)
        if round_ >= args.warmup:
            for kept, value in zip(times, seconds):
                kept.append(value)
    query = ~support
    batch_out, loop_out = batch()[query], loop()[query]
    if isinstance(est, MetaRegressor):
        agreement = f"max abs diff {np.abs(batch_out - loop_out).max():.1e}"
    else:
        agreement = f"{np.mean(batch_out == loop_out):.2%} same labels"
    return median(times[0]), median(times[1]), agreement


# ----------------------------------------------------------------------
# Cost of the adaptation methods


# name -> arguments of Ours: "head" is GradientHead arguments on top of the grid's (a dict) or another head.
METHODS = {
    "MAML (all parameters)": {},
    "ANIL (adapt_params='head')": {"head": {"adapt_params": "head"}},
    "Bayesian ridge head (head='ridge', the default)": {"head": "ridge"},
    "ridge head, meta_objective='marginal_likelihood'": {"head": "ridge", "meta_objective": "marginal_likelihood"},
    "head-only damped Newton": {"head": {"adapt_params": "head", "inner_optimizer": newton()}},
}


def method_costs(args, data) -> list[list]:
    """Per-update time of each adaptation method's ``fit`` on the grid, interleaved, median over rounds."""
    rows = []
    cells = [cell for cell in grid_cells(args) if cell[2] == 25]  # meta-batch 25: the Newton step is slow
    rounds = min(args.rounds, 3)
    for n, fo, b in cells:
        impls = {name: Ours(n, fo, b, data, **kwargs) for name, kwargs in METHODS.items()}
        times = {name: [] for name in impls}
        for round_ in range(args.warmup + rounds):
            for name, impl in impls.items():
                seconds = impl.run(args.steps)
                if round_ >= args.warmup:
                    times[name].append(seconds / args.steps)
        maml = median(times["MAML (all parameters)"])
        row = [n, "first" if fo else "second", b]
        for name in impls:
            row += [f"{median(times[name]) * 1e3:.2f}", fmt(maml / median(times[name]), 2)]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------
# Profile of one fit


def profile_fit(args, data, tensors):
    """cProfile of one fit and of the bare step on the same cell, for finding where the time goes."""
    n, fo, b = args.profile_cell
    fo = bool(fo)
    impls = {
        "sklearn_meta fit": Ours(n, fo, b, data),
        "bare torch.func": BareTorchFunc(n, fo, b, TaskSampler(*tensors), make_net()),
    }
    buf = io.StringIO()
    for name, impl in impls.items():
        impl.run(3)
        prof = cProfile.Profile()
        prof.enable()
        seconds = timed(lambda impl=impl: impl.run(args.steps))
        prof.disable()
        buf.write(
            f"==== {name}: {args.steps} outer steps, {n} inner step(s), "
            f"{'first' if fo else 'second'} order, meta-batch {b}: {seconds * 1e3 / args.steps:.2f} ms "
            "per step under the profiler ====\n"
        )
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        buf.write("---- by cumulative time ----\n")
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
    return buf.getvalue()


# ----------------------------------------------------------------------


def plot(cells, keys, table, path):
    plt = try_pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        values = [table[cell][key] for cell in cells]
        ax.bar(np.arange(len(cells)) + j * width, values, width, label=LABELS[key])
    ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{n} step{'s' if n > 1 else ''}\n{'1st' if fo else '2nd'} order\nB={b}" for n, fo, b in cells])
    ax.set_yscale("log")
    ax.set_ylabel("meta-training tasks / second")
    ax.set_title("Meta-training throughput, MAML sinusoid (MLP 1-40-40-1), median over rounds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small settings: under a minute")
    parser.add_argument("--rounds", type=int, help="timed rounds (median is reported); default 7, quick 3")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (default 1)")
    parser.add_argument(
        "--steps",
        type=int,
        help="outer steps per timed run, vectorised implementations (= max_iter of each fit); default 50, quick 10",
    )
    parser.add_argument(
        "--loop-steps",
        type=int,
        help="outer steps per timed run of the per-task loop peers (higher, TorchOpt loop); default 5, quick 1",
    )
    parser.add_argument("--train-tasks", type=int, default=2000, help="tasks in the training set (20 rows each)")
    parser.add_argument("--calls", type=int, help="calls per latency measurement; default 2000, quick 300")
    parser.add_argument("--score-reps", type=int, help="repetitions of score(); default 9, quick 3")
    parser.add_argument("--serve-fit-iter", type=int, default=100, help="outer steps of the model used for serving")
    parser.add_argument("--batch-tasks", type=int, help="new tasks of the batch predict row; default 1000, quick 200")
    parser.add_argument("--batch-reps", type=int, help="repetitions of the batch predict row; default 3, quick 1")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, see README)")
    parser.add_argument(
        "--impls",
        nargs="+",
        default=list(PEERS),
        choices=list(PEERS),
        help="peers to time beside sklearn_meta (default: all)",
    )
    parser.add_argument(
        "--cells",
        nargs="+",
        metavar="STEPS:ORDER:B",
        help="only these grid cells, e.g. 1:so:25 5:fo:100 (so/fo = second/first order)",
    )
    parser.add_argument("--skip-check", action="store_true", help="skip the correctness checks")
    parser.add_argument("--skip-serving", action="store_true", help="skip partial_adapt / predict / score")
    parser.add_argument("--skip-throughput", action="store_true", help="skip the fit throughput grid against peers")
    parser.add_argument("--skip-methods", action="store_true", help="skip the cost of ANIL and the ridge head")
    parser.add_argument("--profile", action="store_true", help="also cProfile one fit (see --profile-cell)")
    parser.add_argument("--profile-cell", type=int, nargs=3, default=(1, 0, 25), metavar=("STEPS", "FIRST_ORDER", "B"))
    parser.add_argument("--output", default="speed", help="result name under benchmarks/results/")
    args = parser.parse_args(argv)
    defaults = dict(rounds=(3, 7), steps=(10, 50), loop_steps=(1, 5), calls=(300, 2000), score_reps=(3, 9),
                    batch_tasks=(200, 1000), batch_reps=(1, 3))  # fmt: skip
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")  # higher/torchopt deprecations
    started = time.perf_counter()

    data, tensors = training_data(args.train_tasks)
    status = peer_status()
    print("peers:", status, flush=True)
    sections = []

    if not args.skip_check:
        t = time.perf_counter()
        grad_rows = check_gradients(status, tensors)
        header = ["inner steps", "order", "meta-loss (engine)"] + [f"{LABELS[k]} vs engine" for k in PEERS]
        sections.append(
            "### Correctness: the same meta-gradient\n\n"
            "One batch of 8 tasks from one initialisation; each cell is max |g_impl − g_engine| / max |g_engine| "
            "over all parameters, where g_engine is `sklearn_meta.engine.meta_gradient` (what `fit` calls), and "
            "the meta-loss difference.\n\n" + markdown_table(header, grad_rows)
        )
        traj = check_trajectory(data)
        rows = [
            [
                k,
                v["updates"],
                f"{v['max |loss diff|']:.1e}",
                f"{v['max |param diff| after']:.1e}",
                f"{v['first/last loss'][0]:.4f} → {v['first/last loss'][1]:.4f}",
            ]
            for k, v in traj.items()
        ]
        sections.append(
            "### Correctness: the same trajectory\n\n`MetaRegressor.fit` with a callback recording each meta-batch; "
            "the bare torch.func step then replays those batches from the estimator's initialisation.\n\n"
            + markdown_table(
                ["setting", "updates", "max abs Δ meta-loss", "max abs Δ parameter at end", "meta-loss"], rows
            )
        )
        print("\n\n".join(sections), flush=True)
        print(f"checks: {time.perf_counter() - t:.1f} s", flush=True)

    if not args.skip_throughput:
        t = time.perf_counter()
        cells, keys, times = throughput(args, status, data, tensors)
        throughput_s = time.perf_counter() - t
        table, ratios, rows = {}, {}, []
        for cell in cells:
            table[cell] = {k: tasks_per_second(cell, k, times, args) for k in keys}
            per_update, overhead, ours_rounds = ours_per_update(cell, times, args)
            table[cell]["ours"] = per_update
            ratios[cell] = {k: paired_ratio(cell, k, times, args, ours_rounds) for k in keys[1:]}
            n, fo, b = cell
            row = [
                n,
                "first" if fo else "second",
                b,
                fmt(per_update),
                fmt(tasks_per_second(cell, "ours", times, args)),
                f"{overhead * 1e3:.0f}",
            ]
            for key in PEERS:
                row.append(fmt(table[cell][key]) if key in keys else "n/a")
            for key in PEERS:
                row.append(fmt(ratios[cell][key], 2) if key in keys else "n/a")
            rows.append(row)
        header = (
            [
                "inner steps",
                "order",
                "meta-batch",
                "sklearn_meta (per update)",
                "sklearn_meta (whole fit)",
                "fit overhead (ms)",
            ]
            + [LABELS[k] for k in PEERS]
            + [f"ours / {LABELS[k]}" for k in PEERS]
        )
        peers_line = "; ".join(f"{LABELS[k]}: {v}" for k, v in status.items())
        summary = ""
        if "bare" in keys:
            bare = [ratios[cell]["bare"] for cell in cells]
            within = all(r >= 0.8 for r in bare)  # time within 25% of the reference: throughput >= 1/1.25
            summary = (
                f"\n\nsklearn_meta's per-update throughput is {min(bare):.2f}–{max(bare):.2f}× the bare "
                f"torch.func step's (median over cells {median(bare):.2f}×): "
                + (
                    "within 25% of the reference in every cell."
                    if within
                    else "**more than 25% slower than the reference in at least one cell.**"
                )
            )
        throughput_md = (
            "### Meta-training throughput (tasks / second, median of "
            f"{args.rounds} rounds after {args.warmup} warm-up)\n\n"
            f"Outer steps per timed run: {args.steps} (sklearn_meta, bare torch.func, TorchOpt vmap), "
            f"{args.loop_steps} (higher, TorchOpt loop). "
            f"Training set: {args.train_tasks} tasks × {ROWS_PER_TASK} rows. "
            '"per update" subtracts the fixed cost of one `fit` call ("fit overhead": `fit` with `max_iter=0`); '
            '"whole fit" divides by the whole `fit` time. Ratios "ours / X" use the per-update number, taken '
            "within each round (paired, so that slow drifts of the machine's load cancel), median over rounds; "
            "> 1 means sklearn_meta is faster.\n\nPeers: "
            + peers_line
            + "\n\n"
            + markdown_table(header, rows)
            + summary
        )
        print(throughput_md, flush=True)
        sections.append(throughput_md)
        print(f"throughput: {throughput_s:.1f} s", flush=True)

    if not args.skip_serving:
        t = time.perf_counter()
        serve_rows = serving(args, data)
        serve_md = (
            "### Serving latency and score throughput\n\n"
            f"Median over {args.calls} calls (score: {args.score_reps} repetitions). The model is a `MetaRegressor` "
            f"fitted for {args.serve_fit_iter} updates. The bare reference is the same computation written "
            "directly in torch without input validation, timed interleaved with it: for `partial_adapt`, tensor "
            "conversion then SGD steps with `torch.func.grad` or with plain `torch.autograd.grad` on detached "
            "leaves; for `predict`, a forward pass; for `score`, a vmapped (`torch.func`) adapt + predict + pooled "
            "R². The last column is sklearn_meta's time over the faster bare version's (> 1: sklearn_meta is "
            "slower).\n\n"
            + markdown_table(
                [
                    "operation",
                    "sklearn_meta",
                    "bare torch.func",
                    "bare autograd.grad",
                    "sklearn_meta / fastest bare (time)",
                ],
                serve_rows,
            )
        )
        serve_md += (
            f"\n\n### Adapting to many new tasks in one call\n\n{args.batch_tasks} new tasks of {N_SUPPORT} "
            f"support + {N_QUERY} query rows, models fitted for {args.serve_fit_iter} updates (MLP 40-40; regression: "
            "sinusoids; classification: `make_classification_tasks`, 3 classes), median of "
            f"{args.batch_reps} repetitions. Batch: one `predict(X, groups=groups, y_support=y, support=support)` "
            "call over all rows (it predicts the support rows too). Loop: `reset_adaptation().partial_adapt("
            "X_support, y_support).predict(X_query)` per task. The last column compares their query-row "
            "predictions.\n\n"
            + markdown_table(
                [
                    "estimator",
                    "head",
                    "batch predict (tasks/s)",
                    "per-task loop (tasks/s)",
                    "speed-up",
                    "batch vs loop",
                ],
                batch_serving(args, data),
            )
        )
        print(serve_md, flush=True)
        sections.append(serve_md)
        print(f"serving: {time.perf_counter() - t:.1f} s", flush=True)

    if not args.skip_methods:
        t = time.perf_counter()
        header = ["inner steps", "order", "meta-batch"]
        for name in METHODS:
            header += [f"{name}: ms / update", "speed-up vs MAML"]
        methods_md = (
            "### Meta-training cost of the adaptation methods\n\n"
            f"`MetaRegressor.fit` per update (ms, median of {min(args.rounds, 3)} rounds of {args.steps} updates, the "
            "methods interleaved within each round), same network and meta-batches. ANIL adapts only the last "
            "layer (no inner gradient through the body); the Bayesian ridge head fits the last layer in closed "
            "form (inner steps and order do not apply to it).\n\n" + markdown_table(header, method_costs(args, data))
        )
        print(methods_md, flush=True)
        sections.append(methods_md)
        print(f"methods: {time.perf_counter() - t:.1f} s", flush=True)

    if args.profile:
        text = profile_fit(args, data, tensors)
        (RESULTS / f"{args.output}_profile.txt").parent.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.output}_profile.txt").write_text(text)
        print(text[:6000])

    png = None if args.skip_throughput else plot(cells, keys, table, RESULTS / f"{args.output}.png")
    elapsed = time.perf_counter() - started
    command = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (
        f"## Speed: MAML sinusoid meta-training\n\nCommand: `{command.strip()}` ({elapsed:.0f} s)\n\n"
        f"Machine: {machine_line()}\n\n" + "\n\n".join(sections) + "\n"
    )
    if png:
        text += f"\n![throughput]({png.name})\n"
    path = write_result(args.output, text)
    cells = [] if args.skip_throughput else cells
    raw = {f"{n}-{'fo' if fo else 'so'}-{b}": {k: v for k, v in times[(n, fo, b)].items()} for n, fo, b in cells}
    (RESULTS / f"{args.output}.json").write_text(json.dumps({"args": vars(args), "times_s": raw}, indent=1))
    print(f"wrote {path} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
