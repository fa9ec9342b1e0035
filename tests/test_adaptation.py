"""Adapting whole pipelines in one call."""

import numpy as np
import pytest
import sklearn
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_meta import MetaRegressor, partial_adapt, reset_adaptation

from .conftest import FAST


@pytest.fixture
def pipeline(sinusoids):
    X, y, groups, *_ = sinusoids
    X2 = np.column_stack([X, X**2]) * 50
    with sklearn.config_context(enable_metadata_routing=True):
        inner = make_pipeline(PCA(2), MetaRegressor(**FAST))
        return make_pipeline(StandardScaler(), "passthrough", inner).fit(X2, y, groups=groups)


def test_partial_adapt_runs_support_rows_through_the_fitted_transformers(pipeline, sinusoids):
    *_, X_test, y_test, _ = sinusoids
    X2 = np.column_stack([X_test, X_test**2]) * 50
    scaler, pca, est = pipeline[0], pipeline[-1][0], pipeline[-1][-1]
    mean_before = scaler.mean_.copy()
    assert partial_adapt(pipeline, X2[:10], y_test[:10]) is pipeline
    np.testing.assert_array_equal(scaler.mean_, mean_before)  # transformers not refitted
    by_hand = MetaRegressor()
    by_hand.__setstate__(est.__getstate__())
    by_hand.reset_adaptation().partial_adapt(pca.transform(scaler.transform(X2[:10])), y_test[:10])
    np.testing.assert_array_equal(pipeline.predict(X2), by_hand.predict(pca.transform(scaler.transform(X2))))
    reset_adaptation(pipeline)
    assert est.adapted_params_ is None


def test_only_meta_estimators_adapt():
    with pytest.raises(TypeError, match="StandardScaler cannot adapt"):
        partial_adapt(make_pipeline(StandardScaler()), np.ones((3, 1)), np.ones(3))
