"""Meta-training cost per update of the classification heads, side by side in one process.

``MetaClassifier.fit`` on grouped tasks (``make_classification_tasks``: 3
classes, 2 features, 200 groups of 40 rows; ``n_support=5``; meta-batch 25),
for each head and objective, with no body (the default) and with an MLP body
``(32,)``. The cost of an update is the difference of two fits (40 and 10
updates) over 30, so that set-up and validation are not counted; the median of
3 rounds, the heads interleaved within each round. Reported as ratios to the
ridge head (the classifier's head until 0.3).

Run: ``python benchmarks/speed_classifier_heads.py`` (about a minute). Writes
``benchmarks/results/speed_classifier_heads.md`` and the same table into
``speed_heads.md``, between markers.
"""

from __future__ import annotations

import argparse
import re
import time
import warnings

import torch
from _common import RESULTS, machine_line, markdown_table, median, write_result

from sklearn_meta import MetaClassifier
from sklearn_meta.datasets import make_classification_tasks
from sklearn_meta.heads import BayesianLogisticHead

HEADS = {
    "ridge (RidgeClassifierHead)": {"head": "ridge"},
    "logistic (BayesianLogisticHead), full": {"head": BayesianLogisticHead(covariance="full")},
    "logistic, diagonal": {"head": BayesianLogisticHead(covariance="diagonal")},
    "logistic, diagonal, marginal likelihood": {
        "head": BayesianLogisticHead(covariance="diagonal"),
        "meta_objective": "marginal_likelihood",
    },
    "prototypes": {"head": "prototypes"},
}
BODIES = {"no body (default)": (), "MLP (32,)": (32,)}
REFERENCE = "ridge (RidgeClassifierHead)"
BEGIN, END = "<!-- speed_classifier_heads: begin -->", "<!-- speed_classifier_heads: end -->"


def fit_seconds(config, hidden, X, y, groups, max_iter):
    est = MetaClassifier(
        hidden_layer_sizes=hidden, n_support=5, max_iter=max_iter, compile=False, random_state=0, **config
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y, groups=groups)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y, groups = make_classification_tasks(n_tasks=200, n_samples_per_task=40, random_state=0)
    started = time.perf_counter()
    times = {(b, h): [] for b in BODIES for h in HEADS}
    for _ in range(args.rounds):
        for body, hidden in BODIES.items():
            for head, config in HEADS.items():
                long = fit_seconds(config, hidden, X, y, groups, 40)
                short = fit_seconds(config, hidden, X, y, groups, 10)
                times[body, head].append((long - short) / 30 * 1000)
    rows = []
    for body in BODIES:
        reference = median(times[body, REFERENCE])
        for head in HEADS:
            ms = median(times[body, head])
            rows.append([body, head, f"{ms:.2f}", f"{ms / reference:.2f}"])
    table = markdown_table(["body", "head", "ms / update", "vs ridge head"], rows)
    text = "\n".join(
        [
            "## Speed: meta-training cost of the classification heads",
            "",
            f"Command: `python benchmarks/speed_classifier_heads.py` ({time.perf_counter() - started:.0f} s)  ",
            f"Machine: {machine_line()}",
            "",
            "`MetaClassifier.fit` per update (ms; (fit of 40 updates - fit of 10) / 30, median of "
            f"{args.rounds} rounds, heads interleaved), 200 groups of 40 rows, 3 classes, 2 features, "
            "n_support=5, meta-batch 25, compile=False.",
            "",
            table,
            "",
        ]
    )
    print(text)
    write_result("speed_classifier_heads", text)
    heads_file = RESULTS / "speed_heads.md"
    if heads_file.exists():
        body = heads_file.read_text()
        section = f"{BEGIN}\n{text.replace('## ', '### ', 1)}{END}\n"
        if BEGIN in body:
            body = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", lambda _: section, body, flags=re.S)
        else:
            body = body.rstrip("\n") + "\n\n" + section
        heads_file.write_text(body)


if __name__ == "__main__":
    main()
