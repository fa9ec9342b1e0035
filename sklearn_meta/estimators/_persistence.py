"""Saving fitted estimators: plain numpy state, rebuilt into torch on load.

A saved estimator holds only numpy arrays and plain Python values, so a file
written on a GPU machine loads on one without, and ``skops.io`` finds no
untrusted type outside ``sklearn_meta``.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from skorch.history import History
from torch.utils._pytree import tree_map

from .._version import __version__
from .._warnings import warn

__all__ = [
    "STATE_FORMAT",
    "PersistenceMixin",
    "check_saved_with",
    "history_from_state",
    "history_to_state",
    "saved_with",
    "to_numpy_tree",
    "to_torch_tree",
]

# Version of the layout of a saved estimator's state. Raise it when the layout
# changes, and teach ``_compat`` to read the old one.
# 2 (0.2): module_ is the MetaModel (network and inner meta-parameters); transforms in optim.
# 3 (0.3): every network is a body and a last layer; the fitted head_ holds how it adapts, and
#    module_.meta its meta-parameters; adaptation_state_ replaces inner_state_.
STATE_FORMAT = 3
READABLE_FORMATS = (2, 3)

# Fitted attributes that hold trees of tensors.
_TENSOR_ATTRIBUTES = ("adapted_params_", "adaptation_state_")


def saved_with() -> dict:
    """What a saved model records about the software that wrote it."""
    return {"format": STATE_FORMAT, "sklearn_meta": __version__, "torch": torch.__version__}


def check_saved_with(record: dict | None) -> None:
    """Refuse a state this version cannot read, rather than predict wrongly from it."""
    if record is None:
        raise ValueError(
            "This file holds a fitted sklearn-meta estimator without a version record; it was not "
            "written by sklearn-meta's own saving code and cannot be loaded safely."
        )
    if record.get("format", 0) not in READABLE_FORMATS:
        newer = record.get("format", 0) > STATE_FORMAT
        raise ValueError(
            f"This model was saved by sklearn-meta {record.get('sklearn_meta')} (state format "
            f"{record.get('format')}); sklearn-meta {__version__} reads format {STATE_FORMAT}. "
            + (
                "Upgrade sklearn-meta to load it."
                if newer
                else "Refit it with this version, or load it with the version that saved it."
            )
        )


def to_numpy_tree(tree):
    """Replace every tensor in a tree (dicts, lists, tuples, named tuples) by a numpy array."""
    return tree_map(lambda x: x.detach().cpu().numpy().copy() if isinstance(x, torch.Tensor) else x, tree)


def to_torch_tree(tree, device):
    """Inverse of :func:`to_numpy_tree`: numpy arrays become tensors on ``device``."""
    return tree_map(lambda x: torch.as_tensor(np.array(x), device=device) if isinstance(x, np.ndarray) else x, tree)


def _plain(value):
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def history_to_state(history: History) -> list:
    """A skorch History as a list of dicts of plain Python values."""
    return [_plain(dict(epoch)) for epoch in history]


def history_from_state(state: list) -> History:
    """Rebuild a skorch History from :func:`history_to_state`'s output."""
    return History([dict(epoch) for epoch in state])


class PersistenceMixin:
    """``__getstate__`` / ``__setstate__`` for the meta-estimators.

    The estimator provides ``_build_model(device)``, which returns an
    untrained ``module_`` of the fitted architecture to load the saved
    ``state_dict`` into.
    """

    def __getstate__(self):
        state = dict(super().__getstate__())
        if "module_" in state:
            state["module_"] = None
            state["_module_state"] = to_numpy_tree(dict(self.module_.state_dict()))
            state["_saved_with"] = saved_with()
        for key in _TENSOR_ATTRIBUTES:
            if key in state:
                state[key] = to_numpy_tree(state[key])
        if "history_" in state:
            state["history_"] = history_to_state(state["history_"])
        return state

    def __setstate__(self, state):
        state = dict(state)
        # An argument added after the model was saved: it behaved then as its default does now.
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                state.setdefault(name, parameter.default)
        module_state = state.pop("_module_state", None)
        record = state.pop("_saved_with", None)
        if module_state is None:
            self.__dict__.update(state)
            return
        check_saved_with(record)
        if record["format"] == 2:  # written by sklearn-meta 0.2
            from ._compat import upgrade_from_0_2

            state, module_state = upgrade_from_0_2(type(self), state, module_state)
        self.__dict__.update(state)
        self.saved_with_ = record
        device = self._load_device()
        self.module_ = self._build_model(device)
        self.module_.load_state_dict(to_torch_tree(module_state, device))
        self.module_.requires_grad_(False)
        for key in _TENSOR_ATTRIBUTES:
            setattr(self, key, to_torch_tree(getattr(self, key), device))
        self.history_ = history_from_state(self.history_)

    def _load_device(self) -> torch.device:
        device = torch.device(self.device_)
        if device.type == "cuda" and not torch.cuda.is_available():
            warn(
                f"This model was fitted on {self.device_}, which is not available here; it is loaded on the CPU.",
                UserWarning,
            )
            return torch.device("cpu")
        return device
