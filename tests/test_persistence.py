"""Saving and loading fitted and adapted estimators."""

import io
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits

from sklearn_meta import EpisodicClassifier, MetaClassifier, MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.heads import BayesianRidgeHead, GradientHead, PrototypeHead, RidgeClassifierHead

from .conftest import FAST


def _roundtrip(est):
    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


def _walk(value):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk(v)


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam", "meta-sgd"])
def test_joblib_roundtrip_of_fitted_and_adapted_models(sinusoids, inner_optimizer):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(head=GradientHead(inner_optimizer=inner_optimizer), **FAST).fit(X, y, groups=groups)
    np.testing.assert_array_equal(_roundtrip(est).predict(X_test), est.predict(X_test))
    est.partial_adapt(X_test[:10], y_test[:10])
    loaded = _roundtrip(est)
    np.testing.assert_array_equal(loaded.predict(X_test), est.predict(X_test))
    # the inner optimizer's state travels too: adapting further gives the same model
    est.partial_adapt(X_test[:10], y_test[:10])
    loaded.partial_adapt(X_test[:10], y_test[:10])
    np.testing.assert_array_equal(loaded.predict(X_test), est.predict(X_test))
    assert loaded.loss_curve_ == est.loss_curve_ and loaded.history_[-1, "epoch"] == est.n_iter_


def test_saved_state_holds_only_numpy_and_plain_python(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = (
        MetaRegressor(head=GradientHead(inner_optimizer="adam"), **FAST)
        .fit(X, y, groups=groups)
        .partial_adapt(X_test[:10], y_test[:10])
    )
    state = est.__getstate__()
    assert not any(isinstance(v, (torch.Tensor, torch.nn.Module)) for v in _walk(state))
    assert isinstance(state["history_"], list)
    assert est.module_ is not None  # getting the state does not change the estimator
    pickle.loads(pickle.dumps(est)).predict(X_test)


def test_skops_finds_no_untrusted_type_outside_the_package(class_tasks):
    sio = pytest.importorskip("skops.io")
    X, y, groups, X_test, y_test, _ = class_tasks
    clf = MetaClassifier(head=GradientHead(inner_optimizer="meta-sgd"), **FAST).fit(X, y, groups=groups)
    clf.partial_adapt(X_test[:10], y_test[:10])
    data = sio.dumps(clf)
    untrusted = sio.get_untrusted_types(data=data)
    assert untrusted and all(name.startswith("sklearn_meta.") for name in untrusted)
    loaded = sio.loads(data, trusted=untrusted)
    np.testing.assert_array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))


def test_a_model_fitted_on_a_gpu_loads_on_a_machine_without_one(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups).partial_adapt(X_test[:10], y_test[:10])
    state = est.__getstate__()
    state["device_"] = "cuda:0"  # what a GPU fit records
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    loaded = MetaRegressor.__new__(MetaRegressor)
    with pytest.warns(UserWarning, match="loaded on the CPU"):
        loaded.__setstate__(pickle.loads(pickle.dumps(state)))
    np.testing.assert_array_equal(loaded.predict(X_test), est.predict(X_test))
    assert next(loaded.module_.parameters()).device.type == "cpu"


def test_unfitted_estimator_roundtrip():
    est = MetaRegressor(head=GradientHead(inner_steps=3))
    assert repr(_roundtrip(est)) == repr(est)


def test_saved_models_record_versions_and_refuse_unknown_formats(sinusoids):
    import sklearn_meta

    X, y, groups, X_test, *_ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    loaded = _roundtrip(est)
    assert loaded.saved_with_ == {"format": 3, "sklearn_meta": sklearn_meta.__version__, "torch": torch.__version__}
    state = est.__getstate__()
    old = {**state, "_saved_with": {**state["_saved_with"], "format": 1, "sklearn_meta": "0.1.0"}}
    with pytest.raises(ValueError, match="saved by sklearn-meta 0.1.0 .* Refit it"):
        MetaRegressor.__new__(MetaRegressor).__setstate__(old)
    state["_saved_with"] = {**state["_saved_with"], "format": 99, "sklearn_meta": "9.0"}
    with pytest.raises(ValueError, match="saved by sklearn-meta 9.0 .* Upgrade sklearn-meta"):
        MetaRegressor.__new__(MetaRegressor).__setstate__(state)
    del state["_saved_with"]
    with pytest.raises(ValueError, match="without a version record"):
        MetaRegressor.__new__(MetaRegressor).__setstate__(state)


def test_a_model_saved_before_an_argument_existed_loads_with_its_default(sinusoids):
    # meta_objective was added after 0.1.0: a model pickled without it behaved as the default does.
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    state = est.__getstate__()
    del state["meta_objective"]
    old = MetaRegressor.__new__(MetaRegressor)
    old.__setstate__(state)
    assert old.get_params()["meta_objective"] == "episodes"
    np.testing.assert_array_equal(old.predict(X[:5]), est.predict(X[:5]))
    assert clone(old).get_params() == est.get_params()


# --- files written by sklearn-meta 0.2 (tests/data/v0_2: make_fixtures.py, run with 0.2 at commit c91a0b2) ----

V0_2 = Path(__file__).parent / "data" / "v0_2"


def assert_as_saved(actual, saved):
    """Equal to what 0.2 computed on its machine, to float32 rounding.

    Float32 kernels (matrix products, convolutions) are chosen by the CPU's
    instruction set, so a file's predictions agree across machines to float32
    rounding, not bit for bit: the dense regressor's differed by 2.4e-7 on an
    AVX-512 Xeon from the AVX2 machine that wrote them. What is saved and
    loaded on one machine is compared bit for bit.
    """
    np.testing.assert_allclose(actual, saved, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def saved_by_0_2():
    expected = np.load(V0_2 / "expected.npz")
    return {name: expected[name] for name in expected.files}


def _sinusoid_query():
    X_new, y_new, _ = make_sinusoid_tasks(n_tasks=1, n_samples_per_task=30, random_state=5)
    return X_new, y_new


@pytest.mark.parametrize(
    "name, head",
    [
        ("regressor_ridge", BayesianRidgeHead()),
        ("regressor_gradient_metasgd_head", GradientHead(inner_optimizer="meta-sgd", adapt_params="head")),
        ("regressor_gradient_adam", GradientHead(inner_optimizer="adam", inner_steps=2)),
    ],
)
def test_a_regressor_saved_by_0_2_loads_and_predicts_as_it_did(saved_by_0_2, name, head):
    X_new, y_new = _sinusoid_query()
    est = joblib.load(V0_2 / f"{name}.joblib")
    assert est.saved_with_["format"] == 2 and est.saved_with_["sklearn_meta"].startswith("0.2")
    assert type(est.head_) is type(head) and est.head_.get_params() == head.get_params()
    # 0.2's inner-loop arguments, in this version's spelling
    assert all(getattr(est, name) == "deprecated" for name in ("inner_lr", "inner_steps", "adapt_params"))
    assert_as_saved(est.predict(X_new[10:]), saved_by_0_2[f"{name}__adapted"])
    assert_as_saved(est.reset_adaptation().predict(X_new[10:]), saved_by_0_2[f"{name}__fresh"])
    # it adapts as 0.2 did, saves in this version's format and loads again, bit for bit
    adapted = est.partial_adapt(X_new[:10], y_new[:10]).predict(X_new[10:])
    assert_as_saved(adapted, saved_by_0_2[f"{name}__adapted"])
    again = _roundtrip(est)
    assert again.saved_with_["format"] == 3
    np.testing.assert_array_equal(again.predict(X_new[10:]), adapted)
    assert repr(clone(est)) == repr(clone(again))


@pytest.mark.parametrize(
    "name, head", [("classifier_ridge", RidgeClassifierHead()), ("classifier_prototypes", PrototypeHead())]
)
def test_a_grouped_classifier_saved_by_0_2_loads_and_predicts_as_it_did(saved_by_0_2, name, head, class_tasks):
    X, *_ = class_tasks
    clf = joblib.load(V0_2 / f"{name}.joblib")
    assert clf.head_.get_params() == head.get_params() and clf.n_way == "deprecated"
    saved = saved_by_0_2[f"{name}__adapted"]
    assert_as_saved(clf.predict_proba(X[10:30]), saved)
    np.testing.assert_array_equal(clf.predict(X[10:30]), clf.classes_[saved.argmax(axis=1)])


def test_an_episodic_classifier_saved_by_0_2_loads_as_a_deprecated_episodic_meta_classifier(saved_by_0_2):
    X, y = load_digits(return_X_y=True)
    clf = joblib.load(V0_2 / "episodic_convnet.joblib")
    assert isinstance(clf, MetaClassifier) and (clf.n_way, clf.k_shot) == (3, 5)
    assert clf.head_.get_params() == RidgeClassifierHead(shrink_to_head=False).get_params()
    query = np.concatenate([np.flatnonzero(y == c)[5:15] for c in (7, 8, 9)])
    saved = saved_by_0_2["episodic_convnet__adapted"]  # differed by 1.8e-7 on an AVX2-only machine
    assert_as_saved(clf.predict_proba(X[query]), saved)
    np.testing.assert_array_equal(clf.predict(X[query]), clf.classes_[saved.argmax(axis=1)])
    # refitting it is the deprecated spelling of EpisodicClassifier
    with pytest.warns(FutureWarning, match="EpisodicClassifier"):
        clone(clf).set_params(max_iter=1).fit(X[y < 7], y[y < 7])
    assert isinstance(EpisodicClassifier(), EpisodicClassifier)


def test_a_0_2_state_that_cannot_be_converted_says_so(sinusoids):
    est = joblib.load(V0_2 / "regressor_ridge.joblib")
    state = pickle.loads(pickle.dumps(est.__getstate__()))
    state["_saved_with"] = {**state["_saved_with"], "format": 2}
    state["_module_state"] = {"network.0.weight": np.zeros((3, 3))}
    state["_network_spec_"] = {**state["_network_spec_"], "head": "ridge"}
    with pytest.raises(ValueError, match=r"saved by sklearn-meta 0.2 \(state format 2\) and cannot be converted"):
        MetaRegressor.__new__(MetaRegressor).__setstate__(state)


def test_a_0_2_gradient_model_with_parameter_patterns_refits_with_this_versions_names(sinusoids):
    # Review finding: the loaded estimator's head argument kept 0.2's patterns ("2.*"), which name no
    # parameter here, so clone and refit failed; only head_ had been converted.
    from sklearn_meta.optim import masked, scale_by_learned_rate

    X, y, groups, *_ = sinusoids
    est = joblib.load(V0_2 / "regressor_gradient_metasgd_head.joblib")
    state = pickle.loads(pickle.dumps(est.__getstate__()))
    state["_saved_with"] = {**state["_saved_with"], "format": 2}  # back to the 0.2 layout of this file
    state["_network_spec_"] = {**state["_network_spec_"], "head": "gradient"}
    state.update(head="gradient", inner_optimizer="meta-sgd", inner_lr=0.01, inner_steps=1, adapt_steps=None,
                 first_order=False, recompute_inner=False, adapt_params=["2.*"], max_grad_norm=None,
                 inner_optimizer_=masked(scale_by_learned_rate(0.01), ["2.*"]), inner_state_=None)  # fmt: skip
    del state["head_"], state["adaptation_state_"]
    old_names = {"network.body.0.weight": "network.0.weight", "network.body.0.bias": "network.0.bias",
                 "network.head.weight": "network.2.weight", "network.head.bias": "network.2.bias"}  # fmt: skip
    state["_module_state"] = {
        old_names.get(k, k.replace("meta.", "inner.")): v for k, v in state["_module_state"].items()
    }
    state["adapted_params_"] = None
    loaded = MetaRegressor.__new__(MetaRegressor)
    loaded.__setstate__(state)
    assert loaded.head_.adapt_params == "head" and loaded.head.get_params() == loaded.head_.get_params()
    np.testing.assert_array_equal(loaded.predict(X[:20]), est.reset_adaptation().predict(X[:20]))
    refit = clone(loaded).set_params(max_iter=1).fit(X, y, groups=groups)
    assert set(refit.module_.head_meta()) == {"head.weight", "head.bias"}
