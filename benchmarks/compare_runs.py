"""One method across two saved runs of a benchmark, paired by seed: did a change of code move its metric?

``real_data.py`` and ``real_data_classification.py`` save every (data set, seed,
K, method) record in ``benchmarks/results/<output>.json``. Two runs of the same
command, one with the code before a change and one after, see the same splits,
revealed rows and query rows in a seed, so the method's metric can be paired
by seed across them. That sameness is checked, not assumed: a deterministic
baseline (``--check``, e.g. ``"HGB pooled"``, which no change of sklearn-meta
touches) must give the same metric in both runs for every seed, or the script
stops.

Usage::

    # the before run, from a worktree of the old code, e.g. 0.2 (c7a53a5):
    git worktree add /tmp/v02 c7a53a5
    (cd /tmp/v02 && PYTHONPATH=/tmp/v02 python benchmarks/real_data.py --seeds 40 --shots 5 \\
        --datasets radon --configs default --digits none --output real_data_radon_40_v02)
    cp /tmp/v02/benchmarks/results/real_data_radon_40_v02.json benchmarks/results/real_data_radon_40_0.2.json
    # the after run, here, then the comparison:
    python benchmarks/real_data.py --seeds 40 --shots 5 --datasets radon --configs default --digits none \\
        --output real_data_radon_40
    python benchmarks/compare_runs.py real_data_radon_40_0.2 real_data_radon_40 --method default \\
        --output radon_40_against_0.2
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd
from _common import RESULTS, markdown_table, paired_verdict, write_result

CHECK_TOLERANCE = 1e-12  # the check baseline's largest |before - after| accepted


def load(name: str) -> pd.DataFrame:
    """The records of ``benchmarks/results/<name>.json``, and the command that wrote them."""
    saved = json.loads((RESULTS / f"{name}.json").read_text())
    return pd.DataFrame(saved["records"]), saved.get("command", "")


def compare(before: pd.DataFrame, after: pd.DataFrame, method: str, check: str, metric: str):
    """Per (data set, K): ``method``'s metric after minus before, paired by seed; and the check's largest gap."""
    keys = ["dataset", "k", "seed"]
    pick = lambda df, m: df[df.method == m].set_index(keys)[metric]  # noqa: E731
    gap = (pick(after, check) - pick(before, check)).dropna()
    if gap.empty:
        raise SystemExit(f"no (data set, K, seed) has {check!r} in both runs: nothing to pair")
    worst = float(gap.abs().max())
    if not worst <= CHECK_TOLERANCE:
        raise SystemExit(
            f"{check!r} differs between the runs by up to {worst:.3g}: they do not see the same rows, "
            "so a paired comparison would be wrong"
        )
    both = pd.concat({"before": pick(before, method), "after": pick(after, method)}, axis=1).dropna()
    rows = []
    for (name, k), cell in both.groupby(level=["dataset", "k"], sort=False):
        b, a = cell["before"], cell["after"]  # the seeds both runs have
        rows.append([name, k, len(a), f"{b.mean():.3f}", f"{a.mean():.3f}", paired_verdict(a - b)])
    return rows, worst, len(gap)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="result name under benchmarks/results/ (without .json): the old code's run")
    parser.add_argument("after", help="result name: the new code's run of the same command")
    parser.add_argument("--method", default="default", help="the method compared (default: default)")
    parser.add_argument("--check", default="HGB pooled", help="a deterministic baseline that must agree per seed")
    parser.add_argument("--metric", default="mse", help="the record's key compared (default mse; log_loss, ...)")
    parser.add_argument("--output", default=None, help="also write benchmarks/results/<output>.md")
    args = parser.parse_args(argv)
    (before, before_command), (after, after_command) = load(args.before), load(args.after)
    rows, worst, n_checked = compare(before, after, args.method, args.check, args.metric)
    table = markdown_table(
        ["data set", "K", "seeds", f"before: {args.metric}", f"after: {args.metric}", "after − before"], rows
    )
    text = (
        f"## `{args.method}` in `{args.after}` against `{args.before}`, paired by seed\n\n"
        f"Command: `python benchmarks/compare_runs.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
        f"Before: `results/{args.before}.json` (`{before_command}`).\n\n"
        f"After: `results/{args.after}.json` (`{after_command}`).\n\n"
        f"Same rows: `{args.check}` gives the same {args.metric} in both runs on all {n_checked} "
        f"(data set, K, seed) cells they share (largest difference {worst:.1g}).\n\n"
        f"Means over seeds; the difference's interval is the 95% t interval of the per-seed differences, "
        f"and what it supports: lower or higher after the change, or no difference the seeds can resolve.\n\n"
        f"{table}\n"
    )
    print(text)
    if args.output:
        print(f"written to {write_result(args.output, text)}")


if __name__ == "__main__":
    main()
