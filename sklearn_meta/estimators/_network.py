"""Building the network from the estimator's arguments: a body (the built-in MLP or any module) and a last layer.

The rule (see :mod:`sklearn_meta.heads`): the module is the body, and the
head owns the last layer. The body maps ``(n, n_features_in)`` rows to
``(n, n_features)`` features of any width, found by one forward pass of a
zero row; the last layer is ``torch.nn.Linear(n_features, n_outputs)``.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from .._warnings import warn
from ..heads import HeadedNetwork

__all__ = [
    "ACTIVATIONS",
    "build_network",
    "check_module_spec",
    "check_network",
    "is_legacy_module",
    "warn_legacy_module",
]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "logistic": nn.Sigmoid,
    "identity": nn.Identity,
}


def make_mlp_body(n_features_in: int, hidden_layer_sizes, activation: str) -> nn.Sequential:
    """The hidden layers of a fully connected network like :class:`~sklearn.neural_network.MLPRegressor`'s.

    ``hidden_layer_sizes=()`` gives an empty body: the features are the inputs.
    """
    layers: list[nn.Module] = []
    width = n_features_in
    for size in hidden_layer_sizes:
        layers += [nn.Linear(width, int(size)), ACTIVATIONS[activation]()]
        width = int(size)
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


def _accepted(factory) -> dict:
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return {}


def is_legacy_module(module) -> bool:
    """Whether ``module`` builds a whole network, as in sklearn-meta 0.2: its signature names ``n_outputs``."""
    return module is not None and "n_outputs" in _accepted(module)


def _feature_width(body: nn.Module, n_features_in: int) -> int:
    """The width of the body's features, from one forward pass of a zero row (random state untouched)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            features = body(torch.zeros(1, n_features_in))
        except Exception as error:
            raise ValueError(
                f"module must map rows of shape (n, {n_features_in}) to features of shape (n, n_features); "
                f"calling it on one row raised {type(error).__name__}: {error}"
            ) from error
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != 1:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(
            f"module must map rows of shape (n, {n_features_in}) to features of shape (n, n_features), "
            f"the body that the head's last layer is put on; for one row it returned {shape}. Flatten its "
            "output (torch.nn.Flatten) if it is an image or a sequence."
        )
    return int(features.shape[1])


def _split_legacy(net: nn.Module, n_outputs: int, gradient_head: bool) -> HeadedNetwork:
    """A 0.2-style whole network as body and last layer: an ``nn.Sequential`` ending in ``nn.Linear``.

    A network that cannot be split serves only a gradient head, as a body
    with no last layer of its own.
    """
    splittable = isinstance(net, nn.Sequential) and len(net) and isinstance(net[-1], nn.Linear)
    if splittable and type(net).forward is nn.Sequential.forward and net[-1].out_features == n_outputs:
        # Not net[:-1]: slicing calls type(net)(...), which a subclass with its own constructor arguments refuses.
        return HeadedNetwork(nn.Sequential(OrderedDict(list(net.named_children())[:-1])), net[-1])
    if gradient_head:
        return HeadedNetwork(net, nn.Identity())
    raise ValueError(
        f"module's signature names n_outputs, so it builds the whole network, as in sklearn-meta 0.2, and a "
        f"closed-form head can only take its last layer from an nn.Sequential ending in nn.Linear; got "
        f"{type(net).__name__}. Drop n_outputs: the module is now the body, and the head adds the last layer."
    )


def build_network(spec: dict, seed: int, device: torch.device, gradient_head: bool = False) -> HeadedNetwork:
    """Build the network described by ``spec``, initialised from ``seed``.

    ``spec`` holds ``n_features_in``, ``n_outputs`` and either
    ``hidden_layer_sizes`` and ``activation`` (the built-in MLP's body) or
    ``module`` and ``module_kwargs``. A module class or factory receives
    ``n_features_in`` as a keyword argument when its signature names it and
    ``module_kwargs`` does not. The body is built first and the last layer
    after it, from one random stream, so the built-in MLP is initialised as
    ``MLPRegressor``-style networks of the same layers are.

    A module whose signature names ``n_outputs`` builds the whole network,
    as in sklearn-meta 0.2 (deprecated; ``spec["legacy"]`` is set by the
    estimators after warning): its last ``nn.Linear`` becomes the last layer.

    Parameters
    ----------
    spec : dict
        The network's description (see above).
    seed : int
        Seed of the parameters' initialisation; the global random state is
        left as it was.
    device : torch.device
        Where the network's parameters live (always ``float32``).
    gradient_head : bool, default=False
        The head is a gradient head, which can adapt a 0.2-style network that
        has no separate last layer.

    Returns
    -------
    net : HeadedNetwork
        A new network, in training mode.

    Raises
    ------
    TypeError
        If ``module`` is a module instance rather than a class or factory
        (see :func:`check_module_spec`), or does not build a
        :class:`torch.nn.Module`.
    ValueError
        If the body does not map rows to 2-d features, or contains batch
        normalisation or a normalisation layer with running statistics (see
        :func:`check_network`).
    """
    module = spec.get("module")
    check_module_spec(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if module is None:
            body = make_mlp_body(spec["n_features_in"], spec["hidden_layer_sizes"], spec["activation"])
        else:
            kwargs = dict(spec.get("module_kwargs") or {})
            accepted = _accepted(module)
            names = ("n_features_in", "n_outputs") if spec.get("legacy") else ("n_features_in",)
            for name in names:
                if name in accepted and name not in kwargs:
                    kwargs[name] = spec[name]
            body = module(**kwargs)
            if not isinstance(body, nn.Module):
                raise TypeError(f"module must build a torch.nn.Module, got {type(body).__name__}.")
        check_network(body)
        if spec.get("legacy"):
            net = _split_legacy(body, spec["n_outputs"], gradient_head)
        else:
            net = HeadedNetwork(body, nn.Linear(_feature_width(body, spec["n_features_in"]), spec["n_outputs"]))
    return net.to(device=device, dtype=torch.float32)


def warn_legacy_module(module) -> None:
    """The deprecation of 0.2-style modules that build the whole network."""
    warn(
        f"module {getattr(module, '__name__', module)!r} takes n_outputs, so it builds the whole network, as in "
        "sklearn-meta 0.2; its last nn.Linear is used as the last layer. This is deprecated since sklearn-meta 0.3 "
        "and stops working in 0.4: the module is now the body (rows to features of any width) and the head "
        "adds the last layer. Drop n_outputs and the last nn.Linear from the module.",
        FutureWarning,
    )
