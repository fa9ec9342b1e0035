"""Few-shot sinusoid regression accuracy: the MAML / Meta-SGD protocol.

Protocol (Finn et al., 2017; Li et al., 2017): tasks are ``y = A sin(x - phi)``
with ``A ~ U[0.1, 5]``, ``phi ~ U[0, pi]``, ``x ~ U[-5, 5]``; the learner is an
MLP 1-40-40-1 with ReLU. Meta-training uses K support + K query points per task,
meta-batches of 25 tasks, one inner SGD step of size 0.01 and Adam with meta
learning rate 1e-3. Evaluation uses 600 new tasks with K support points and 100
query points; the table gives the query MSE (mean over tasks, with a 95%
interval: 1.96 standard errors) after 1 and 10 adaptation steps.

Rows: MAML (second order), first-order MAML, Meta-SGD and MAML with a
differentiable Adam inner loop, all ``sklearn_meta.MetaRegressor``; and two
baselines written in plain torch: a network pretrained on all training tasks
pooled (regression on every row, the same number of updates and rows per
update) then fine-tuned on the K points with SGD (step 0.01), and a network fitted on
the K points alone (from a random initialisation: SGD steps of size 0.01, and
Adam to convergence).

The training set is a fixed collection of ``--train-tasks`` tasks with
``--rows-per-task`` rows each; every meta-batch draws a fresh random K + K split
of a task's rows, which approximates the paper's freshly sampled tasks.

Usage::

    python benchmarks/accuracy.py                       # quick: 2,000 meta-iterations (~2-4 min on 2 cores)
    python benchmarks/accuracy.py --iterations 70000 --jobs 2   # the papers' length: ~1 h of CPU, ~35 min with 2 jobs
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from _common import RESULTS, machine_line, markdown_table, try_pyplot, write_result
from sklearn.base import clone
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.engine import adapt_tasks, predict_tasks
from sklearn_meta.heads import FunctionalNetwork, GradientHead

INNER_LR = 0.01
META_LR = 1e-3
MAX_STEPS = 10  # adaptation steps evaluated: 0 .. MAX_STEPS

# name -> (label, GradientHead arguments besides inner_lr and inner_steps)
METHODS = {
    "maml": ("MAML (second order)", dict(inner_optimizer="sgd", first_order=False)),
    "fomaml": ("first-order MAML", dict(inner_optimizer="sgd", first_order=True)),
    "metasgd": ("Meta-SGD", dict(inner_optimizer="meta-sgd", first_order=False)),
    "adam": ("MAML, Adam inner loop", dict(inner_optimizer="adam", first_order=False)),
}
BASELINES = {
    "pretrained": "pretrained on all tasks, fine-tuned (SGD 0.01)",
    "scratch_sgd": "K points alone, random init (SGD 0.01)",
    "scratch_adam": "K points alone, random init, Adam to convergence †",
}

# Li et al. (2017), "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", Table 1:
# sinusoid regression, MSE (95% confidence interval) after one adaptation step.
PUBLISHED = {
    "maml": {5: (0.686, 0.070), 10: (0.435, 0.039), 20: (0.228, 0.020)},
    "metasgd": {5: (0.482, 0.061), 10: (0.258, 0.026), 20: (0.127, 0.013)},
}


def make_net(seed: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def training_set(args, k: int):
    rows = max(args.rows_per_task, 2 * k)
    X, y, groups = make_sinusoid_tasks(n_tasks=args.train_tasks, n_samples_per_task=rows, random_state=args.seed)
    return X, y, groups, rows


def test_set(args, k: int):
    """``(x_support, y_support, x_query, y_query)`` as float32 tensors of shape (tasks, rows, 1)."""
    n = args.eval_tasks
    X, y, _ = make_sinusoid_tasks(n_tasks=n, n_samples_per_task=k + args.query, random_state=args.seed + 1000 + k)
    X = torch.tensor(X, dtype=torch.float32).reshape(n, k + args.query, 1)
    y = torch.tensor(y, dtype=torch.float32).reshape(n, k + args.query, 1)
    return X[:, :k], y[:, :k], X[:, k:], y[:, k:]


# ----------------------------------------------------------------------
# Training one cell (a method and a K); runs in a worker process with --jobs


def train_cell(args, method: str, k: int):
    torch.set_num_threads(args.threads)
    X, y, groups, _ = training_set(args, k)
    start = time.perf_counter()
    if method in METHODS:
        est = MetaRegressor(
            hidden_layer_sizes=(40, 40),
            activation="relu",  # the papers' network; MetaRegressor defaults to tanh
            head=GradientHead(inner_lr=INNER_LR, inner_steps=1, **METHODS[method][1]),
            meta_lr=META_LR,
            meta_batch_size=args.meta_batch,
            n_support=k,
            n_query=k,
            max_iter=args.iterations,
            random_state=args.seed,
        ).fit(X, y, groups=groups)
        model, final = est, float(np.mean(est.loss_curve_[-100:]))
    else:  # "pretrained": plain regression on the pooled rows of every task
        model, final = pretrain(args, X, y, groups, k)
    return method, k, model, time.perf_counter() - start, final


def pretrain(args, X, y, groups, k):
    """Supervised regression on all tasks pooled: as many updates and rows per update as meta-training."""
    net = make_net(args.seed)
    opt = torch.optim.Adam(net.parameters(), lr=META_LR)
    Xt = torch.tensor(X, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
    generator = torch.Generator().manual_seed(args.seed)
    batch_rows = args.meta_batch * 2 * k
    losses = []
    for _ in range(args.iterations):
        idx = torch.randint(len(Xt), (batch_rows,), generator=generator)
        loss = F.mse_loss(net(Xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return net, float(np.mean(losses[-100:]))


# ----------------------------------------------------------------------
# Evaluation: query MSE per task after 0..MAX_STEPS adaptation steps


def _per_task_mse(pred, yq):
    return ((pred - yq) ** 2).mean(dim=(1, 2)).numpy()


def _functional(est: MetaRegressor) -> FunctionalNetwork:
    """The fitted network as the engine takes it (what ``score`` adapts)."""
    network = est.module_.network
    return FunctionalNetwork(network, dict(network.named_buffers()), F.mse_loss)


def _with_steps(est: MetaRegressor, steps: int):
    """A copy of the fitted head that adapts with ``steps`` inner steps."""
    return clone(est.head_).set_params(adapt_steps=steps)


def evaluate_estimator(est: MetaRegressor, test) -> np.ndarray:
    """(MAX_STEPS + 1, tasks) query MSE, all tasks adapted at once with the engine `score` uses."""
    xs, ys, xq, yq = test
    network = _functional(est)
    params, meta = est.module_.init_params(), est.module_.head_meta()
    out = []
    for steps in range(MAX_STEPS + 1):
        adapted = adapt_tasks(network, _with_steps(est, steps), params, meta, xs, ys)
        out.append(_per_task_mse(predict_tasks(network, adapted, xq), yq))
    return np.stack(out)


def check_public_api(est: MetaRegressor, test, n_tasks: int) -> tuple[dict, int]:
    """Compare ``partial_adapt`` + ``predict``, task by task, with the vectorised evaluation.

    Returns the largest relative difference of the predictions for 1 and for
    MAX_STEPS steps (tasks whose adaptation stays below 1e3), and how many
    (task, steps) pairs disagreed about divergence: ``partial_adapt`` must refuse
    (ValueError) exactly where the vectorised adaptation gives non-finite parameters.
    """
    xs, ys, xq, yq = test
    network = _functional(est)
    params, meta = est.module_.init_params(), est.module_.head_meta()
    est = copy.deepcopy(est)
    worst, mismatched = {1: 0.0, MAX_STEPS: 0.0}, 0
    for steps in (1, MAX_STEPS):
        adapted = adapt_tasks(network, _with_steps(est, steps), params, meta, xs[:n_tasks], ys[:n_tasks])
        finite = torch.stack([torch.isfinite(v).flatten(1).all(dim=1) for v in adapted.values()]).all(dim=0)
        vectorised = predict_tasks(network, adapted, xq[:n_tasks]).numpy()
        est.head_.set_params(adapt_steps=steps)  # the fitted model's head: no refit
        for t in range(n_tasks):
            try:
                est.reset_adaptation().partial_adapt(xs[t].numpy(), ys[t].numpy().ravel())
            except ValueError:  # non-finite adaptation: refused, the model is left as it was
                mismatched += bool(finite[t])
                continue
            mismatched += not bool(finite[t])
            pred, ref = est.predict(xq[t].numpy()), vectorised[t].ravel()
            if np.abs(ref).max() < 1e3:  # diverging (finite but huge) adaptations amplify rounding differences
                diff = float((np.abs(pred - ref) / np.maximum(1.0, np.abs(ref))).max())
                worst[steps] = max(worst[steps], diff)
    return worst, mismatched


def _sgd_curve(net_forward, params, test, steps_max=MAX_STEPS, batched=False):
    """Query MSE after 0..steps_max SGD steps (size INNER_LR) on each task's support rows."""
    xs, ys, xq, yq = test

    def loss(p, x, y):
        return F.mse_loss(net_forward(p, x), y)

    def one(p, x_s, y_s, x_q, steps):
        for _ in range(steps):
            g = grad(loss)(p, x_s, y_s)
            p = {k: v - INNER_LR * g[k] for k, v in p.items()}
        return net_forward(p, x_q)

    out = []
    with torch.no_grad():
        for steps in range(steps_max + 1):
            in_dims = (0 if batched else None, 0, 0, 0, None)
            pred = vmap(one, in_dims=in_dims)(params, xs, ys, xq, steps)
            out.append(_per_task_mse(pred, yq))
    return np.stack(out)


def evaluate_pretrained(net: nn.Module, test) -> np.ndarray:
    params = {k: v.detach() for k, v in net.named_parameters()}
    return _sgd_curve(lambda p, x: functional_call(net, p, (x,)), params, test)


def evaluate_scratch(args, test, k):
    """Fresh random networks, one per task: SGD curve, and Adam to convergence (full batch)."""
    n = test[0].shape[0]
    nets = [make_net(args.seed + 10_000 + i) for i in range(n)]
    params, _ = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")

    def forward(p, x):
        return functional_call(base, p, (x,))

    sgd = _sgd_curve(forward, params, test, batched=True)
    xs, ys, xq, yq = test
    params = {k_: v.detach().clone().requires_grad_() for k_, v in params.items()}
    opt = torch.optim.Adam(params.values(), lr=args.scratch_lr)
    for _ in range(args.scratch_steps):
        # Summed over tasks: each task's parameters get exactly its own gradient (Adam is element-wise).
        loss = ((vmap(forward)(params, xs) - ys) ** 2).mean(dim=(1, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        converged = _per_task_mse(vmap(forward)(params, xq), yq)
    return sgd, converged


# ----------------------------------------------------------------------


def interval(mse: np.ndarray) -> tuple[float, float]:
    return float(mse.mean()), float(1.96 * mse.std(ddof=1) / np.sqrt(len(mse)))


def fmt_ci(mse: np.ndarray) -> str:
    bad = int((~np.isfinite(mse)).sum())
    if bad:
        return f"diverges ({bad}/{len(mse)} tasks non-finite)"
    mean, half = interval(mse)
    if mean > 1e3:
        return f"diverges (mean {mean:.1e})"
    return f"{mean:.3f} ± {half:.3f}"


def plot(curves, shots, path):
    plt = try_pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(shots), figsize=(4.2 * len(shots), 4.6), sharey=True, squeeze=False)
    lowest = np.inf
    for ax, k in zip(axes[0], shots):
        for key, label in [(m, METHODS[m][0]) for m in METHODS] + list(BASELINES.items()):
            if (key, k) not in curves or key == "scratch_adam":
                continue
            with np.errstate(all="ignore"):
                mean = curves[(key, k)].mean(axis=1)
            mean = np.where(np.isfinite(mean) & (mean < 1e3), mean, np.nan)  # diverged: off the plot
            lowest = min(lowest, np.nanmin(mean))
            ax.plot(range(MAX_STEPS + 1), mean, marker=".", label=label)
        if ("scratch_adam", k) in curves:
            ax.axhline(curves[("scratch_adam", k)].mean(), color="grey", ls=":", label=BASELINES["scratch_adam"])
        for key, marker in (("maml", "x"), ("metasgd", "+")):
            if k in PUBLISHED[key]:
                mean, half = PUBLISHED[key][k]
                lowest = min(lowest, mean - half)
                ax.errorbar(
                    [1],
                    [mean],
                    yerr=[half],
                    fmt=marker,
                    color="black",
                    capsize=3,
                    label=f"{METHODS[key][0]}, Li et al. 2017",
                )
        ax.set_yscale("log")
        ax.set_xlabel("adaptation steps")
        ax.set_title(f"K = {k}")
    axes[0][0].set_ylim(lowest * 0.8, 20)
    axes[0][0].set_ylabel(f"query MSE (mean over {curves[next(iter(curves))].shape[-1]} tasks)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--iterations",
        type=int,
        default=2000,
        help="meta-iterations per model (default 2000, a quick run; the papers use 70000)",
    )
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20], help="K values (default 5 10 20)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--no-baselines", action="store_true", help="skip the pretrained and K-points-alone rows")
    parser.add_argument("--meta-batch", type=int, default=25, help="tasks per meta-update (default 25)")
    parser.add_argument("--train-tasks", type=int, default=10000, help="tasks in the training set")
    parser.add_argument("--rows-per-task", type=int, default=50, help="rows per training task (at least 2K)")
    parser.add_argument("--eval-tasks", type=int, default=600, help="new tasks for evaluation (default 600)")
    parser.add_argument("--query", type=int, default=100, help="query points per evaluation task (default 100)")
    parser.add_argument("--scratch-steps", type=int, default=1000, help="Adam steps of the K-points-alone fit")
    parser.add_argument("--scratch-lr", type=float, default=1e-2, help="Adam step size of the K-points-alone fit")
    parser.add_argument(
        "--check-tasks",
        type=int,
        default=30,
        help="tasks on which partial_adapt + predict are checked against the vectorised evaluation",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="train cells in parallel processes (default 1)")
    parser.add_argument("--output", default="accuracy", help="result name under benchmarks/results/")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    cells = [(m, k) for k in args.shots for m in args.methods]
    if not args.no_baselines:
        cells += [("pretrained", k) for k in args.shots]
    print(f"training {len(cells)} models for {args.iterations} iterations each", flush=True)
    if args.jobs > 1:
        from joblib import Parallel, delayed

        trained = Parallel(n_jobs=args.jobs, verbose=10)(delayed(train_cell)(args, m, k) for m, k in cells)
    else:
        trained = []
        for m, k in cells:
            trained.append(train_cell(args, m, k))
            print(f"  {m:10s} K={k:2d}: {trained[-1][3]:7.1f} s, final meta-loss {trained[-1][4]:.4f}", flush=True)

    curves, train_rows, check = {}, [], {}
    t_eval = time.perf_counter()
    tests = {k: test_set(args, k) for k in args.shots}
    for method, k, model, seconds, final in trained:
        if method in METHODS:
            curves[(method, k)] = evaluate_estimator(model, tests[k])
            if args.check_tasks:
                check[(method, k)] = check_public_api(model, tests[k], args.check_tasks)
            label, iters = METHODS[method][0], model.n_iter_
        else:
            curves[(method, k)] = evaluate_pretrained(model, tests[k])
            label, iters = BASELINES[method], args.iterations
        train_rows.append(
            [label, k, f"{iters:,}", f"{seconds:.1f}", f"{args.meta_batch * iters / seconds:,.0f}", f"{final:.4f}"]
        )
    if not args.no_baselines:
        for k in args.shots:
            curves[("scratch_sgd", k)], curves[("scratch_adam", k)] = evaluate_scratch(args, tests[k], k)
    eval_seconds = time.perf_counter() - t_eval

    header = ["method"]
    for k in args.shots:
        header += [f"K={k}, 1 step", f"K={k}, 10 steps"]
    header.append("published, 1 step (K=" + " / ".join(str(k) for k in args.shots) + ")")
    rows = []
    for key, label in [(m, METHODS[m][0]) for m in args.methods] + (
        [] if args.no_baselines else list(BASELINES.items())
    ):
        row = [label]
        for k in args.shots:
            c = curves[(key, k)]
            if key == "scratch_adam":
                row += [fmt_ci(c), fmt_ci(c)]
            else:
                row += [fmt_ci(c[1]), fmt_ci(c[MAX_STEPS])]
        pub = PUBLISHED.get(key, {})
        row.append(
            " / ".join(f"{pub[k][0]:.3f} ± {pub[k][1]:.3f}" if k in pub else "—" for k in args.shots) if pub else "—"
        )
        rows.append(row)

    plot_path = plot(curves, args.shots, RESULTS / f"{args.output}.png")
    elapsed = time.perf_counter() - started
    command = "python benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    check_line = ""
    if check:
        mismatches = sum(v[1] for v in check.values())
        check_line = (
            f"\n\nPublic-API check: on the first {args.check_tasks} evaluation tasks, `partial_adapt` + `predict` "
            f"(adapt_steps 1 and 10) reproduce the vectorised evaluation: largest relative difference of the "
            f"predictions {max(v[0][1] for v in check.values()):.1e} after 1 step and "
            f"{max(v[0][MAX_STEPS] for v in check.values()):.1e} after 10 steps (tasks whose predictions stay "
            "below 1e3; an unstable inner iteration, such as Meta-SGD's learned rates run for 10 steps, amplifies "
            "float32 rounding differences between the vectorised and the one-task path); "
            "`partial_adapt` refused (non-finite adaptation) "
            f"exactly where the vectorised adaptation diverged: "
            + ("yes." if not mismatches else f"NO, {mismatches} mismatches.")
        )
    text = (
        "## Accuracy: few-shot sinusoid regression (MAML / Meta-SGD protocol)\n\n"
        f"Command: `{command.strip()}` ({elapsed:.0f} s; evaluation {eval_seconds:.0f} s)\n\n"
        f"Machine: {machine_line()}\n\n"
        f"Query MSE on {args.eval_tasks} new tasks (K support + {args.query} query points each), mean ± 95% interval "
        f"(1.96 standard errors over tasks), after 1 and 10 adaptation steps. Meta-training: {args.iterations:,} "
        f"meta-iterations of {args.meta_batch} tasks, K support + K query points per task, one inner step "
        f"(step size {INNER_LR}), Adam meta lr {META_LR}; training set {args.train_tasks:,} tasks × "
        f"{args.rows_per_task} rows (a fresh random split each draw). "
        + (
            "**These are quick-run numbers, far shorter than the papers' 70,000 iterations: do not compare them "
            "with the published column.** "
            if args.iterations < 70000
            else ""
        )
        + "Published: Li et al. (2017), Meta-SGD, Table 1 (one adaptation step, 70,000 iterations).\n\n"
        "† trained to convergence on the K points (full-batch Adam, "
        f"{args.scratch_steps} steps, lr {args.scratch_lr}): the same number in both columns.\n\n"
        + markdown_table(header, rows)
        + "\n\n### Training cost per cell\n\n"
        + markdown_table(
            ["model", "K", "iterations", "wall time (s)", "tasks / s", "final train loss (mean of last 100)"],
            train_rows,
        )
        + check_line
        + "\n"
    )
    if plot_path:
        text += f"\n![MSE against adaptation steps]({plot_path.name})\n"
    path = write_result(args.output, text)
    with np.errstate(all="ignore"):
        raw = {
            f"{key}-K{k}": [x if np.isfinite(x) else None for x in np.atleast_1d(c.mean(axis=-1)).tolist()]
            for (key, k), c in curves.items()
        }
    (RESULTS / f"{args.output}.json").write_text(json.dumps({"args": vars(args), "mean_mse_by_steps": raw}, indent=1))
    print(text)
    print(f"wrote {path} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
