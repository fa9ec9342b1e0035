"""Building the network: the built-in MLP, or any user module class."""

from __future__ import annotations

import inspect

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "build_network"]

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


def build_network(spec: dict, seed: int, device: torch.device) -> nn.Module:
    """Build the network described by ``spec``, initialised from ``seed``.

    ``spec`` holds ``n_features_in``, ``n_outputs`` and either
    ``hidden_layer_sizes`` and ``activation`` (the built-in MLP) or
    ``module`` and ``module_kwargs``. A user module class receives
    ``n_features_in`` and ``n_outputs`` as keyword arguments when its
    signature names them and ``module_kwargs`` does not.
    """
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
    return net.to(device=device, dtype=torch.float32)
