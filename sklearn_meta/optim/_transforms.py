"""The elementary transformations: learning rates, Adam's rescaling, clipping."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._base import EmptyState, ScaleByAdamState, _check_positive


@dataclass(frozen=True)
class ScaleByLearningRate:
    """Scale updates by ``-lr``: with gradients as input, a gradient-descent step.

    Parameters
    ----------
    lr : float
        Step size.
    """

    lr: float = 0.01

    def __post_init__(self):
        _check_positive("lr", self.lr)

    def meta_parameters(self, params):
        return {}

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params, meta):
        return {name: -self.lr * u for name, u in updates.items()}, state


@dataclass(frozen=True)
class ScaleByLearnedRate:
    """Scale updates by minus a learned rate per parameter entry (Meta-SGD's preconditioner).

    Li et al. (2017), "Meta-SGD". The rates are meta-parameters: they start
    at ``lr`` and the outer loop trains them with the initialisation. It is a
    learned diagonal preconditioner, and chains with any other transformation
    (after :class:`ScaleByAdam`, for example).

    Parameters
    ----------
    lr : float
        Initial value of every rate.
    """

    lr: float = 0.01

    def __post_init__(self):
        _check_positive("lr", self.lr)

    def meta_parameters(self, params):
        return {name: torch.full_like(p, self.lr) for name, p in params.items()}

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params, meta):
        return {name: -meta[name] * u for name, u in updates.items()}, state


@dataclass(frozen=True)
class ScaleByAdam:
    """Rescale updates by Adam's bias-corrected moment estimates (no learning rate).

    Both moments and the bias correction are ordinary tensor expressions, so
    second-order meta-gradients flow through them.

    Parameters
    ----------
    b1, b2 : float
        Decay rates of the first and second moment estimates, in [0, 1).
    eps : float
        Added to the denominator for numerical stability.
    eps_root : float
        Added inside the square root. It must be positive for differentiating
        through the update: the derivative of ``sqrt(v)`` is infinite at
        ``v = 0``, which happens for any parameter whose gradient is exactly
        zero (a dead ReLU unit) and would turn the meta-gradient into NaN.
    """

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 1e-12

    def __post_init__(self):
        for name in ("b1", "b2"):
            value = getattr(self, name)
            _check_positive(name, value, allow_zero=True)
            if value >= 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
        _check_positive("eps", self.eps, allow_zero=True)
        _check_positive("eps_root", self.eps_root, allow_zero=True)

    def meta_parameters(self, params):
        return {}

    def init(self, params):
        zeros = {name: torch.zeros_like(p) for name, p in params.items()}
        # The count shares the parameters' dtype so the bias correction keeps their precision.
        first = next(iter(params.values()))
        count = torch.zeros((), dtype=first.dtype, device=first.device)
        return ScaleByAdamState(count, zeros, dict(zeros))

    def update(self, updates, state, params, meta):
        count = state.count + 1
        mu = {k: self.b1 * state.mu[k] + (1 - self.b1) * u for k, u in updates.items()}
        nu = {k: self.b2 * state.nu[k] + (1 - self.b2) * u * u for k, u in updates.items()}
        bias1 = 1 - self.b1**count
        bias2 = 1 - self.b2**count
        scaled = {k: (mu[k] / bias1) / (torch.sqrt(nu[k] / bias2 + self.eps_root) + self.eps) for k in updates}
        return scaled, ScaleByAdamState(count, mu, nu)


@dataclass(frozen=True)
class ClipByGlobalNorm:
    """Rescale all updates together so that their joint norm is at most ``max_norm``.

    Parameters
    ----------
    max_norm : float
        Largest allowed norm of the updates of one step.
    """

    max_norm: float = 1.0

    def __post_init__(self):
        _check_positive("max_norm", self.max_norm)

    def meta_parameters(self, params):
        return {}

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params, meta):
        norm = torch.sqrt(sum((u * u).sum() for u in updates.values()))
        factor = torch.clamp(self.max_norm / (norm + 1e-12), max=1.0)
        return {name: u * factor for name, u in updates.items()}, state


@dataclass(frozen=True)
class Clip:
    """Clip every update entry to ``[-max_delta, max_delta]``.

    Parameters
    ----------
    max_delta : float
        Largest allowed absolute value of an update entry.
    """

    max_delta: float = 1.0

    def __post_init__(self):
        _check_positive("max_delta", self.max_delta)

    def meta_parameters(self, params):
        return {}

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params, meta):
        return {name: u.clamp(-self.max_delta, self.max_delta) for name, u in updates.items()}, state


def scale_by_learning_rate(lr: float) -> ScaleByLearningRate:
    """Scale updates by ``-lr``; see :class:`ScaleByLearningRate`."""
    return ScaleByLearningRate(lr)


def scale_by_learned_rate(lr: float) -> ScaleByLearnedRate:
    """A learned rate per parameter entry, starting at ``lr``; see :class:`ScaleByLearnedRate`."""
    return ScaleByLearnedRate(lr)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 1e-12) -> ScaleByAdam:
    """Adam's rescaling, without the learning rate; see :class:`ScaleByAdam`."""
    return ScaleByAdam(b1, b2, eps, eps_root)


def clip_by_global_norm(max_norm: float) -> ClipByGlobalNorm:
    """Clip the joint norm of the updates; see :class:`ClipByGlobalNorm`."""
    return ClipByGlobalNorm(max_norm)


def clip(max_delta: float) -> Clip:
    """Clip each update entry; see :class:`Clip`."""
    return Clip(max_delta)
