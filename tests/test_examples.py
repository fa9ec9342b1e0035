"""Every script in examples/ runs to completion in its fast mode.

The scripts run as separate processes, all started at once so that the
file's wall time is about that of the slowest few, not of their sum. Each
gets ``SKLEARN_META_EXAMPLE_FAST=1`` (few iterations) and its own output
folder in ``SKLEARN_META_EXAMPLES_OUT``, so nothing is written into the
repository.
"""

import ast
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
TIMEOUT = 300  # seconds per script; the fast modes take a few

# Lines each script must print (substrings), whatever the numbers.
EXPECTED_OUTPUT = {
    "sinusoid_quickstart.py": [
        "Few-shot R² on 10 held-out tasks",
        "before meta-training (max_iter=0)",
        "after meta-training (defaults)",
        "after meta-training (Meta-SGD)",
        "MetaRegressor, after partial_adapt",
        "lie inside the 95% predictive interval",
        "MLPRegressor on all tasks pooled",
        "MLPRegressor on the support points only",
    ],
    "grid_search.py": [
        "cv_results_",
        "best_params_: {'head':",
        "refitted best model, few-shot R² on 100 new tasks",
        "Without metadata routing: 4 SingleTaskWarning(s)",
    ],
    "few_shot_digits.py": [
        "EpisodicClassifier, CNN body",
        "EpisodicClassifier, defaults (ridge on pixels)",
        "EpisodicClassifier, MLP body (40, 40)",
        "LogisticRegression on the support rows",
        "NearestCentroid on the support rows",
        "classes_ = [7, 8, 9]",
        "predict_proba (columns [7, 8, 9])",
        "Call reset_adaptation() to start a new task.",
    ],
    "pipeline_and_persistence.py": [
        "StandardScaler + MetaRegressor",
        "loaded pipeline gives identical predictions: True",
        "loaded model is still adapted: True",
        "after reset_adaptation() on both, identical again: True",
    ],
    "few_shot_uncertainty.py": [
        "Few-shot R² on 100 held-out tasks",
        "Bayesian ridge head",
        "95% intervals from 5 points cover",
    ],
    "distributed_meta_training.py": [
        "$ torchrun --standalone --nproc-per-node=2",
        "each rank trained on its own",
        "ranks hold identical parameters: True",
        "rank 0 saved the model",
    ],
    "grid_search_on_a_cluster.py": [
        "n_jobs=1:",
        "Dask: same cv_results_ as n_jobs=1: True",
    ],
    "real_data_fertility.py": [
        "MetaRegressor.score(X_test, y_test, groups=...), few-shot R² per fold",
        "Query MSE in (births per woman)²",
        "MetaRegressor, after partial_adapt",
        "GradientBoosting on all countries pooled",
        "Ridge (quadratic) on the support rows only",
        "Gaussian process on the support rows only",
    ],
}

# One script also runs with matplotlib hidden, to check the text-only path.
WITHOUT_MATPLOTLIB = "pipeline_and_persistence.py"
_HIDE_MATPLOTLIB = (
    "import runpy, sys; sys.modules['matplotlib'] = None; sys.argv = [sys.argv[1]]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _environment(out_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        SKLEARN_META_EXAMPLE_FAST="1",
        SKLEARN_META_EXAMPLES_OUT=str(out_dir),
        MPLBACKEND="Agg",
        # One thread per process: the scripts run side by side, and torch's
        # thread pools slow down badly when they compete for two cores.
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every example (and one without matplotlib) at once; return their results by key."""
    started = time.time()
    commands = {path.name: [sys.executable, str(path)] for path in EXAMPLES}
    commands["no-matplotlib"] = [sys.executable, "-c", _HIDE_MATPLOTLIB, str(EXAMPLES_DIR / WITHOUT_MATPLOTLIB)]
    processes = {}
    for key, command in commands.items():
        out_dir = tmp_path_factory.mktemp(key.replace(".py", ""))
        process = subprocess.Popen(
            command,
            cwd=EXAMPLES_DIR.parent,
            env=_environment(out_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes[key] = (process, out_dir)
    results = {}
    for key, (process, out_dir) in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        results[key] = {"returncode": process.returncode, "stdout": stdout, "stderr": stderr, "out": out_dir}
    results["started"] = started
    return results


def test_examples_found():
    assert {path.name for path in EXAMPLES} >= set(EXPECTED_OUTPUT)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_docstring(path):
    """sphinx-gallery style: a module docstring whose first line is an underlined title."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring, f"{path.name} has no module docstring"
    lines = docstring.splitlines()
    assert len(lines) > 3, f"{path.name}: title, underline and an explanation are expected"
    title, underline = lines[0], lines[1]
    assert title.strip() and set(underline) == {"="} and len(underline) >= len(title)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(runs, path):
    result = runs[path.name]
    assert result["returncode"] == 0, f"{path.name} failed:\n{result['stdout']}\n{result['stderr']}"
    for line in EXPECTED_OUTPUT.get(path.name, []):
        assert line in result["stdout"], f"{path.name} did not print {line!r}:\n{result['stdout']}"
    figures = list(result["out"].glob("*.png"))
    if HAS_MATPLOTLIB:
        assert figures, f"{path.name} saved no figure in SKLEARN_META_EXAMPLES_OUT"
        assert "Figure saved to" in result["stdout"]


def test_example_without_matplotlib(runs):
    result = runs["no-matplotlib"]
    assert result["returncode"] == 0, f"{result['stdout']}\n{result['stderr']}"
    assert "matplotlib is not installed: no figure." in result["stdout"]
    assert not list(result["out"].glob("*.png"))
    for line in EXPECTED_OUTPUT[WITHOUT_MATPLOTLIB]:
        assert line in result["stdout"]


def test_examples_write_nothing_into_the_repository(runs):
    default_out = EXAMPLES_DIR / "_output"
    if default_out.exists():
        touched = [p for p in default_out.iterdir() if p.stat().st_mtime >= runs["started"]]
        assert not touched, f"examples wrote into the repository: {touched}"
