"""The meta-learned state as one module: the network's initialisation and the head's meta-parameters."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

__all__ = ["MetaModel"]


class MetaModel(nn.Module):
    """Everything meta-training learns: the network's initial parameters and the head's meta-parameters.

    One module, so the meta-optimizer, ``state_dict`` and skorch callbacks
    (``EarlyStopping(load_best=True)``, ``Checkpoint``) see both. Calling it
    runs the network.

    Parameters
    ----------
    network : torch.nn.Module
        The network (body and last layer) whose parameters are the
        meta-learned initialisation.
    head_meta : tree of Tensor
        Initial values of the head's meta-parameters (the Bayesian ridge
        head's prior, Meta-SGD's learned rates: a dict, or a tuple of dicts
        for a chain of transforms), stored as a flat ``ParameterList``
        (``meta.0``, ``meta.1``, ...) so that no name is rewritten; on the
        network's device and in its dtype.
    """

    def __init__(self, network: nn.Module, head_meta):
        super().__init__()
        self.network = network
        reference = next(network.parameters(), None)
        leaves, spec = tree_flatten(head_meta)
        like = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
        self.meta = nn.ParameterList([nn.Parameter(t.detach().clone().to(**like)) for t in leaves])
        # The tree's shape with each leaf's index in ``meta``: plain containers, which copy and pickle
        # as they are (a TreeSpec warns when deep-copied, as a warm start does).
        self._head_meta_index = tree_unflatten(list(range(len(leaves))), spec)

    def forward(self, x):
        return self.network(x)

    def init_params(self) -> dict[str, torch.Tensor]:
        """The network's meta-learned initial parameters by name (the same tensors, not copies)."""
        return dict(self.network.named_parameters())

    def head_meta(self):
        """The head's meta-parameters, in the tree shape its ``meta_parameters`` returned them."""
        return tree_map(lambda index: self.meta[index], self._head_meta_index)
