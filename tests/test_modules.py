"""ConvNet: a convolutional body for rows that are flattened images, passed as module=ConvNet."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from sklearn_meta import EpisodicClassifier, MetaRegressor
from sklearn_meta.modules import ConvNet

# A few updates of a narrow ConvNet: enough to exercise every path, well under a second each.
SMALL = dict(module=ConvNet, module_kwargs={"channels": 4}, max_iter=3, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


def _episode(X, y, classes, k=5, n_query=10, seed=0):
    rng = np.random.RandomState(seed)
    support, query = [], []
    for c in classes:
        rows = rng.permutation(np.flatnonzero(y == c))
        support.extend(rows[:k])
        query.extend(rows[k : k + n_query])
    return np.array(support), np.array(query)


def test_rows_are_unflattened_as_numpy_flattens_an_image():
    # A row-major flattened image must reach the convolutions as that image: a filter that reads the
    # pixel above the centre must see, for each pixel, the one above it in the original image.
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    net = ConvNet(24, image_shape=(2, 3, 4))
    np.testing.assert_array_equal(net[0](torch.from_numpy(image.reshape(1, -1)))[0].numpy(), image)
    assert net[1].in_channels == 2 and net(torch.zeros(5, 24)).shape == (5, 32 * 1 * 2)  # the body's features
    assert ConvNet(64)[0].unflattened_size == (1, 8, 8)  # None: one square channel
    assert ConvNet(12, image_shape=(3, 4))[0].unflattened_size == (1, 3, 4)


@pytest.mark.parametrize(
    "n_features, kwargs, match",
    [
        (60, {}, "not a square number"),
        (64, {"image_shape": (4, 8, 8)}, "holds 256 pixels"),
        (64, {"image_shape": (8,)}, "height, width"),
        (64, {"image_shape": 8}, "height, width"),
        (64, {"image_shape": "8x8"}, "height, width"),
        (64, {"image_shape": (8, 8.0)}, "positive integers"),
        (4, {"image_shape": (1, 4)}, "at least 2x2"),
        (64, {"channels": 0}, "channels must be a positive integer"),
    ],
)
def test_shapes_that_do_not_fit_the_rows_are_refused_clearly(n_features, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvNet(n_features, **kwargs)


def test_the_advice_for_images_that_are_not_square_is_valid_python():
    with pytest.raises(ValueError) as error:
        ConvNet(60)
    assert "module_kwargs={'image_shape': (height, width)} or" in str(error.value)
    assert ConvNet(60, image_shape=np.array([6, 10]))[0].unflattened_size == (1, 6, 10)


def test_a_fit_with_a_wrong_image_shape_fails_before_training_and_keeps_the_fitted_model(digits):
    X, y = digits
    clf = EpisodicClassifier(n_way=3, k_shot=5, **SMALL).fit(X[y <= 6], y[y <= 6])
    support, query = _episode(X, y, (7, 8, 9))
    before = clf.reset_adaptation().partial_adapt(X[support], y[support]).predict_proba(X[query])
    clf.set_params(module_kwargs={"channels": 4, "image_shape": (7, 7)})
    with pytest.raises(ValueError, match="holds 49 pixels"):
        clf.fit(X[y <= 6], y[y <= 6])
    after = clf.reset_adaptation().partial_adapt(X[support], y[support]).predict_proba(X[query])
    np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("head", ["ridge", "prototypes", "gradient"])
def test_every_classifier_head_fits_and_adapts_a_convnet(digits, head):
    X, y = digits
    clf = EpisodicClassifier(n_way=3, k_shot=5, head=head, **SMALL).fit(X[y <= 6], y[y <= 6])
    network = clf.module_.network
    convolutions = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convolutions] == [4, 4]
    assert network.head.in_features == 4 * 4 * 4  # the head's last layer on the body's 4x4x4 features
    support, query = _episode(X, y, (7, 8, 9))
    clf.reset_adaptation().partial_adapt(X[support], y[support])
    proba = clf.predict_proba(X[query])
    assert proba.shape == (len(query), 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert set(clf.predict(X[query])) <= {7, 8, 9}
    if head != "gradient":  # closed forms fit the last layer to the 15 images: far above chance (1/3)
        assert np.mean(clf.predict(X[query]) == y[query]) > 0.7


def test_a_convnet_regressor_on_images(digits):
    X, y = digits
    groups = np.arange(len(y)) % 20  # 20 tasks of images, each predicting the digit's value
    reg = MetaRegressor(n_support=5, meta_batch_size=4, **SMALL).fit(X, y.astype(float), groups=groups)
    reg.partial_adapt(X[:5], y[:5].astype(float))
    assert reg.predict(X[5:15]).shape == (10,)
    mean, std = reg.predict(X[5:15], return_std=True)
    assert np.all(std > 0)


def test_convnet_estimators_clone_search_and_pickle(digits):
    X, y = digits
    clf = EpisodicClassifier(n_way=3, k_shot=5, **SMALL)
    assert clone(clf).get_params()["module"] is ConvNet
    search = GridSearchCV(clf, {"module_kwargs": [{"channels": 2}, {"channels": 4}]}, cv=2)
    search.fit(X[y <= 5], y[y <= 5])
    assert search.best_estimator_.module_kwargs in ({"channels": 2}, {"channels": 4})
    fitted = search.best_estimator_
    support, query = _episode(X, y, (6, 7, 8))
    fitted.reset_adaptation().partial_adapt(X[support], y[support])
    loaded = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(loaded.predict_proba(X[query]), fitted.predict_proba(X[query]))


def test_skops_trusts_the_convnet_class_as_part_of_the_package(digits):
    sio = pytest.importorskip("skops.io")
    X, y = digits
    clf = EpisodicClassifier(n_way=3, k_shot=5, **SMALL).fit(X[y <= 6], y[y <= 6])
    support, query = _episode(X, y, (7, 8, 9))
    clf.partial_adapt(X[support], y[support])
    data = sio.dumps(clf)
    untrusted = sio.get_untrusted_types(data=data)
    assert all(name.startswith("sklearn_meta.") for name in untrusted)
    loaded = sio.loads(data, trusted=untrusted)
    np.testing.assert_array_equal(loaded.predict_proba(X[query]), clf.predict_proba(X[query]))
