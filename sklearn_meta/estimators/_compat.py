"""Reading what sklearn-meta 0.2 saved (state format 2), and the module paths its pickles name.

0.2 kept the inner loop's arguments on the estimator, a head key in the
network's description, closed-form heads' meta-parameters inside the network
and whole ``nn.Sequential`` networks for the gradient head. 0.3 has a fitted
head object (``head_``), every network as a body and a last layer, and the
head's meta-parameters in ``module_.meta``. :func:`upgrade_from_0_2` rewrites a
0.2 state into that layout, so a saved 0.2 model loads and predicts as it did.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..heads import BayesianRidgeHead, GradientHead, PrototypeHead, RidgeClassifierHead
from ..optim import adapted_names
from ._heads import DEPRECATED, GRADIENT_ARGUMENTS
from ._network import build_network, is_legacy_module

__all__ = ["LEGACY_MODULES", "upgrade_from_0_2"]

#: Modules named by 0.2 pickles, and where their classes live now.
LEGACY_MODULES = {
    "sklearn_meta._regressor": "sklearn_meta.estimators._regressor",
    "sklearn_meta._classifier": "sklearn_meta.estimators._classifier",
    "sklearn_meta._heads": "sklearn_meta.heads",
}

# 0.2's defaults of the arguments that moved to GradientHead (and max_grad_norm).
_OLD_DEFAULTS = {
    "inner_optimizer": "sgd",
    "inner_lr": 0.01,
    "inner_steps": 1,
    "adapt_steps": None,
    "first_order": False,
    "recompute_inner": False,
    "adapt_params": "all",
    "max_grad_norm": None,
}

_CLOSED_FORM = {
    "ridge": BayesianRidgeHead,
    "ridge_classifier": RidgeClassifierHead,
    "ridge_classifier_episodes": lambda: RidgeClassifierHead(shrink_to_head=False),
    "prototypes": PrototypeHead,
}


def _is_default(name: str, value) -> bool:
    default = _OLD_DEFAULTS[name]
    return value is default or (type(value) is type(default) and value == default)


def _renamed(tree, names: dict):
    """``tree`` (dicts, tuples, named tuples of arrays) with the dict keys in ``names`` renamed."""
    if isinstance(tree, dict):
        return {names.get(key, key): _renamed(value, names) for key, value in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_renamed(value, names) for value in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(_renamed(value, names) for value in tree)
    return tree


def _unconvertible(why: str) -> ValueError:
    return ValueError(
        f"This model was saved by sklearn-meta 0.2 (state format 2) and cannot be converted to this version's "
        f"layout: {why}. Refit it with this version, or load it with sklearn-meta 0.2."
    )


def upgrade_from_0_2(cls, state: dict, module_state: dict) -> tuple[dict, dict]:
    """The estimator state and model state of a 0.2 file, in this version's layout.

    Parameters
    ----------
    cls : type
        The estimator class being loaded.
    state : dict
        The pickled ``__dict__`` (arguments and fitted attributes).
    module_state : dict of str to ndarray
        The saved ``module_.state_dict()``.
    """
    from ._setup import build_model  # the skeleton the converted state is loaded into

    state = dict(state)
    spec = dict(state["_network_spec_"])
    head_key = spec.pop("head", "gradient")
    old = {name: state.pop(name, _OLD_DEFAULTS[name]) for name in _OLD_DEFAULTS}
    if spec.get("module") is not None and is_legacy_module(spec["module"]):
        spec["legacy"] = True
    old_network = [key[len("network.") :] for key in module_state if key.startswith("network.")]

    if head_key in _CLOSED_FORM:
        head = _CLOSED_FORM[head_key]()
        meta_names = list(head.meta_parameters({"head.weight": torch.zeros(1, 1)}))
        old_meta = [f"network.{name}" for name in meta_names]
        old_network = [name for name in old_network if name not in meta_names]
    elif head_key == "gradient":
        settings = {name: old[name] for name in GRADIENT_ARGUMENTS if name != "adapt_params"}
        head = GradientHead(**settings)  # adapt_params below, once the names are known
        old_meta = sorted((key for key in module_state if key.startswith("inner.")), key=lambda k: int(k[6:]))
    else:
        raise _unconvertible(f"unknown head {head_key!r}")

    with warnings.catch_warnings():  # a 0.2-style module warns that it is deprecated: not at load time
        warnings.simplefilter("ignore", FutureWarning)
        network = build_network(spec, 0, torch.device("cpu"), gradient_head=isinstance(head, GradientHead))
    new_network = list(network.state_dict())
    if len(new_network) != len(old_network):
        raise _unconvertible(f"its network has {len(old_network)} tensors, this layout {len(new_network)}")
    names = dict(zip(old_network, new_network))  # same order: the body's tensors, then the last layer's
    if isinstance(head, GradientHead):  # which parameters adapted, by their new names
        adapted = [names[name] for name in adapted_names(state.pop("inner_optimizer_"), list(names))]
        parameters = [name for name, _ in network.named_parameters()]
        if adapted == parameters:
            head.set_params(adapt_params="all")
        elif adapted == ["head.weight", "head.bias"]:
            head.set_params(adapt_params="head")
        else:
            head.set_params(adapt_params=adapted)
    else:
        state.pop("inner_optimizer_", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        new_state = build_model(spec, head, 0, torch.device("cpu")).state_dict()
    converted = {}
    for old_name, new_name in names.items():
        value = module_state[f"network.{old_name}"]
        if tuple(np.shape(value)) != tuple(new_state[f"network.{new_name}"].shape):
            shape = tuple(new_state[f"network.{new_name}"].shape)
            raise _unconvertible(f"{old_name} has shape {np.shape(value)}, {new_name} {shape}")
        converted[f"network.{new_name}"] = value
    for index, key in enumerate(old_meta):
        converted[f"meta.{index}"] = module_state[key]
    if set(converted) != set(new_state):
        raise _unconvertible(f"it holds {sorted(module_state)}")

    # The arguments as this version spells them: what 0.2 called inner_lr=... is head=GradientHead(inner_lr=...).
    changed = {name: value for name, value in old.items() if name != "max_grad_norm" and not _is_default(name, value)}
    if "adapt_params" in changed:  # 0.2's patterns named 0.2's parameters: the converted head has this version's
        changed["adapt_params"] = head.adapt_params
    if state.get("head") == "gradient" and changed:
        state["head"] = GradientHead(**changed)
    for name in GRADIENT_ARGUMENTS:
        state[name] = DEPRECATED
    state["max_grad_norm"] = DEPRECATED if old["max_grad_norm"] is None else old["max_grad_norm"]
    if "n_way" in state and "n_way" in getattr(cls, "_deprecated_episode_arguments", ()):
        if state["n_way"] is None:
            state.update(n_way=DEPRECATED, k_shot=DEPRECATED, n_score_episodes=DEPRECATED)

    state["_network_spec_"] = spec
    state["head_"] = head
    state["adaptation_state_"] = _renamed(state.pop("inner_state_", None), names)
    if state.get("adapted_params_") is not None:
        state["adapted_params_"] = _renamed(state["adapted_params_"], names)
    return state, converted
