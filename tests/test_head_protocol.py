"""Heads as parameter objects over any network: the protocol, a user's own head, any module, deprecations."""

import inspect
import pickle
import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import GradientNormClipping
from torch import nn

from sklearn_meta import EpisodicClassifier, MetaClassifier, MetaRegressor
from sklearn_meta.heads import (
    BayesianLogisticHead,
    BayesianRidgeHead,
    GradientHead,
    Head,
    PrototypeHead,
    RidgeClassifierHead,
)

from .conftest import FAST

GRADIENT_ARGUMENTS = ("inner_optimizer", "inner_lr", "inner_steps", "adapt_steps", "first_order", "recompute_inner",
                      "adapt_params")  # fmt: skip


class ShrunkBiasHead(Head):
    """A user's head: the bias moves towards the support rows' mean residual, by a meta-learned fraction.

    ``shift = sigmoid(logit) * mean(y - f(x))``: with ``logit`` meta-learned, the head learns how much
    to trust a few rows. ``start`` is its initial fraction.
    """

    task_types = ("regression",)

    def __init__(self, start=0.5):
        self.start = start

    def meta_parameters(self, params, y=None):
        return {"logit": torch.logit(torch.tensor(float(self.start)))}

    def init(self, params, meta):
        return ()

    def adapt(self, net, params, meta, state, x, y):
        shift = torch.sigmoid(meta["logit"]) * (y - net.forward(params, x)).mean(dim=0)
        return {**params, "head.bias": params["head.bias"] + shift}, state


class Residual(nn.Module):
    """Not a Sequential, with its own forward: a residual block over a projection, 7 features out."""

    def __init__(self, n_features_in, width=7):
        super().__init__()
        self.project = nn.Linear(n_features_in, width)
        self.block = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))

    def forward(self, x):
        h = torch.tanh(self.project(x))
        return h + self.block(h)


# --- heads are parameter objects ------------------------------------------------------------------


def test_head_arguments_are_nested_estimator_parameters():
    est = MetaRegressor(head=GradientHead(inner_lr=0.05, inner_steps=2))
    params = est.get_params(deep=True)
    assert params["head__inner_lr"] == 0.05 and params["head__inner_steps"] == 2
    est.set_params(head__inner_lr=0.2)
    assert est.head.inner_lr == 0.2
    copy = clone(est)
    assert copy.head is not est.head and copy.head.get_params() == est.head.get_params()
    assert repr(est) == "MetaRegressor(head=GradientHead(inner_lr=0.2, inner_steps=2))"


def test_grid_search_over_a_heads_arguments(sinusoids):
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**FAST, head=GradientHead())
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(est, {"head__inner_lr": [0.001, 0.3]}, cv=GroupKFold(n_splits=2)).fit(X, y, groups=groups)
    assert list(search.cv_results_["param_head__inner_lr"]) == [0.001, 0.3]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.head_.inner_lr == search.best_params_["head__inner_lr"]
    assert est.head.inner_lr == 0.01  # the searched estimator's head is untouched


@pytest.mark.parametrize(
    "estimator, expected",
    [
        (MetaRegressor(), BayesianRidgeHead()),
        (MetaRegressor(head="gradient"), GradientHead()),
        (MetaClassifier(), BayesianLogisticHead()),
        (MetaClassifier(head="ridge"), RidgeClassifierHead()),
        (MetaClassifier(head="prototypes"), PrototypeHead()),
        (EpisodicClassifier(), RidgeClassifierHead(shrink_to_head=False)),
    ],
)
def test_strings_are_shortcuts_for_heads_with_their_defaults(sinusoids, class_tasks, digits_pool, estimator, expected):
    if isinstance(estimator, MetaRegressor):
        X, y, groups, *_ = sinusoids
    elif isinstance(estimator, MetaClassifier):
        X, y, groups, *_ = class_tasks
    else:
        (X, y), groups = digits_pool, None
    fitted = estimator.set_params(**{k: v for k, v in FAST.items() if k != "hidden_layer_sizes"}).fit(X, y, groups)
    assert type(fitted.head_) is type(expected) and fitted.head_.get_params() == expected.get_params()


def test_the_fitted_head_is_a_copy_that_later_changes_do_not_reach(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    head = GradientHead(inner_lr=0.1)
    est = MetaRegressor(**FAST, head=head).fit(X, y, groups=groups)
    before = est.partial_adapt(X_test[:10], y_test[:10]).predict(X_test[10:20])
    head.set_params(inner_lr=5.0)
    est.set_params(head__inner_steps=7)
    assert est.head_ is not head and est.head_.inner_lr == 0.1 and est.head_.inner_steps == 1
    after = est.reset_adaptation().partial_adapt(X_test[:10], y_test[:10]).predict(X_test[10:20])
    np.testing.assert_array_equal(after, before)


def test_a_heads_arguments_are_validated_at_fit_and_keep_a_fitted_model(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    before = est.predict(X_test)
    with pytest.raises(InvalidParameterError, match="inner_lr"):
        est.set_params(head=GradientHead(inner_lr=-1.0)).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_test), before)


def test_a_head_for_the_other_kind_of_target_is_refused(sinusoids, class_tasks):
    X, y, groups, *_ = sinusoids
    with pytest.raises(ValueError, match="MetaRegressor needs a regression head, but RidgeClassifierHead is for"):
        MetaRegressor(**FAST, head=RidgeClassifierHead()).fit(X, y, groups=groups)
    Xc, yc, gc, *_ = class_tasks
    with pytest.raises(ValueError, match="MetaClassifier needs a classification head"):
        MetaClassifier(**FAST, head=BayesianRidgeHead()).fit(Xc, yc, groups=gc)


def test_the_marginal_likelihood_needs_a_head_that_has_one(sinusoids):
    X, y, groups, *_ = sinusoids
    with pytest.raises(ValueError, match=r"meta_objective='marginal_likelihood' needs a head with negative_log_evid"):
        MetaRegressor(**FAST, head="gradient", meta_objective="marginal_likelihood").fit(X, y, groups=groups)


# --- a user's own head ----------------------------------------------------------------------------


def test_a_users_head_meta_trains_adapts_saves_and_grid_searches(sinusoids):
    X, y, groups, X_test, y_test, groups_test = sinusoids
    est = MetaRegressor(**{**FAST, "max_iter": 30}, head=ShrunkBiasHead(start=0.2), meta_lr=0.05)
    est.fit(X, y, groups=groups)
    # its meta-parameter is meta-learned (sinusoids' mean residual is worth more than 20% trust)
    fraction = torch.sigmoid(est.module_.head_meta()["logit"]).item()
    assert fraction != pytest.approx(0.2, abs=1e-3)
    # partial_adapt does what the head says, on the meta-learned network
    before = est.predict(X_test[:10])
    adapted = est.partial_adapt(X_test[:10], y_test[:10]).predict(X_test[:10])
    np.testing.assert_allclose(adapted - before, fraction * (y_test[:10] - before).mean(), rtol=1e-4, atol=1e-6)
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict(X_test[:10]), adapted)
    assert np.isfinite(est.score(X_test, y_test, groups=groups_test))
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(est, {"head__start": [0.1, 0.9]}, cv=GroupKFold(n_splits=2)).fit(X, y, groups=groups)
    assert list(search.cv_results_["param_head__start"]) == [0.1, 0.9]


def test_a_head_without_adapt_says_what_to_implement(sinusoids):
    X, y, groups, *_ = sinusoids

    class Incomplete(Head):
        def init(self, params, meta):
            return ()

    with pytest.raises(NotImplementedError, match=r"Incomplete must implement adapt\(net, params, meta, state"):
        MetaRegressor(**FAST, head=Incomplete()).fit(X, y, groups=groups)


# --- any module, every head -----------------------------------------------------------------------


@pytest.mark.parametrize("head", ["ridge", "gradient", ShrunkBiasHead()], ids=["ridge", "gradient", "user"])
def test_any_module_is_the_body_of_every_regression_head(sinusoids, head):
    # Bug: a module that is not an nn.Sequential ending in nn.Linear failed fit with the default head.
    X, y, groups, X_test, y_test, groups_test = sinusoids
    settings = {k: v for k, v in FAST.items() if k != "hidden_layer_sizes"}
    est = MetaRegressor(**settings, module=Residual, head=head).fit(X, y, groups=groups)
    assert est.module_.network.head.in_features == 7  # the body's width, found by the estimator
    est.partial_adapt(X_test[:10], y_test[:10])
    assert est.predict(X_test[10:20]).shape == (10,)
    assert np.isfinite(est.score(X_test, y_test, groups=groups_test))
    if head == "ridge":
        assert (est.predict(X_test[10:20], return_std=True)[1] > 0).all()


@pytest.mark.parametrize("head", ["ridge", "prototypes", "gradient"])
def test_any_module_is_the_body_of_every_classification_head(class_tasks, digits_pool, head):
    X, y, groups, X_test, y_test, groups_test = class_tasks
    settings = {k: v for k, v in FAST.items() if k != "hidden_layer_sizes"}
    clf = MetaClassifier(**settings, module=Residual, head=head).fit(X, y, groups=groups)
    assert clf.partial_adapt(X_test[:10], y_test[:10]).predict_proba(X_test[10:20]).shape == (10, 3)
    assert 0 <= clf.score(X_test, y_test, groups=groups_test) <= 1
    Xd, yd = digits_pool
    episodic = EpisodicClassifier(**settings, module=Residual, head=head, n_way=3, k_shot=2).fit(
        Xd[yd < 50], yd[yd < 50]
    )
    support = np.concatenate([np.flatnonzero(yd == c)[:2] for c in (50, 60, 70)])
    assert episodic.partial_adapt(Xd[support], yd[support]).classes_.tolist() == [50, 60, 70]


def test_a_body_must_return_features_in_two_dimensions(sinusoids):
    X, y, groups, X_test, *_ = sinusoids

    class Images(nn.Module):
        def __init__(self, n_features_in):
            super().__init__()
            self.linear = nn.Linear(n_features_in, 6)

        def forward(self, x):
            return self.linear(x).reshape(*x.shape[:-1], 2, 3)

    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    before = est.predict(X_test)
    with pytest.raises(ValueError, match=r"features of shape \(n, n_features\).*returned \(1, 2, 3\).*Flatten"):
        est.set_params(module=Images, hidden_layer_sizes=(40, 40)).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_test), before)


def test_module_kwargs_without_a_module_is_an_error(sinusoids):
    X, y, groups, *_ = sinusoids
    with pytest.raises(ValueError, match="module_kwargs=.* is given but module is None"):
        MetaRegressor(**FAST, module_kwargs={"width": 3}).fit(X, y, groups=groups)


class OldStyle(nn.Sequential):
    """A 0.2-style module: the whole network, told its n_outputs."""

    def __init__(self, n_features_in, n_outputs):
        super().__init__(nn.Linear(n_features_in, 16), nn.Tanh(), nn.Linear(16, n_outputs))


class OldStyleForward(nn.Module):
    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_outputs)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("head", ["ridge", "gradient"])
def test_a_module_that_builds_the_whole_network_is_deprecated_and_still_works(sinusoids, head):
    X, y, groups, X_test, *_ = sinusoids
    settings = {k: v for k, v in FAST.items() if k != "hidden_layer_sizes"}
    with pytest.warns(FutureWarning, match="takes n_outputs, so it builds the whole network.*Drop n_outputs"):
        old = MetaRegressor(**settings, module=OldStyle, head=head).fit(X, y, groups=groups)
    new = MetaRegressor(**settings, hidden_layer_sizes=(16,), head=head).fit(X, y, groups=groups)
    np.testing.assert_array_equal(old.predict(X_test), new.predict(X_test))  # the same layers, initialised alike


def test_a_whole_network_that_is_not_a_sequential_serves_only_a_gradient_head(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    settings = {k: v for k, v in FAST.items() if k != "hidden_layer_sizes"}
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="Drop n_outputs: the module is now the body"):
        MetaRegressor(**settings, module=OldStyleForward).fit(X, y, groups=groups)
    with pytest.warns(FutureWarning):
        est = MetaRegressor(**settings, module=OldStyleForward, head="gradient").fit(X, y, groups=groups)
    assert est.partial_adapt(X_test[:10], y_test[:10]).predict(X_test[10:20]).shape == (10,)


# --- a smaller estimator: arguments and deprecations ----------------------------------------------


def _live_arguments(cls):
    return [name for name, p in inspect.signature(cls).parameters.items() if p.default != "deprecated"]


@pytest.mark.parametrize("cls", [MetaRegressor, MetaClassifier, EpisodicClassifier])
def test_at_most_24_arguments_and_none_of_them_the_inner_loops(cls):
    # Issue 20: MetaRegressor took 31 arguments and MetaClassifier 33, seven of them ignored by the default head.
    live = _live_arguments(cls)
    assert len(live) <= 24, live
    assert not set(live) & {*GRADIENT_ARGUMENTS, "max_grad_norm"}


def test_episodes_have_their_own_estimator_without_grouped_arguments():
    assert {"n_way", "k_shot", "n_query", "n_score_episodes"} <= set(_live_arguments(EpisodicClassifier))
    assert "n_support" not in _live_arguments(EpisodicClassifier)
    assert not {"n_way", "k_shot", "n_score_episodes"} & set(_live_arguments(MetaClassifier))


@pytest.mark.parametrize(
    "old, new",
    [
        ({"inner_lr": 0.1}, {"inner_lr": 0.1}),
        ({"inner_optimizer": "meta-sgd", "inner_steps": 2}, {"inner_optimizer": "meta-sgd", "inner_steps": 2}),
        ({"first_order": True, "adapt_params": "head"}, {"adapt_params": "head", "first_order": True}),
        ({"adapt_steps": 3, "recompute_inner": True}, {"adapt_steps": 3, "recompute_inner": True}),
    ],
)
def test_the_old_inner_loop_arguments_still_work_with_a_future_warning(sinusoids, old, new):
    X, y, groups, X_test, y_test, _ = sinusoids
    call = ", ".join(f"{k}={v!r}" for k, v in old.items())
    with pytest.warns(FutureWarning, match=rf"deprecated in sklearn-meta 0.3.*head=GradientHead\({call}\)"):
        deprecated = MetaRegressor(**FAST, head="gradient", **old).fit(X, y, groups=groups)
    current = MetaRegressor(**FAST, head=GradientHead(**new)).fit(X, y, groups=groups)
    assert deprecated.head_.get_params() == current.head_.get_params()
    for est in (deprecated, current):
        est.partial_adapt(X_test[:10], y_test[:10])
    np.testing.assert_array_equal(deprecated.predict(X_test[10:]), current.predict(X_test[10:]))


def test_the_old_inner_loop_arguments_with_a_closed_form_head_warn_that_they_are_unused(sinusoids):
    X, y, groups, *_ = sinusoids
    with pytest.warns(FutureWarning, match="head='ridge' fits the last layer in closed form, so they are not used"):
        MetaRegressor(**FAST, inner_lr=0.5, inner_steps=3).fit(X, y, groups=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults warn about nothing
        MetaRegressor(**FAST).fit(X, y, groups=groups)


def test_old_arguments_beside_a_head_object_are_an_error(sinusoids):
    X, y, groups, *_ = sinusoids
    with pytest.raises(ValueError, match=r"set it on the head instead, head=GradientHead\(inner_lr=0.5\)"):
        MetaRegressor(**FAST, head=GradientHead(), inner_lr=0.5).fit(X, y, groups=groups)


def test_max_grad_norm_is_deprecated_for_skorchs_gradient_norm_clipping(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    settings = {**FAST, "head": "gradient", "meta_lr": 0.05}
    with pytest.warns(FutureWarning, match=r"GradientNormClipping\(gradient_clip_value=0.01\)"):
        old = MetaRegressor(**settings, max_grad_norm=0.01).fit(X, y, groups=groups)
    new = MetaRegressor(**settings, callbacks=[GradientNormClipping(gradient_clip_value=0.01)]).fit(X, y, groups=groups)
    np.testing.assert_allclose(old.predict(X_test), new.predict(X_test), rtol=1e-6)
    assert not np.allclose(MetaRegressor(**settings).fit(X, y, groups=groups).predict(X_test), new.predict(X_test))


def test_episodic_meta_classifier_is_deprecated_for_episodic_classifier(digits_pool):
    X, y = digits_pool
    train = y < 50
    with pytest.warns(FutureWarning, match=r"Episodes are EpisodicClassifier\(n_way=3, k_shot=2\)"):
        old = MetaClassifier(**FAST, n_way=3, k_shot=2).fit(X[train], y[train])
    new = EpisodicClassifier(**FAST, n_way=3, k_shot=2).fit(X[train], y[train])
    support = np.concatenate([np.flatnonzero(y == c)[:2] for c in (50, 60, 70)])
    for clf in (old, new):
        clf.partial_adapt(X[support], y[support])
    np.testing.assert_array_equal(old.predict_proba(X[~train]), new.predict_proba(X[~train]))
    assert old.score(X[~train], y[~train]) == new.score(X[~train], y[~train])


def test_the_old_adapt_steps_on_a_fitted_model_still_adapts_it_with_a_future_warning(sinusoids):
    # Review finding: set_params(adapt_steps=...) after fit changed how 0.2 adapted; it silently did nothing.
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST, head=GradientHead(inner_lr=0.1)).fit(X, y, groups=groups)
    twin = pickle.loads(pickle.dumps(est))
    with pytest.warns(FutureWarning, match=r"est.head_.set_params\(adapt_steps=5\)"):
        est.set_params(adapt_steps=5)
    twin.head_.set_params(adapt_steps=5)
    for model in (est, twin):
        model.partial_adapt(X_test[:10], y_test[:10])
    np.testing.assert_array_equal(est.predict(X_test), twin.predict(X_test))
    one_step = MetaRegressor(**FAST, head=GradientHead(inner_lr=0.1)).fit(X, y, groups=groups)
    assert not np.allclose(one_step.partial_adapt(X_test[:10], y_test[:10]).predict(X_test), est.predict(X_test))


def test_the_fitted_head_shares_nothing_with_the_deprecated_arguments(sinusoids):
    X, y, groups, *_ = sinusoids
    patterns = ["head.*"]
    with pytest.warns(FutureWarning):
        est = MetaRegressor(**FAST, head="gradient", adapt_params=patterns).fit(X, y, groups=groups)
    patterns.append("body.*")
    assert est.head_.adapt_params == ["head.*"]


def test_deprecated_arguments_beside_a_closed_form_head_object_say_to_remove_them(sinusoids):
    X, y, groups, *_ = sinusoids
    with pytest.raises(ValueError, match=r"arguments of GradientHead, which head=BayesianRidgeHead\(\) is not"):
        MetaRegressor(**FAST, head=BayesianRidgeHead(), inner_lr=0.5).fit(X, y, groups=groups)
    with pytest.raises(ValueError, match=r"head=GradientHead\(inner_lr=0.5, inner_steps=3\)"):
        MetaRegressor(**FAST, head=GradientHead(inner_steps=3), inner_lr=0.5).fit(X, y, groups=groups)


def test_a_head_must_be_a_head_subclass(sinusoids):
    X, y, groups, *_ = sinusoids

    class Duck:  # init and adapt, but none of the rest of the protocol
        def init(self, params, meta):
            return ()

        def adapt(self, net, params, meta, state, x, y):
            return params, state

    with pytest.raises(InvalidParameterError, match="head"):
        MetaRegressor(**FAST, head=Duck()).fit(X, y, groups=groups)


class PlainSGD:
    """A user's inner optimizer without equality or a value repr (no dataclass)."""

    def meta_parameters(self, params):
        return {}

    def init(self, params):
        return ()

    def update(self, updates, state, params, meta):
        return {k: -0.05 * u for k, u in updates.items()}, state


def test_warm_start_continues_after_the_fitted_heads_adapt_steps_change(sinusoids):
    # Review finding: warm_start compared the heads' reprs, so adapt_steps (not a training argument) and a
    # user's optimizer object (an address in its repr, copied by clone) read as "the head changed".
    X, y, groups, *_ = sinusoids
    for head in (GradientHead(), GradientHead(inner_optimizer=PlainSGD())):
        est = MetaRegressor(**{**FAST, "max_iter": 2}, head=head, warm_start=True).fit(X, y, groups=groups)
        est.head_.set_params(adapt_steps=4)
        est.set_params(head__adapt_steps=3).fit(X, y, groups=groups)
        assert est.n_iter_ == 4
    with pytest.raises(ValueError, match="the head changed"):
        est.set_params(head=GradientHead(inner_optimizer=PlainSGD(), inner_steps=2)).fit(X, y, groups=groups)


def test_the_compile_key_and_the_ranks_agreement_name_a_users_optimizer_without_its_address(sinusoids):
    from sklearn_meta.estimators._setup import compile_key, prepare_training

    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**FAST, head=GradientHead(inner_optimizer=PlainSGD()))
    plans = [prepare_training(clone(est), X, y, groups, (0, 0), None) for _ in range(2)]
    assert compile_key(est, plans[0]) == compile_key(est, plans[1])
    assert plans[0].description["head"] == plans[1].description["head"]
    assert "0x" not in plans[0].description["head"] and "PlainSGD" in plans[0].description["head"]
    other = prepare_training(clone(est).set_params(head__inner_steps=2), X, y, groups, (0, 0), None)
    assert other.description["head"] != plans[0].description["head"]  # ranks with other heads disagree


def test_episodic_classifier_warm_start_continues_meta_training(digits_pool):
    # Review finding: a warm fit validated the training pool as one task of at most n_way classes.
    X, y = digits_pool
    clf = EpisodicClassifier(**{**FAST, "max_iter": 2}, n_way=3, k_shot=2, warm_start=True).fit(X, y)
    clf.fit(X, y)
    assert clf.n_iter_ == 4
