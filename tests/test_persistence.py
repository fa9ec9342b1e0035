"""Saving and loading fitted and adapted estimators."""

import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone

from sklearn_meta import MetaClassifier, MetaRegressor

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
    est = MetaRegressor(head="gradient", **FAST, inner_optimizer=inner_optimizer).fit(X, y, groups=groups)
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
        MetaRegressor(head="gradient", **FAST, inner_optimizer="adam")
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
    clf = MetaClassifier(head="gradient", **FAST, inner_optimizer="meta-sgd").fit(X, y, groups=groups)
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
    est = MetaRegressor(head="gradient", inner_steps=3)
    assert _roundtrip(est).get_params() == est.get_params()


def test_saved_models_record_versions_and_refuse_unknown_formats(sinusoids):
    import sklearn_meta

    X, y, groups, X_test, *_ = sinusoids
    est = MetaRegressor(**FAST).fit(X, y, groups=groups)
    loaded = _roundtrip(est)
    assert loaded.saved_with_ == {"format": 2, "sklearn_meta": sklearn_meta.__version__, "torch": torch.__version__}
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
