"""MetaRegressor(meta_objective="marginal_likelihood"): meta-training on every group's whole likelihood."""

import pickle
import warnings

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold

from sklearn_meta import MetaRegressor
from sklearn_meta.estimators._setup import prepare_training
from sklearn_meta.exceptions import SmallTaskWarning

from .conftest import FAST

ML = {**FAST, "meta_objective": "marginal_likelihood"}


def _ragged(sinusoids):
    """The sinusoid tasks with rows dropped: group ``g`` keeps ``1 + g % 8`` rows (1 to 8)."""
    X, y, groups = sinusoids[:3]
    keep = np.concatenate([np.arange(20) < 1 + g % 8 for g in range(60)])
    return X[keep], y[keep], groups[keep]


def _random_intercepts(n_groups, rows, seed, between=0.6, noise=0.5):
    """y = 1 + 0.8 x + u_g + e, u_g ~ N(0, between^2), e ~ N(0, noise^2): a random-intercept model."""
    rng = np.random.RandomState(seed)
    groups = np.repeat(np.arange(n_groups), rows)
    X = rng.normal(size=(len(groups), 1))
    y = 1 + 0.8 * X[:, 0] + rng.normal(scale=between, size=n_groups)[groups] + rng.normal(scale=noise, size=len(groups))
    return X, y, groups


def test_groups_too_small_for_episodes_all_take_part(sinusoids):
    X, y, groups = _ragged(sinusoids)
    with pytest.warns(SmallTaskWarning, match="single row"):  # episodes: all but the one-row groups
        episodic = MetaRegressor(**{**FAST, "n_support": 5}).fit(X, y, groups=groups)
    assert (episodic.n_support_, episodic.n_query_) == (5, 3)  # the 8-row groups: 5 support rows, 3 queries
    est = MetaRegressor(**ML, n_support=5).fit(X, y, groups=groups)
    assert (est.n_support_, est.n_query_) == (0, 8)  # no split; up to the largest group's 8 rows
    sizes = np.bincount(groups)
    # each update's batch size is the real rows of its 5 whole groups: between 5 single rows and 5 x 8
    rows = [row["batches"][0]["train_batch_size"] for row in est.history_]
    assert all(5 <= r <= 40 for r in rows) and len(set(rows)) > 1
    assert sizes.min() == 1  # and single-row groups were eligible all along
    mean, std = est.partial_adapt(X[:1], y[:1]).predict(X[:5], return_std=True)
    assert mean.shape == std.shape == (5,) and np.all(std > 0)


def test_n_query_caps_the_rows_of_a_group_in_one_update(sinusoids):
    X, y, groups = sinusoids[:3]
    est = MetaRegressor(**ML, n_query=6).fit(X, y, groups=groups)
    assert est.n_query_ == 6
    assert [row["batches"][0]["train_batch_size"] for row in est.history_] == [5 * 6] * FAST["max_iter"]


def test_meta_training_raises_the_marginal_likelihood(sinusoids):
    X, y, groups = _ragged(sinusoids)
    est = MetaRegressor(**{**ML, "max_iter": 60}).fit(X, y, groups=groups)
    curve = np.array(est.loss_curve_)
    assert curve[-10:].mean() < curve[:10].mean()


def test_linear_head_is_fitted_like_a_mixed_model_and_adapts_like_its_blup():
    # With no body the model is a linear mixed model, fitted by maximum likelihood as statsmodels'
    # MixedLM is, with random effects on every coefficient (here the data have only a random intercept).
    X, y, groups = _random_intercepts(80, 6, seed=0)
    est = MetaRegressor(
        hidden_layer_sizes=(), meta_objective="marginal_likelihood", meta_batch_size=80, meta_lr=0.05, max_iter=100,
        random_state=0,
    ).fit(X, y, groups=groups)  # fmt: skip
    mixed = sm.MixedLM(y, sm.add_constant(X), groups).fit(reml=False)
    tau2, sigma2 = float(np.asarray(mixed.cov_re)[0, 0]), float(mixed.scale)
    network = est.module_.network
    # the fixed effects are the prior mean; the intercept's prior variance, in noise units, is tau2 / sigma2
    learned = [network.head.bias.item(), network.head.weight.item()]
    np.testing.assert_allclose(learned, np.asarray(mixed.fe_params), atol=0.02)
    prior_scale = est.module_.head_meta()["prior_scale"]
    covariance = (prior_scale @ prior_scale.T).numpy()
    np.testing.assert_allclose(covariance[-1, -1], tau2 / sigma2, rtol=0.05)
    assert covariance[0, 0] < 0.02 * covariance[-1, -1]  # next to no slope variance
    # adapted to 3 rows of a new group, it predicts what MixedLM predicts through the BLUP
    X_new, y_new, groups_new = _random_intercepts(20, 8, seed=1)
    fixed = sm.add_constant(X_new, has_constant="add") @ np.asarray(mixed.fe_params)
    ours, blup = [], []
    for g in range(20):
        support, query = np.flatnonzero(groups_new == g)[:3], np.flatnonzero(groups_new == g)[3:]
        shrink = tau2 / (tau2 + sigma2 / len(support))
        blup.append(fixed[query] + shrink * np.mean(y_new[support] - fixed[support]))
        ours.append(est.reset_adaptation().partial_adapt(X_new[support], y_new[support]).predict(X_new[query]))
    gap = np.abs(np.concatenate(ours) - np.concatenate(blup))
    assert gap.mean() < 0.03 * y.std()
    # the adaptation matters: the fixed effects alone are much further from the BLUP
    unadapted = np.concatenate([fixed[groups_new == g][3:] for g in range(20)])
    assert np.mean(np.abs(unadapted - np.concatenate(blup))) > 10 * gap.mean()


def test_gradient_head_has_no_marginal_likelihood_and_a_failed_fit_keeps_the_model(sinusoids):
    X, y, groups = sinusoids[:3]
    est = MetaRegressor(**ML).fit(X, y, groups=groups)
    before = est.predict(X[:5])
    with pytest.raises(ValueError, match=r"needs a head with negative_log_evidence\(\)"):
        est.set_params(head="gradient").fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X[:5]), before)
    with pytest.raises(ValueError, match="meta_objective"):
        MetaRegressor(meta_objective="likelihood").fit(X, y, groups=groups)


def test_early_stopping_watches_the_held_out_groups_likelihood(sinusoids):
    X, y, groups = _ragged(sinusoids)
    est = MetaRegressor(**{**ML, "max_iter": 200}, early_stopping=True, n_iter_no_change=3, tol=10.0)
    est.fit(X, y, groups=groups)
    assert est.n_iter_ < 200  # no update improves the validation loss by tol=10
    valid = [row["valid_loss"] for row in est.history_]
    assert all(np.isfinite(valid))
    # weighted by rows: the 6 held-out groups (validation_fraction=0.1) hold 6 to 48 of them, every time
    held_out_rows = {row["batches"][1]["valid_batch_size"] for row in est.history_}
    assert len(held_out_rows) == 1 and 6 <= held_out_rows.pop() <= 48


def test_grid_search_clone_and_pickle_carry_the_objective(sinusoids):
    X, y, groups = sinusoids[:3]
    est = MetaRegressor(**ML)
    assert clone(est).get_params()["meta_objective"] == "marginal_likelihood"
    search = GridSearchCV(
        MetaRegressor(**FAST), {"meta_objective": ["episodes", "marginal_likelihood"]}, cv=GroupKFold(2)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y, groups=groups)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    fitted = est.fit(X, y, groups=groups).partial_adapt(X[:4], y[:4])
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict(X[:6]), fitted.predict(X[:6]))
    assert restored.meta_objective == "marginal_likelihood"


def test_an_update_counts_only_the_groups_there_are(sinusoids):
    # Whole groups are drawn without replacement: with 3 groups an update holds 3, not meta_batch_size=25.
    # The work estimate behind n_threads="auto" (and the compile cache key) must count those 3.
    X, y, groups = sinusoids[:3]
    few = np.isin(groups, np.unique(groups)[:3])
    est = MetaRegressor(**{**ML, "meta_batch_size": 25})
    plan = prepare_training(est, X[few], y[few], groups[few], (0, 0), None)
    assert plan.n_tasks == 3
    assert plan.rows == 3 * 20  # 3 whole groups of 20 rows
