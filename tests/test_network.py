"""Building the network: which ``module`` values and which layers are accepted."""

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_meta import MetaRegressor, _network
from sklearn_meta.datasets import make_sinusoid_tasks

SMALL = dict(max_iter=3, meta_batch_size=5, n_support=5, random_state=0)
INSTANCE_MESSAGE = "module must be a torch.nn.Module class or a factory that builds one, not an instance"
NORM_ADVICE = "torch.nn.LayerNorm or torch.nn.GroupNorm"


@pytest.fixture(scope="module")
def tasks():
    return make_sinusoid_tasks(n_tasks=20, n_samples_per_task=20, random_state=0)


def _spec(module, **module_kwargs):
    return {"n_features_in": 1, "n_outputs": 1, "module": module, "module_kwargs": module_kwargs}


class NormNet(nn.Module):
    """Linear -> norm -> ReLU -> Linear, with the norm layer at ``net.1``."""

    def __init__(self, n_features_in, n_outputs, norm="batch", hidden=8, track_running_stats=True):
        super().__init__()
        if norm == "batch":
            layer = nn.BatchNorm1d(hidden, track_running_stats=track_running_stats)
        elif norm == "layer":
            layer = nn.LayerNorm(hidden)
        elif norm == "group":
            layer = nn.GroupNorm(2, hidden)
        else:
            layer = nn.InstanceNorm1d(hidden, track_running_stats=track_running_stats)
        self.net = nn.Sequential(nn.Linear(n_features_in, hidden), layer, nn.ReLU(), nn.Linear(hidden, n_outputs))

    def forward(self, x):
        return self.net(x)


# --- module given as an instance -------------------------------------------------


def test_check_module_spec_rejects_an_instance():
    with pytest.raises(TypeError, match=INSTANCE_MESSAGE) as info:
        _network.check_module_spec(nn.Linear(1, 1))
    assert "Linear instance" in str(info.value) and "module_kwargs" in str(info.value)


@pytest.mark.parametrize("module", [None, nn.Linear, NormNet, lambda n_features_in, n_outputs: nn.Linear(1, 1)])
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
    def factory(n_features_in, n_outputs):
        return torch.func.replace_all_batch_norm_modules_(NormNet(n_features_in, n_outputs))

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
    est = MetaRegressor(module=NormNet, module_kwargs={"norm": norm}, head="gradient", **SMALL).fit(X, y, groups=groups)
    assert np.isfinite(est.loss_curve_).all()
    assert np.isfinite(est.score(X, y, groups=groups))
    for _ in range(2):  # meta-learned, then adapted on a single row
        many = est.predict(X[:10])
        assert many.shape == (10,) and np.isfinite(many).all()
        one = np.concatenate([est.predict(X[i : i + 1]) for i in range(10)])
        np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-6)
        est.partial_adapt(X[:1], y[:1])


class WideSequential(nn.Sequential):
    """A user's nn.Sequential subclass whose constructor takes its own arguments, not layers."""

    def __init__(self, n_features_in, n_outputs, hidden=8):
        super().__init__(nn.Linear(n_features_in, hidden), nn.Tanh(), nn.Linear(hidden, n_outputs))


@pytest.mark.parametrize("head", ["ridge", "prototypes"])
def test_closed_form_heads_split_a_sequential_subclass_with_its_own_constructor(tasks, head):
    # Bug: the body was net[:-1], and slicing an nn.Sequential calls type(net)(layers), which this
    # subclass's constructor refuses (TypeError: missing 'n_outputs'): fit failed for every such module.
    net = _network.build_network({**_spec(WideSequential), "head": head}, 0, torch.device("cpu"))
    assert [name for name, _ in net.body.named_children()] == ["0", "1"]
    assert sorted(name for name, _ in net.named_parameters() if name.startswith(("body", "head"))) == [
        "body.0.bias", "body.0.weight", "head.bias", "head.weight"]  # fmt: skip
    if head == "ridge":
        X, y, groups = tasks
        est = MetaRegressor(module=WideSequential, head=head, **SMALL).fit(X, y, groups=groups)
        assert np.isfinite(est.partial_adapt(X[:5], y[:5]).predict(X[5:10])).all()


class ScaledSequential(nn.Sequential):
    """An nn.Sequential whose forward() does more than run its layers."""

    def __init__(self, n_features_in, n_outputs):
        super().__init__(nn.Linear(n_features_in, 4), nn.Tanh(), nn.Linear(4, n_outputs))

    def forward(self, x):
        return super().forward(x / 1000)


def test_closed_form_heads_refuse_a_sequential_that_overrides_forward():
    # The closed-form heads run the layers up to the last, then fit it: an overridden forward() would be
    # skipped silently, and the fitted network would compute something else than the user's module.
    with pytest.raises(ValueError, match="cannot run the forward\\(\\) that ScaledSequential overrides"):
        _network.build_network({**_spec(ScaledSequential), "head": "ridge"}, 0, torch.device("cpu"))
    net = _network.build_network({**_spec(ScaledSequential), "head": "gradient"}, 0, torch.device("cpu"))
    assert isinstance(net, ScaledSequential)  # gradient steps run the module as it is
