"""Few-shot classification of novel digits: EpisodicClassifier against classifiers fitted on the few rows.

Protocol (the standard N-way K-shot episodes, on scikit-learn's 8x8 digits as
``load_digits`` returns them, pixel values 0-16, unscaled): an
``EpisodicClassifier(n_way=3, k_shot=K)`` is meta-trained on the images of the
digits 0-6 only. It then meets the digits 7, 8 and 9, never seen in
meta-training: each of ``--episodes`` episodes draws K support images and 15
query images of each of the three, ``reset_adaptation().partial_adapt`` on the
support images, and scores the query images. Baselines fitted on the same
support images of the same episodes: ``LogisticRegression`` (default
arguments), 1-nearest neighbour and ``NearestCentroid``.

Reported, per K in (1, 5): the query accuracy averaged over episodes, with a
95% interval ``mean ± 1.96 sd / sqrt(n)`` over the episodes of all seeds
(each seed is one meta-training and its own episodes), the lowest seed's mean
and the wall time per seed (meta-training plus every episode). Chance is 1/3.

Run: ``python benchmarks/digits_episodes.py`` (3 seeds, 600 episodes per
seed and K); ``--quick`` is a smoke run. ``python benchmarks/real_data.py``
runs it too, after the regression tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch
from _common import RESULTS, machine_line, markdown_table, write_result
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

from sklearn_meta import EpisodicClassifier
from sklearn_meta.heads import GradientHead
from sklearn_meta.modules import ConvNet

NOVEL = (7, 8, 9)
N_QUERY = 15  # query images per class and episode
SHOTS = (1, 5)
DEFAULT_MAX_ITER = 1000  # the estimator's default
QUICK_MAX_ITER = 20


#: EpisodicClassifier configurations: a name and the arguments that differ from
#: EpisodicClassifier(n_way=3, k_shot=K, max_iter=--max-iter) (a configuration may set its own max_iter).
CONFIGS: dict[str, dict] = {
    "default": {},  # head="ridge" (R2-D2) on the pixels: no hidden layer, a meta-learned penalty and logit scale
    "CNN body, ridge head": {"module": ConvNet, "max_iter": 300},
    "CNN body, ridge head, 100 updates": {"module": ConvNet, "max_iter": 100},  # examples/few_shot_digits.py
    "MLP body (40, 40)": {"hidden_layer_sizes": (40, 40)},  # the default until 0.2: dense bodies overfit 0-6
    "MLP body (200,)": {"hidden_layer_sizes": (200,)},
    "prototypes, MLP body (40, 40)": {"head": "prototypes", "hidden_layer_sizes": (40, 40)},
    "gradient head (MAML, 5 steps), MLP body (40, 40)": {
        "head": GradientHead(inner_lr=0.5, inner_steps=5),
        "hidden_layer_sizes": (40, 40),
        "max_iter": 500,
    },
}
BASELINES = {
    "LogisticRegression": lambda: LogisticRegression(max_iter=1000),
    "1-NN": lambda: KNeighborsClassifier(n_neighbors=1),
    "NearestCentroid": NearestCentroid,
}


def episodes(y: np.ndarray, k: int, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` episodes of ``k`` support and ``N_QUERY`` query rows of each novel class (row indices)."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        support, query = [], []
        for digit in NOVEL:
            rows = rng.permutation(np.flatnonzero(y == digit))
            support.extend(rows[:k])
            query.extend(rows[k : k + N_QUERY])
        out.append((np.array(support), np.array(query)))
    return out


def run_seed(X, y, seed: int, k: int, n_episodes: int, configs: dict, max_iter: int, quick: bool) -> dict[str, dict]:
    """Accuracy of every method on every episode of one seed, and its wall time."""
    train = y <= 6
    tasks = episodes(y, k, n_episodes, seed=1000 + seed)
    results = {}
    for name, make in BASELINES.items():
        start = time.perf_counter()
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            # NearestCentroid on one row per class: its shrinkage statistics divide by zero (unused here)
            warnings.simplefilter("ignore")
            scores = [np.mean(make().fit(X[s], y[s]).predict(X[q]) == y[q]) for s, q in tasks]
        results[name] = {"accuracy": scores, "seconds": time.perf_counter() - start}
    for name, config in configs.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            settings = {"n_way": 3, "k_shot": k, "max_iter": max_iter, "random_state": seed, **config}
            if quick:  # a smoke run: every configuration at the quick max_iter
                settings["max_iter"] = max_iter
            clf = EpisodicClassifier(**settings)
            clf.fit(X[train], y[train])
        scores = [np.mean(clf.reset_adaptation().partial_adapt(X[s], y[s]).predict(X[q]) == y[q]) for s, q in tasks]
        results[name] = {"accuracy": scores, "seconds": time.perf_counter() - start}
    return results


def table(per_seed: list[dict], k: int) -> str:
    rows = []
    for name in per_seed[0]:
        scores = np.concatenate([r[name]["accuracy"] for r in per_seed])
        half = 1.96 * scores.std(ddof=1) / np.sqrt(len(scores))
        lowest = min(np.mean(r[name]["accuracy"]) for r in per_seed)
        seconds = np.mean([r[name]["seconds"] for r in per_seed])
        rows.append([name, f"{scores.mean():.3f} ± {half:.3f}", f"{lowest:.3f}", f"{seconds:.3g}"])
    header = ["method", f"accuracy, 3-way {k}-shot", "lowest seed", "time per seed (s)"]
    return markdown_table(header, rows)


def _describe(config: dict) -> dict:
    return {k: getattr(v, "__name__", v) for k, v in config.items()}


def report(results: dict, args, configs: dict, max_iter: int, elapsed: float, command: str) -> str:
    lines = [
        "## Few-shot classification of novel digits (3-way, meta-trained on 0-6, tested on 7-9)",
        "",
        f"Command: `{command}` ({elapsed:.0f} s)",
        "",
        f"Machine: {machine_line()}",
        "",
        f"{args.seeds} seed(s) × {args.episodes} episodes per K; {N_QUERY} query images per class; raw pixels "
        f"(0-16). EpisodicClassifier: `EpisodicClassifier(n_way=3, k_shot=K, max_iter={max_iter}, random_state=seed, "
        "**config)`, one meta-training per seed and K. See the docstring of `benchmarks/digits_episodes.py`.",
        "",
        "Configurations:",
        "",
        *[f"- `{name}`: `{_describe(config)}`" for name, config in configs.items()],
    ]
    for k, per_seed in results.items():
        lines += ["", f"### {k}-shot", "", table(per_seed, k)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"1 seed, 50 episodes, max_iter {QUICK_MAX_ITER}")
    parser.add_argument("--seeds", type=int, default=None, help="meta-trainings per K (default 3)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per seed and K (default 600)")
    parser.add_argument("--max-iter", type=int, default=None, help=f"default {DEFAULT_MAX_ITER}")
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--output", default="digits_episodes", help="result name under benchmarks/results/")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.episodes = args.episodes or (50 if args.quick else 600)
    max_iter = args.max_iter or (QUICK_MAX_ITER if args.quick else DEFAULT_MAX_ITER)
    configs = {name: CONFIGS[name] for name in args.configs}
    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    started = time.perf_counter()
    results = {}
    for k in args.shots:
        results[k] = []
        for seed in range(args.seeds):
            results[k].append(run_seed(X, y, seed, k, args.episodes, configs, max_iter, args.quick))
            print(f"{k}-shot, seed {seed}: " + ", ".join(
                f"{name} {np.mean(r['accuracy']):.3f}" for name, r in results[k][-1].items()), flush=True)  # fmt: skip
    command = "python benchmarks/digits_episodes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results, args, configs, max_iter, time.perf_counter() - started, command)
    print(text)
    path = write_result(args.output, text)
    summary = {
        str(k): {name: [float(np.mean(r[name]["accuracy"])) for r in per_seed] for name in per_seed[0]}
        for k, per_seed in results.items()
    }
    (RESULTS / f"{args.output}.json").write_text(json.dumps({"machine": machine_line(), "accuracy": summary}, indent=1))
    print(f"written to {path}")
    return text


if __name__ == "__main__":
    main()
