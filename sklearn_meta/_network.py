"""Building the network: the built-in MLP, or any user module class."""

from __future__ import annotations

import inspect
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from ._heads import HEADS

__all__ = [
    "HeadedNetwork",
    "last_layer_names",
    "split_head",
    "ACTIVATIONS",
    "build_network",
    "check_module_spec",
    "check_network",
]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "logistic": nn.Sigmoid,
    "identity": nn.Identity,
}


def make_mlp(n_features_in: int, n_outputs: int, hidden_layer_sizes, activation: str) -> nn.Sequential:
    """A fully connected network like the one of :class:`~sklearn.neural_network.MLPRegressor`."""
    layers: list[nn.Module] = []
    width = n_features_in
    for size in hidden_layer_sizes:
        layers += [nn.Linear(width, int(size)), ACTIVATIONS[activation]()]
        width = int(size)
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def check_module_spec(module) -> None:
    """Check the ``module`` parameter of an estimator before anything is built.

    ``module`` is called once per fit (and once per load) to build a fresh
    network, initialised from the estimator's ``random_state``; so it must be
    something that builds a module, never a module itself.

    Parameters
    ----------
    module : type, callable or None
        A :class:`torch.nn.Module` subclass, a factory returning a new
        :class:`torch.nn.Module`, or ``None`` (the built-in MLP).

    Raises
    ------
    TypeError
        If ``module`` is a :class:`torch.nn.Module` instance (which is callable,
        but calling it runs its forward pass), or is neither ``None`` nor
        callable.
    """
    if module is None:
        return
    if isinstance(module, nn.Module):
        name = type(module).__name__
        raise TypeError(
            f"module must be a torch.nn.Module class or a factory that builds one, not an instance "
            f"(got a {name} instance). Pass the class, module={name} (that is, type(m)), and its "
            f"constructor arguments in module_kwargs."
        )
    if not callable(module):
        raise TypeError(
            f"module must be a torch.nn.Module class or a factory that builds one, got {type(module).__name__}."
        )


def _describe_layer(name: str, layer: nn.Module) -> str:
    where = "the module itself" if name == "" else repr(name)
    return f"{where} ({type(layer).__name__})"


def check_network(net: nn.Module) -> None:
    """Refuse a network whose layers cannot be used as a stateless per-task function.

    The network is only ever called through :func:`torch.func.functional_call`,
    vmapped over tasks and differentiated with :func:`torch.func.grad`, in
    training mode, on each task's support rows, its query rows and the rows
    given to ``predict`` separately. Two kinds of normalisation layer do not
    fit this:

    - Batch normalisation (``BatchNorm1d/2d/3d``, their lazy variants,
      ``SyncBatchNorm``), with or without running statistics. Updating
      running statistics is an in-place change of a buffer, which
      :func:`torch.func.grad` forbids. Without them
      (``track_running_stats=False``, or after
      :func:`torch.func.replace_all_batch_norm_modules_`, as in MAML's
      reference code) meta-training runs, but every row is normalised with the
      statistics of the rows it is called with: a row's prediction depends on
      the other rows of the same ``predict`` call, and one support row
      (``n_support=1``, ``partial_adapt`` on one row) or one predicted row
      fails.
    - Any other normalisation layer that tracks running statistics
      (``InstanceNorm*d`` with ``track_running_stats=True``).

    :class:`torch.nn.LayerNorm` and :class:`torch.nn.GroupNorm` normalise each
    row on its own and behave the same in meta-training, adaptation and
    prediction; use them instead.

    Parameters
    ----------
    net : torch.nn.Module
        The built network.

    Raises
    ------
    ValueError
        Naming every offending layer (its qualified name in
        ``net.named_modules()`` and its class) and the replacement.
    """
    batch_norms = [_describe_layer(n, m) for n, m in net.named_modules() if isinstance(m, _BatchNorm)]
    if batch_norms:
        raise ValueError(
            f"module contains batch normalisation: {', '.join(batch_norms)}. It is not supported: the "
            "network is called as a pure function on each task's support rows, query rows and predicted rows "
            "separately, so running statistics cannot be updated, and batch statistics would make a row's "
            "prediction depend on the other rows predicted with it (and fail on a single row). Use "
            "torch.nn.LayerNorm or torch.nn.GroupNorm instead, which normalise each row on its own and "
            "behave the same in meta-training, adaptation and prediction."
        )
    tracking = [
        _describe_layer(n, m)
        for n, m in net.named_modules()
        if isinstance(m, _NormBase) and getattr(m, "track_running_stats", False)
    ]
    if tracking:
        raise ValueError(
            f"module contains normalisation with running statistics: {', '.join(tracking)}. The network is "
            "called as a pure function inside torch.func transforms, which cannot update running statistics. "
            "Set track_running_stats=False, or use torch.nn.LayerNorm or torch.nn.GroupNorm."
        )


class HeadedNetwork(nn.Module):
    """A network split into a body (features) and a linear head, with the head's meta-parameters.

    Used by the closed-form heads: ``forward(x)`` runs body then head (the
    meta-learned head: predictions before adaptation), ``forward(x,
    features_only=True)`` the body alone. The head's meta-parameters (for
    example the prior scale and noise prior of the Bayesian ridge head) are
    parameters of this module, so they are meta-learned and saved with the
    network; ``head_parameters`` maps their names to initial values.
    """

    def __init__(self, body: nn.Module, head: nn.Linear, head_parameters=None):
        super().__init__()
        self.body, self.head = body, head
        for name, value in (head_parameters or {}).items():
            self.register_parameter(name, nn.Parameter(value.to(head.weight)))

    def forward(self, x, features_only: bool = False):
        features = self.body(x)
        return features if features_only else self.head(features)


def split_head(net: nn.Module, closed_form) -> HeadedNetwork:
    """Split ``net`` into body and last linear layer (an ``nn.Sequential`` ending in ``nn.Linear``).

    ``closed_form`` is the head that will fit the last layer: it gives the
    meta-parameters to add (``closed_form.meta_parameters(last_layer)``).
    """
    if not (isinstance(net, nn.Sequential) and len(net) and isinstance(net[-1], nn.Linear)):
        raise ValueError(
            f"A closed-form head fits the network's last layer, so the network must be a torch.nn.Sequential "
            f"ending in torch.nn.Linear (as the built-in MLP is); got {type(net).__name__}. Use the built-in MLP, "
            "return an nn.Sequential from your module factory, or use head='gradient'."
        )
    if type(net).forward is not nn.Sequential.forward:
        raise ValueError(
            f"A closed-form head runs the network's layers up to the last one, then fits that layer, so it "
            f"cannot run the forward() that {type(net).__name__} overrides. Put that computation in a layer of "
            "the Sequential, or use head='gradient'."
        )
    # Not net[:-1]: slicing calls type(net)(...), which a subclass with its own constructor arguments refuses.
    body = nn.Sequential(OrderedDict(list(net.named_children())[:-1]))
    return HeadedNetwork(body, net[-1], closed_form.meta_parameters(net[-1]))


def last_layer_names(net: nn.Module) -> list[str]:
    """Parameter-name patterns of the network's last layer with parameters (the head)."""
    owners = [name for name, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise ValueError("The network has no parameters to adapt.")
    return [f"{owners[-1]}.*" if owners[-1] else "*"]


def build_network(spec: dict, seed: int, device: torch.device) -> nn.Module:
    """Build the network described by ``spec``, initialised from ``seed``.

    ``spec`` holds ``n_features_in``, ``n_outputs`` and either
    ``hidden_layer_sizes`` and ``activation`` (the built-in MLP) or
    ``module`` and ``module_kwargs``. A user module class receives
    ``n_features_in`` and ``n_outputs`` as keyword arguments when its
    signature names them and ``module_kwargs`` does not.

    Parameters
    ----------
    spec : dict
        The network's description (see above).
    seed : int
        Seed of the parameters' initialisation; the global random state is
        left as it was.
    device : torch.device
        Where the network's parameters live (always ``float32``).

    Returns
    -------
    net : torch.nn.Module
        A new network, in training mode.

    Raises
    ------
    TypeError
        If ``module`` is a module instance rather than a class or factory
        (see :func:`check_module_spec`), or does not build a
        :class:`torch.nn.Module`.
    ValueError
        If the network contains batch normalisation, or a normalisation layer
        with running statistics (see :func:`check_network`): use
        :class:`torch.nn.LayerNorm` or :class:`torch.nn.GroupNorm`.
    """
    check_module_spec(spec.get("module"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.get("module") is None:
            net = make_mlp(spec["n_features_in"], spec["n_outputs"], spec["hidden_layer_sizes"], spec["activation"])
        else:
            factory = spec["module"]
            kwargs = dict(spec.get("module_kwargs") or {})
            try:
                accepted = inspect.signature(factory).parameters
            except (TypeError, ValueError):
                accepted = {}
            for name in ("n_features_in", "n_outputs"):
                if name in accepted and name not in kwargs:
                    kwargs[name] = spec[name]
            net = factory(**kwargs)
            if not isinstance(net, nn.Module):
                raise TypeError(f"module must build a torch.nn.Module, got {type(net).__name__}.")
        check_network(net)
        if HEADS[spec.get("head", "gradient")] is not None:
            net = split_head(net, HEADS[spec["head"]])
    return net.to(device=device, dtype=torch.float32)
