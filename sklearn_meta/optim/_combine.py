"""Combining transformations: a chain, and a mask selecting which parameters adapt."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ._base import _adapts, _check_protocol, uses_curvature


@dataclass(frozen=True)
class Chain:
    """Apply several transformations in sequence; see :func:`chain`."""

    transforms: tuple

    def adapts(self, name: str) -> bool:
        return all(_adapts(t, name) for t in self.transforms)

    @property
    def curvature(self) -> bool:
        return any(uses_curvature(t) for t in self.transforms)

    def meta_parameters(self, params):
        return tuple(t.meta_parameters(params) for t in self.transforms)

    def init(self, params):
        return tuple(t.init(params) for t in self.transforms)

    def update(self, updates, state, params, meta, **curvature):
        new_state = []
        for transform, inner_state, inner_meta in zip(self.transforms, state, meta):
            extra = curvature if uses_curvature(transform) else {}
            updates, inner_state = transform.update(updates, inner_state, params, inner_meta, **extra)
            new_state.append(inner_state)
        return updates, tuple(new_state)


def chain(*transforms) -> Chain:
    """Chain transformations: each one's outgoing updates are the next one's input.

    Parameters
    ----------
    *transforms : objects following :class:`InnerOptimizer`

    Returns
    -------
    Chain
        Its state and meta-parameters are tuples with one entry per transformation.

    Examples
    --------
    >>> from sklearn_meta import optim
    >>> optim.chain(optim.scale_by_adam(), optim.scale_by_learned_rate(0.01))  # Meta-SGD on Adam's direction
    Chain(transforms=(ScaleByAdam(b1=0.9, b2=0.999, eps=1e-08, eps_root=1e-12), ScaleByLearnedRate(lr=0.01)))
    """
    for t in transforms:
        _check_protocol(t)
    return Chain(tuple(transforms))


@dataclass(frozen=True)
class Masked:
    """Adapt only the parameters selected by ``mask``, with ``inner``; the others stay fixed.

    Unlike optax's ``masked``, which passes the other updates through
    unchanged, parameters outside the mask do not adapt at all: the inner
    loop computes no gradient for them, and ``inner``'s state and
    meta-parameters cover the selected parameters only. This is head-only
    adaptation (ANIL, Raghu et al. 2020) when the mask selects the last layer.

    Parameters
    ----------
    inner : object following :class:`InnerOptimizer`
        The transformation applied to the selected parameters.
    mask : str, sequence of str, or callable
        Parameter names or shell-style patterns (``"2.*"``, ``"head.*"``)
        matched with :func:`fnmatch.fnmatchcase` against the names of
        ``module.named_parameters()``, or a function ``name -> bool`` (a
        module-level function, so that the estimator stays picklable).
    """

    inner: Any
    mask: Any

    def __post_init__(self):
        _check_protocol(self.inner)
        if not callable(self.mask):
            patterns = (self.mask,) if isinstance(self.mask, str) else tuple(self.mask)
            if not patterns or not all(isinstance(p, str) for p in patterns):
                raise ValueError(
                    f"mask must be a parameter name pattern, a list of them, or a callable; got {self.mask!r}."
                )

    def adapts(self, name: str) -> bool:
        if callable(self.mask):
            selected = bool(self.mask(name))
        else:
            patterns = (self.mask,) if isinstance(self.mask, str) else self.mask
            selected = any(fnmatchcase(name, p) for p in patterns)
        return selected and _adapts(self.inner, name)

    @property
    def curvature(self) -> bool:
        return uses_curvature(self.inner)

    def _select(self, tree: dict) -> dict:
        return {name: value for name, value in tree.items() if self.adapts(name)}

    def meta_parameters(self, params):
        return self.inner.meta_parameters(self._select(params))

    def init(self, params):
        return self.inner.init(self._select(params))

    def update(self, updates, state, params, meta, **curvature):
        return self.inner.update(self._select(updates), state, self._select(params), meta, **curvature)


def masked(inner, mask) -> Masked:
    """Adapt only the parameters matching ``mask``; see :class:`Masked`.

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta import optim
    >>> head_only = optim.masked(optim.sgd(0.5), "2.*")  # the last layer of a two-layer MLP
    >>> params = {"0.weight": torch.ones(1), "2.weight": torch.ones(1)}
    >>> optim.adapted_names(head_only, params)
    ('2.weight',)
    """
    return Masked(inner, mask)
