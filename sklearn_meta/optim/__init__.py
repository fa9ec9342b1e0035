"""Inner-loop optimizers as composable gradient transformations.

An inner optimizer adapts a network's parameters to one task. As in optax
and TorchOpt, it is built by chaining small transformations, each a set of
pure functions over dicts of tensors:

- ``init(params) -> state``: the state of a fresh adaptation (a ``NamedTuple``),
- ``update(updates, state, params, meta) -> (updates, state)``: transform the
  incoming updates (the task's gradients, for the first transform of a chain)
  into outgoing ones; :func:`apply_updates` adds them to the parameters,
- ``meta_parameters(params) -> meta``: tensors the outer loop learns about the
  transformation itself (Meta-SGD's per-parameter learning rates), a dict,
  or a tuple of dicts for a chain; empty for most transformations.

Nothing is modified in place, so one implementation is differentiated through
(MAML), vectorised over tasks with :func:`torch.func.vmap`, and run without a
graph when serving. Every transformation is a frozen dataclass: picklable,
comparable, and a plain value for ``get_params`` / ``clone``.

A transformation may also say which parameters adapt at all (``adapts``,
see :class:`Masked`); the inner loop then computes gradients for those
parameters only, which is what makes head-only adaptation cheap.

The names ``"sgd"``, ``"adam"`` and ``"meta-sgd"`` accepted by the
estimators' ``inner_optimizer`` are :func:`sgd`, :func:`adam` and
:func:`meta_sgd` built with ``inner_lr`` (arguments of
:class:`~sklearn_meta.heads.GradientHead`).

Examples
--------
>>> import torch
>>> from sklearn_meta import optim
>>> opt = optim.chain(optim.clip_by_global_norm(1.0), optim.scale_by_learning_rate(0.1))
>>> params = {"w": torch.tensor([1.0, 1.0])}
>>> updates, state = opt.update({"w": torch.tensor([3.0, 4.0])}, opt.init(params), params, opt.meta_parameters(params))
>>> optim.apply_updates(params, updates)["w"]
tensor([0.9400, 0.9200])
"""

from __future__ import annotations

from collections.abc import Callable

from ._base import (
    EmptyState,
    InnerOptimizer,
    Params,
    ScaleByAdamState,
    Updates,
    _check_protocol,
    adapted_names,
    apply_updates,
    uses_curvature,
)
from ._combine import Chain, Masked, chain, masked
from ._newton import Newton, newton
from ._transforms import (
    Clip,
    ClipByGlobalNorm,
    ScaleByAdam,
    ScaleByLearnedRate,
    ScaleByLearningRate,
    clip,
    clip_by_global_norm,
    scale_by_adam,
    scale_by_learned_rate,
    scale_by_learning_rate,
)

__all__ = [
    "Chain",
    "Clip",
    "ClipByGlobalNorm",
    "EmptyState",
    "InnerOptimizer",
    "Masked",
    "Newton",
    "Params",
    "ScaleByAdam",
    "ScaleByAdamState",
    "ScaleByLearnedRate",
    "ScaleByLearningRate",
    "Updates",
    "adam",
    "adapted_names",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "masked",
    "meta_sgd",
    "newton",
    "resolve_inner_optimizer",
    "scale_by_adam",
    "scale_by_learned_rate",
    "scale_by_learning_rate",
    "sgd",
    "uses_curvature",
]

# Public names live here: pickles, skops and the docs name them sklearn_meta.optim.<Name>.
for _cls in (Chain, Clip, ClipByGlobalNorm, EmptyState, Masked, Newton, ScaleByAdam, ScaleByAdamState,
             ScaleByLearnedRate, ScaleByLearningRate):  # fmt: skip
    _cls.__module__ = __name__


def sgd(lr: float = 0.01) -> ScaleByLearningRate:
    """Plain gradient descent, the inner loop of MAML (``inner_optimizer="sgd"``).

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta import optim
    >>> opt = optim.sgd(0.1)
    >>> params = {"w": torch.tensor([1.0])}
    >>> updates, _ = opt.update({"w": torch.tensor([2.0])}, opt.init(params), params, {})
    >>> optim.apply_updates(params, updates)["w"]
    tensor([0.8000])
    """
    return ScaleByLearningRate(lr)


def meta_sgd(lr: float = 0.01) -> ScaleByLearnedRate:
    """Meta-SGD (``inner_optimizer="meta-sgd"``): a learned step size per weight, starting at ``lr``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta import optim
    >>> opt = optim.meta_sgd(0.5)
    >>> params = {"w": torch.tensor([1.0, 1.0])}
    >>> meta = opt.meta_parameters(params)
    >>> updates, _ = opt.update({"w": torch.tensor([1.0, 2.0])}, opt.init(params), params, meta)
    >>> optim.apply_updates(params, updates)["w"]
    tensor([0.5000, 0.0000])
    """
    return ScaleByLearnedRate(lr)


def adam(lr: float = 0.01, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 1e-12) -> Chain:
    """Adam as a differentiable inner loop (``inner_optimizer="adam"``).

    ``chain(scale_by_adam(b1, b2, eps, eps_root), scale_by_learning_rate(lr))``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta import optim
    >>> opt = optim.adam(0.1)
    >>> params = {"w": torch.tensor([1.0])}
    >>> updates, state = opt.update({"w": torch.tensor([3.0])}, opt.init(params), params, opt.meta_parameters(params))
    >>> round(optim.apply_updates(params, updates)["w"].item(), 4)  # the first Adam step has size lr
    0.9
    """
    return chain(ScaleByAdam(b1, b2, eps, eps_root), ScaleByLearningRate(lr))


_BY_NAME: dict[str, Callable] = {"sgd": sgd, "adam": adam, "meta-sgd": meta_sgd}


def resolve_inner_optimizer(spec, lr: float):
    """Turn an ``inner_optimizer`` argument into an optimizer object.

    A name builds the optimizer with ``lr``; an object is used as it is.
    """
    if isinstance(spec, str):
        return _BY_NAME[spec](lr)
    _check_protocol(spec)
    return spec
