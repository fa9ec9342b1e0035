"""Building the network from ``module``: a body of any shape, the last layer on top; what is refused."""

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_meta import MetaRegressor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.estimators import _network
from sklearn_meta.heads import HeadedNetwork

SMALL = dict(max_iter=3, meta_batch_size=5, n_support=5, random_state=0)
INSTANCE_MESSAGE = "module must be a torch.nn.Module class or a factory that builds one, not an instance"
NORM_ADVICE = "torch.nn.LayerNorm or torch.nn.GroupNorm"


@pytest.fixture(scope="module")
def tasks():
    return make_sinusoid_tasks(n_tasks=20, n_samples_per_task=20, random_state=0)


def _spec(module, legacy=False, **module_kwargs):
    spec = {"n_features_in": 1, "n_outputs": 1, "module": module, "module_kwargs": module_kwargs}
    return {**spec, "legacy": True} if legacy else spec


class NormNet(nn.Module):
    """A body: Linear -> norm -> ReLU -> Linear, with the norm layer at ``net.1``."""

    def __init__(self, n_features_in, norm="batch", hidden=8, track_running_stats=True):
        super().__init__()
        if norm == "batch":
            layer = nn.BatchNorm1d(hidden, track_running_stats=track_running_stats)
        elif norm == "layer":
            layer = nn.LayerNorm(hidden)
        elif norm == "group":
            layer = nn.GroupNorm(2, hidden)
        else:
            layer = nn.InstanceNorm1d(hidden, track_running_stats=track_running_stats)
        self.net = nn.Sequential(nn.Linear(n_features_in, hidden), layer, nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self, x):
        return self.net(x)


# --- module given as an instance -------------------------------------------------


def test_check_module_spec_rejects_an_instance():
    with pytest.raises(TypeError, match=INSTANCE_MESSAGE) as info:
        _network.check_module_spec(nn.Linear(1, 1))
    assert "Linear instance" in str(info.value) and "module_kwargs" in str(info.value)


@pytest.mark.parametrize("module", [None, nn.Linear, NormNet, lambda n_features_in: nn.Linear(1, 1)])
def test_check_module_spec_accepts_classes_factories_and_none(module):
    assert _network.check_module_spec(module) is None


def test_check_module_spec_rejects_a_non_callable():
    with pytest.raises(TypeError, match="module must be a torch.nn.Module class or a factory"):
        _network.check_module_spec("Linear")


def test_build_network_rejects_an_instance():
    with pytest.raises(TypeError, match=INSTANCE_MESSAGE):
        _network.build_network(_spec(nn.Linear(1, 1)), 0, torch.device("cpu"))


def test_fit_rejects_an_instance(tasks):
    X, y, groups = tasks
    with pytest.raises(TypeError, match=INSTANCE_MESSAGE):
        MetaRegressor(module=nn.Linear(1, 1), max_iter=2).fit(X, y, groups=groups)


# --- normalisation layers ------------------------------------------------------


@pytest.mark.parametrize("track_running_stats", [True, False])
def test_fit_refuses_batch_norm_naming_the_layer(tasks, track_running_stats):
    # With running statistics torch.func.grad fails on their in-place update;
    # without them predictions depend on the other rows of the batch.
    X, y, groups = tasks
    est = MetaRegressor(module=NormNet, module_kwargs={"track_running_stats": track_running_stats}, **SMALL)
    with pytest.raises(ValueError, match=r"'net\.1' \(BatchNorm1d\)") as info:
        est.fit(X, y, groups=groups)
    assert NORM_ADVICE in str(info.value)
    assert not hasattr(est, "module_")


def test_build_network_refuses_batch_norm_made_functorch_friendly():
    # MAML's reference code: batch statistics only, no running statistics.
    def factory(n_features_in):
        return torch.func.replace_all_batch_norm_modules_(NormNet(n_features_in))

    with pytest.raises(ValueError, match=r"'net\.1' \(BatchNorm1d\)"):
        _network.build_network(_spec(factory), 0, torch.device("cpu"))


def test_build_network_names_every_batch_norm_layer():
    def factory():
        return nn.Sequential(nn.Linear(1, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Linear(4, 4), nn.LazyBatchNorm1d()))

    with pytest.raises(ValueError, match=r"'1' \(BatchNorm1d\), '2\.1' \(LazyBatchNorm1d\)"):
        _network.build_network(_spec(factory), 0, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"the module itself \(BatchNorm1d\)"):
        _network.build_network(_spec(nn.BatchNorm1d, num_features=1), 0, torch.device("cpu"))


def test_build_network_refuses_other_norms_with_running_statistics():
    with pytest.raises(ValueError, match=r"running statistics: 'net\.1' \(InstanceNorm1d\)"):
        _network.build_network(_spec(NormNet, norm="instance"), 0, torch.device("cpu"))


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_per_row_norms_fit_adapt_and_predict_row_by_row(tasks, norm):
    X, y, groups = tasks
    est = MetaRegressor(module=NormNet, module_kwargs={"norm": norm}, head="gradient", **SMALL)
    est.fit(X, y, groups=groups)
    assert np.isfinite(est.loss_curve_).all()
    assert np.isfinite(est.score(X, y, groups=groups))
    for _ in range(2):  # meta-learned, then adapted on a single row
        many = est.predict(X[:10])
        assert many.shape == (10,) and np.isfinite(many).all()
        one = np.concatenate([est.predict(X[i : i + 1]) for i in range(10)])
        np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-6)
        est.partial_adapt(X[:1], y[:1])


def test_the_module_is_the_body_and_the_last_layer_goes_on_its_features():
    net = _network.build_network(_spec(NormNet, norm="layer", hidden=6), 0, torch.device("cpu"))
    assert isinstance(net, HeadedNetwork) and isinstance(net.body, NormNet)
    assert (net.head.in_features, net.head.out_features) == (6, 1)
    names = [name for name, _ in net.named_parameters()]
    assert names[-2:] == ["head.weight", "head.bias"] and all(n.startswith("body.net.") for n in names[:-2])
    x = torch.randn(4, 1)
    torch.testing.assert_close(net(x), net.head(net.body(x)))
    torch.testing.assert_close(net(x, part="features"), net.body(x))


def test_the_built_in_mlp_is_initialised_as_the_same_sequential_layers():
    # The body then the last layer, from one random stream: the same weights as nn.Sequential of the layers.
    spec = {"n_features_in": 2, "n_outputs": 3, "hidden_layer_sizes": [5, 4], "activation": "tanh"}
    net = _network.build_network(spec, 7, torch.device("cpu"))
    torch.manual_seed(7)
    reference = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    for ours, theirs in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs)
    empty = _network.build_network({**spec, "hidden_layer_sizes": []}, 7, torch.device("cpu"))
    assert len(empty.body) == 0 and empty.head.in_features == 2  # no hidden layer: the inputs are the features


class WideSequential(nn.Sequential):
    """A 0.2-style whole network: an nn.Sequential subclass whose constructor takes n_outputs, not layers."""

    def __init__(self, n_features_in, n_outputs, hidden=8):
        super().__init__(nn.Linear(n_features_in, hidden), nn.Tanh(), nn.Linear(hidden, n_outputs))


def test_a_whole_sequential_network_is_split_into_body_and_last_layer(tasks):
    # 0.2's bug: the body was net[:-1], and slicing an nn.Sequential calls type(net)(layers), which this
    # subclass's constructor refuses (TypeError: missing 'n_outputs').
    net = _network.build_network(_spec(WideSequential, legacy=True), 0, torch.device("cpu"))
    assert [name for name, _ in net.body.named_children()] == ["0", "1"]
    assert sorted(name for name, _ in net.named_parameters()) == [
        "body.0.bias", "body.0.weight", "head.bias", "head.weight"]  # fmt: skip
    X, y, groups = tasks
    with pytest.warns(FutureWarning, match="takes n_outputs"):
        est = MetaRegressor(module=WideSequential, **SMALL).fit(X, y, groups=groups)
    assert np.isfinite(est.partial_adapt(X[:5], y[:5]).predict(X[5:10])).all()


class ScaledSequential(nn.Sequential):
    """A 0.2-style whole network whose forward() does more than run its layers."""

    def __init__(self, n_features_in, n_outputs):
        super().__init__(nn.Linear(n_features_in, 4), nn.Tanh(), nn.Linear(4, n_outputs))

    def forward(self, x):
        return super().forward(x / 1000)


def test_a_whole_network_with_its_own_forward_is_not_split():
    # Splitting it would skip the overridden forward() silently: only a gradient head can use it, as it is.
    with pytest.raises(ValueError, match="closed-form head can only take its last layer"):
        _network.build_network(_spec(ScaledSequential, legacy=True), 0, torch.device("cpu"))
    net = _network.build_network(_spec(ScaledSequential, legacy=True), 0, torch.device("cpu"), gradient_head=True)
    assert isinstance(net.body, ScaledSequential) and isinstance(net.head, nn.Identity)
    x = torch.randn(3, 1)
    torch.testing.assert_close(net(x), net.body(x))  # the module's own forward, unchanged
