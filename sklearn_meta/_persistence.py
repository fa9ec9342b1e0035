"""Converting fitted torch state to numpy and back, for pickling and skops.

A saved estimator holds only numpy arrays and plain Python values, so a file
written on a GPU machine loads on one without, and ``skops.io`` finds no
untrusted type outside ``sklearn_meta``.
"""

from __future__ import annotations

import numpy as np
import torch
from skorch.history import History

from ._version import __version__

__all__ = [
    "STATE_FORMAT",
    "check_saved_with",
    "history_from_state",
    "history_to_state",
    "saved_with",
    "to_numpy_tree",
    "to_torch_tree",
]

# Version of the layout of a saved estimator's state. Raise it when the layout
# changes, and teach ``check_saved_with`` (or ``__setstate__``) to read the old one.
STATE_FORMAT = 1


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
    if record.get("format", 0) > STATE_FORMAT:
        raise ValueError(
            f"This model was saved by sklearn-meta {record.get('sklearn_meta')} (state format "
            f"{record.get('format')}); sklearn-meta {__version__} reads formats up to {STATE_FORMAT}. "
            "Upgrade sklearn-meta to load it."
        )


def to_numpy_tree(tree):
    """Replace every tensor in nested dicts, lists and tuples by a numpy array."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy().copy()
    if isinstance(tree, dict):
        return {k: to_numpy_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_numpy_tree(v) for v in tree)
    return tree


def to_torch_tree(tree, device):
    """Inverse of :func:`to_numpy_tree`: numpy arrays become tensors on ``device``."""
    if isinstance(tree, np.ndarray):
        return torch.as_tensor(np.array(tree), device=device)
    if isinstance(tree, dict):
        return {k: to_torch_tree(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_torch_tree(v, device) for v in tree)
    return tree


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
