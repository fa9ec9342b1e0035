"""The prototype of ``meta_objective="marginal_likelihood"``: meta-training by every group's full marginal likelihood.

Kept to reproduce ``results/marginal_likelihood*.md``; the package's version
(``MetaRegressor(meta_objective="marginal_likelihood")``, run by
``real_data.py``'s ``marginal likelihood`` configurations) differs in its
prior: normal-inverse-gamma, so each group's noise variance is integrated
out too, where this prototype learns one noise variance shared by all groups.

The question (issue 9): can a body plus a Bayesian linear head beat
statsmodels' ``MixedLM`` on the multilevel data of ``real_data.py`` if it
is trained the way a mixed model is fitted, on the exact log marginal
likelihood of *all* rows of *every* training group, instead of episodes of
``n_support`` + ``n_query`` rows from the groups large enough for them?

The model: features ``phi(x) = [body(x), 1]`` (a tanh MLP, or none), weights
``w ~ N(m0, S)`` per group with ``S = L L'`` (full, learned), noise variance
``s2`` (learned). Training: Adam, full batch, on ``-log N(y_g | Phi_g m0,
s2 I + Phi_g S Phi_g')`` summed over training groups (padded to the largest
group and masked, so groups of any size count), per row. Prediction for a
new group: the posterior mean of ``w`` given its K revealed rows. With no
body this is the objective of a mixed model with random effects on every
coefficient (ML, not REML).

The protocol, splits, revealed rows, standardisation, ``MixedLM`` fit and
scoring are ``real_data.py``'s own functions, so the numbers sit beside its
tables. Reported per data set and body: the mean over seeds of the ratio to
MixedLM's query MSE, the paired difference with a 95% t interval, the
coverage of the 95% predictive intervals and the seconds per fit.

Usage::

    python benchmarks/marginal_likelihood.py            # 4 data sets, 3 bodies, 5 seeds, K = 5: ~6 min
    python benchmarks/marginal_likelihood.py --quick    # radon and Milk, 2 seeds, 100 steps
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from _common import machine_line, markdown_table, t_half_width, write_result
from real_data import DATASETS, fit_mixedlm, mixedlm_predict, reveal, score, standardised_split

BODIES = {"none": (), "tanh (16,)": (16,), "tanh (40, 40)": (40, 40)}


def padded_groups(X, y, groups, labels):
    """Every group's rows as one (groups, largest group, features) tensor, its targets and a 0/1 row mask."""
    rows = [np.flatnonzero(groups == label) for label in labels]
    n = max(len(r) for r in rows)
    Xp, yp, mask = np.zeros((len(rows), n, X.shape[1])), np.zeros((len(rows), n)), np.zeros((len(rows), n))
    for i, r in enumerate(rows):
        Xp[i, : len(r)], yp[i, : len(r)], mask[i, : len(r)] = X[r], y[r], 1
    return (torch.tensor(a, dtype=torch.float64) for a in (Xp, yp, mask))


class BayesianLastLayer(torch.nn.Module):
    def __init__(self, n_features: int, hidden: tuple, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        layers, width = [], n_features
        for h in hidden:
            layers += [torch.nn.Linear(width, h, dtype=torch.float64), torch.nn.Tanh()]
            width = h
        self.body = torch.nn.Sequential(*layers)
        size = width + 1
        self.prior_mean = torch.nn.Parameter(torch.zeros(size, dtype=torch.float64))
        self.prior_factor = torch.nn.Parameter(0.3 * torch.eye(size, dtype=torch.float64))
        self.log_noise = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def features(self, X):
        f = self.body(X)
        return torch.cat([f, torch.ones_like(f[..., :1])], -1)

    def prior_cov(self):
        L = torch.tril(self.prior_factor)
        return L @ L.T + 1e-6 * torch.eye(len(L), dtype=L.dtype)

    def nll_per_row(self, X, y, mask):
        """Minus the log marginal likelihood of every group's rows, summed, per row (Woodbury form)."""
        P = self.features(X) * mask[..., None]
        r = (y - P @ self.prior_mean) * mask
        s2, S, n = self.log_noise.exp(), self.prior_cov(), mask.sum(1)
        precision = torch.linalg.inv(S) + P.transpose(1, 2) @ P / s2  # the posterior precision of w
        chol = torch.linalg.cholesky(precision)
        b = (P.transpose(1, 2) @ r[..., None]).squeeze(-1) / s2
        quad = (r * r).sum(1) / s2 - (b * torch.cholesky_solve(b[..., None], chol).squeeze(-1)).sum(1)
        logdet = n * torch.log(s2) + 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1) + torch.logdet(S)
        return 0.5 * (quad + logdet).sum() / n.sum()

    @torch.no_grad()
    def predict(self, X_s, y_s, X_q):
        P, Q = self.features(X_s), self.features(X_q)
        s2, S = self.log_noise.exp(), self.prior_cov()
        precision = torch.linalg.inv(S) + P.T @ P / s2
        cov = torch.linalg.inv(precision)
        mean = cov @ (torch.linalg.solve(S, self.prior_mean) + P.T @ y_s / s2)
        return (Q @ mean).numpy(), ((Q @ cov * Q).sum(1) + s2).sqrt().numpy()


def run_seed(X_raw, y_raw, groups, seed, k, bodies, steps, lr):
    train_labels, new_labels, train, X, y = standardised_split(X_raw, y_raw, groups, seed)
    tasks = reveal(groups, new_labels, k, seed)
    mixed, *_ = fit_mixedlm(X[train], y[train], groups[train])
    out = {"MixedLM": {**score([mixedlm_predict(mixed, X[s], y[s], X[q]) for s, q in tasks], tasks, y), "seconds": 0}}
    data = list(padded_groups(X, y, groups, train_labels))
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    for body, hidden in bodies.items():
        start = time.perf_counter()
        model = BayesianLastLayer(X.shape[1], hidden, seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            model.nll_per_row(*data).backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        outputs = [model.predict(as_tensor(X[s]), as_tensor(y[s]), as_tensor(X[q])) for s, q in tasks]
        out[body] = {**score(outputs, tasks, y), "seconds": seconds}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="radon and Milk, 2 seeds, 100 steps")
    parser.add_argument("--datasets", nargs="+", default=["radon", "MathAchieve", "Milk", "gapminder"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--k", type=int, default=5, help="revealed rows per new group (default 5)")
    parser.add_argument("--steps", type=int, default=500, help="full-batch Adam steps (default 500)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--output", default="marginal_likelihood")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.seeds, args.steps = ["radon", "Milk"], 2, 100
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    rows = []
    for name in args.datasets:
        data = DATASETS[name].load()
        per_seed = [run_seed(*data, seed, args.k, BODIES, args.steps, args.lr) for seed in range(args.seeds)]
        ref = np.array([s["MixedLM"]["mse"] for s in per_seed])
        for body in ["MixedLM", *BODIES]:
            mse = np.array([s[body]["mse"] for s in per_seed])
            diff = mse - ref
            half = t_half_width(diff)
            coverage = np.mean([s[body]["coverage"] for s in per_seed])
            rows.append(
                [
                    name,
                    body,
                    f"{mse.mean():.3f}",
                    f"{np.mean(mse / ref):.3f}",
                    "—" if body == "MixedLM" else f"{diff.mean():+.3f} ± {half:.3f}",
                    f"{coverage:.3f}",
                    "—" if body == "MixedLM" else f"{np.mean([s[body]['seconds'] for s in per_seed]):.1f}",
                ]
            )
            print(" | ".join(map(str, rows[-1])), flush=True)
    command = "python benchmarks/marginal_likelihood.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (
        "## Prototype: a Bayesian last layer trained by every group's marginal likelihood, against MixedLM\n\n"
        f"Command: `{command.strip()}` ({time.perf_counter() - started:.0f} s)\n\n"
        f"Machine: {machine_line()}\n\n"
        f"K = {args.k} revealed rows per new group, seeds 0-{args.seeds - 1}, {args.steps} full-batch Adam steps "
        f"(lr {args.lr}). The splits, revealed rows, standardisation, MixedLM and scoring are `real_data.py`'s. "
        "Query MSE in standardised units, mean over seeds; `÷ MixedLM`: mean of per-seed ratios; `− MixedLM`: "
        "paired difference with a 95% t interval over seeds. "
        "The prototype of `meta_objective='marginal_likelihood'`: see the docstring.\n\n"
        + markdown_table(
            ["data set", "model", "query MSE", "÷ MixedLM", "− MixedLM", "95% coverage", "s per fit"], rows
        )
        + "\n"
    )
    path = write_result(args.output, text)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
