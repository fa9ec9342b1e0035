"""Inner-loop optimizers: pure, differentiable transforms over parameter dicts.

An inner optimizer adapts a network's parameters to one task. It is written
in the style of optax and TorchOpt: a pair of pure functions over dicts of
tensors, with no hidden state and no in-place updates, so the same code is
differentiated through (MAML), vectorised across tasks with
:func:`torch.func.vmap`, and run without a graph when serving.

Any object with the three methods of :class:`InnerOptimizer` can be passed
as ``inner_optimizer`` to :class:`~sklearn_meta.MetaRegressor` and
:class:`~sklearn_meta.MetaClassifier`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Params = dict[str, Tensor]

__all__ = ["SGD", "Adam", "InnerOptimizer", "MetaSGD", "Params"]


@runtime_checkable
class InnerOptimizer(Protocol):
    """The protocol every inner optimizer follows.

    All three methods must be pure: they return new tensors and never modify
    their arguments, so that gradients flow through them and ``vmap`` can
    batch them over tasks.
    """

    def meta_parameters(self, params: Params) -> Params:
        """Tensors the outer loop learns about the optimizer itself.

        Parameters
        ----------
        params : dict of str to Tensor
            The network's meta-learned initialisation.

        Returns
        -------
        meta : dict of str to Tensor
            Initial values of the optimizer's meta-parameters (Meta-SGD's
            per-parameter learning rates); empty when there are none.
        """

    def init(self, params: Params) -> Any:
        """Return the optimizer state for a fresh adaptation of ``params``."""

    def update(self, grads: Params, state: Any, params: Params, meta: Params) -> tuple[Params, Any]:
        """Take one step: return the new parameters and the new state."""


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent, the inner loop of MAML.

    Parameters
    ----------
    lr : float, default=0.01
        Step size.

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta.optim import SGD
    >>> opt = SGD(lr=0.1)
    >>> params = {"w": torch.tensor([1.0])}
    >>> new, _ = opt.update({"w": torch.tensor([2.0])}, opt.init(params), params, {})
    >>> new["w"]
    tensor([0.8000])
    """

    lr: float = 0.01

    def meta_parameters(self, params: Params) -> Params:
        return {}

    def init(self, params: Params) -> tuple:
        return ()

    def update(self, grads, state, params, meta):
        return {name: p - self.lr * grads[name] for name, p in params.items()}, state


@dataclass(frozen=True)
class MetaSGD:
    """Gradient descent with a learned learning rate per parameter entry.

    Li et al. (2017), "Meta-SGD". The learning rates are meta-parameters:
    they start at ``lr`` and are trained by the outer loop together with
    the initialisation, then saved with the model.

    Parameters
    ----------
    lr : float, default=0.01
        Initial value of every per-parameter learning rate.

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta.optim import MetaSGD
    >>> opt = MetaSGD(lr=0.5)
    >>> params = {"w": torch.tensor([1.0, 1.0])}
    >>> meta = opt.meta_parameters(params)
    >>> meta["w"]
    tensor([0.5000, 0.5000])
    >>> opt.update({"w": torch.tensor([1.0, 2.0])}, (), params, meta)[0]["w"]
    tensor([0.5000, 0.0000])
    """

    lr: float = 0.01

    def meta_parameters(self, params: Params) -> Params:
        return {name: torch.full_like(p, self.lr) for name, p in params.items()}

    def init(self, params: Params) -> tuple:
        return ()

    def update(self, grads, state, params, meta):
        return {name: p - meta[name] * grads[name] for name, p in params.items()}, state


@dataclass(frozen=True)
class Adam:
    """Adam as a differentiable inner loop.

    Both moment estimates and the bias correction are ordinary tensor
    expressions, so second-order meta-gradients flow through them.

    Parameters
    ----------
    lr : float, default=0.01
        Step size.
    betas : tuple of float, default=(0.9, 0.999)
        Decay rates of the first and second moment estimates.
    eps : float, default=1e-8
        Added to the denominator for numerical stability.
    eps_root : float, default=1e-12
        Added inside the square root. It must be positive for
        differentiating through the update: the derivative of ``sqrt(v)`` is
        infinite at ``v = 0``, which happens for any parameter whose gradient
        is exactly zero (a dead ReLU unit) and would turn the meta-gradient
        into NaN.

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta.optim import Adam
    >>> opt = Adam(lr=0.1)
    >>> params = {"w": torch.tensor([1.0])}
    >>> state = opt.init(params)
    >>> new, state = opt.update({"w": torch.tensor([3.0])}, state, params, {})
    >>> round(new["w"].item(), 4)  # the first Adam step has size lr
    0.9
    """

    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    eps_root: float = 1e-12

    def meta_parameters(self, params: Params) -> Params:
        return {}

    def init(self, params: Params) -> dict:
        zeros = {name: torch.zeros_like(p) for name, p in params.items()}
        # The step count shares the parameters' dtype so that the bias correction
        # keeps their precision.
        first = next(iter(params.values()))
        return {"step": torch.zeros((), dtype=first.dtype, device=first.device), "mu": zeros, "nu": dict(zeros)}

    def update(self, grads, state, params, meta):
        beta1, beta2 = self.betas
        step = state["step"] + 1
        mu = {k: beta1 * state["mu"][k] + (1 - beta1) * g for k, g in grads.items()}
        nu = {k: beta2 * state["nu"][k] + (1 - beta2) * g * g for k, g in grads.items()}
        bias1 = 1 - beta1**step
        bias2 = 1 - beta2**step
        new_params = {
            k: p - self.lr * (mu[k] / bias1) / (torch.sqrt(nu[k] / bias2 + self.eps_root) + self.eps)
            for k, p in params.items()
        }
        return new_params, {"step": step, "mu": mu, "nu": nu}


_BY_NAME = {"sgd": SGD, "adam": Adam, "meta-sgd": MetaSGD}


def resolve_inner_optimizer(spec, lr: float) -> InnerOptimizer:
    """Turn an ``inner_optimizer`` argument into an optimizer object.

    A name builds the optimizer with ``lr``; an object is used as it is.
    """
    if isinstance(spec, str):
        return _BY_NAME[spec](lr=lr)
    missing = [m for m in ("meta_parameters", "init", "update") if not callable(getattr(spec, m, None))]
    if missing:
        raise TypeError(
            f"inner_optimizer {spec!r} must be one of {sorted(_BY_NAME)} or an object "
            f"with methods meta_parameters, init and update; it lacks {', '.join(missing)}."
        )
    return spec
