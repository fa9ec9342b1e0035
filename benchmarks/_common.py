"""Helpers shared by the benchmark scripts: machine description, tables, result files."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line(threads: bool = True) -> str:
    """One line describing where the numbers were taken."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"CPU: {cpu_model()}, {os.cpu_count()} logical cores ({usable} usable); "
        f"torch {torch.__version__}"
        + (f" ({torch.get_num_threads()} intra-op thread(s)); " if threads else "; ")
        + f"Python {platform.python_version()}; {platform.system()} {platform.release()}; "
        f"load average (1/5/15 min) at write time: {load}; "
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}"
    )


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def write_result(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    return path


def t_half_width(values, level: float = 0.95) -> float:
    """Half the width of the t interval of the mean of ``values`` (e.g. paired differences over seeds)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    return float(stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def paired_verdict(differences) -> str:
    """``"+0.012 ± 0.034 (no difference)"``: mean, t half-width and what the 95% interval supports."""
    differences = np.asarray(differences, dtype=float)
    mean, half = differences.mean(), t_half_width(differences)
    verdict = "lower" if mean + half < 0 else "higher" if mean - half > 0 else "no difference"
    return f"{mean:+.3f} ± {half:.3f} ({verdict})"


def median(values) -> float:
    return float(statistics.median(values))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def try_pyplot():
    """matplotlib's pyplot with a file backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def fmt(x: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, without scientific notation for usual sizes."""
    if x != x:  # NaN
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    return f"{x:#.{digits}g}".rstrip(".")
