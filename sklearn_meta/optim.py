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
:func:`meta_sgd` built with ``inner_lr``.

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

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

Params = dict[str, Tensor]
Updates = dict[str, Tensor]

__all__ = [
    "Chain",
    "Clip",
    "ClipByGlobalNorm",
    "EmptyState",
    "InnerOptimizer",
    "Masked",
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
    "Newton",
    "newton",
    "uses_curvature",
    "resolve_inner_optimizer",
    "scale_by_adam",
    "scale_by_learned_rate",
    "scale_by_learning_rate",
    "sgd",
]


@runtime_checkable
class InnerOptimizer(Protocol):
    """The protocol every inner optimizer (and every transformation) follows.

    All methods must be pure: they return new tensors and never modify their
    arguments, so that gradients flow through them and ``vmap`` can batch
    them over tasks. An optional ``adapts(name) -> bool`` method restricts
    which parameters adapt (all of them when it is absent).
    """

    def meta_parameters(self, params: Params) -> Any:
        """Initial values of the tensors the outer loop learns about the optimizer.

        Parameters
        ----------
        params : dict of str to Tensor
            The adapted parameters' meta-learned initialisation.

        Returns
        -------
        meta : dict of str to Tensor, or a tuple of them
            Meta-SGD's per-parameter learning rates, for example; an empty
            dict when there are none.
        """

    def init(self, params: Params) -> Any:
        """Return the state of a fresh adaptation of ``params``."""

    def update(self, updates: Updates, state: Any, params: Params, meta: Any) -> tuple[Updates, Any]:
        """Transform ``updates``; return the new updates and the new state."""


class EmptyState(NamedTuple):
    """State of a transformation that keeps none."""


class ScaleByAdamState(NamedTuple):
    """Adam's step count and moment estimates."""

    count: Tensor
    mu: Updates
    nu: Updates


def apply_updates(params: Params, updates: Updates) -> Params:
    """Add ``updates`` to ``params``; parameters without an update stay as they are.

    Examples
    --------
    >>> import torch
    >>> apply_updates({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, {"a": torch.tensor(0.5)})
    {'a': tensor(1.5000), 'b': tensor(2.)}
    """
    return {name: p + updates[name] if name in updates else p for name, p in params.items()}


def _check_positive(name: str, value, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {bound} finite number, got {value!r}.")


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


def uses_curvature(transform) -> bool:
    """Whether ``transform.update`` takes the task loss's Hessian-vector product (``hvp=``)."""
    return bool(getattr(transform, "curvature", False))


@dataclass(frozen=True)
class Newton:
    """A damped Newton step, ``-lr (H + lambda I)^-1 g``, with a meta-learned damping ``lambda``.

    ``H`` is the Hessian of the task's loss with respect to the adapted
    parameters, which the inner loop supplies as a Hessian-vector product
    (``update(..., hvp=)``). Up to ``max_exact`` adapted entries (a head:
    41 for a 40-unit regression head), ``H`` is built exactly from as many
    products and the system solved directly; beyond, ``cg_iters``
    conjugate-gradient iterations solve it from products alone. Both are
    differentiable and vectorise over tasks. The damping starts at
    ``damping`` and is meta-learned (in log space), so the step can move
    between a Newton step (small damping) and a small gradient step.

    Parameters
    ----------
    lr : float, default=1.0
        Step scale (1 is the full Newton step).
    damping : float, default=1.0
        Initial ``lambda``.
    max_exact : int, default=512
        Largest number of adapted entries for the exact solve.
    cg_iters : int, default=20
        Conjugate-gradient iterations above ``max_exact``.
    """

    lr: float = 1.0
    damping: float = 1.0
    max_exact: int = 512
    cg_iters: int = 20
    curvature = True

    def __post_init__(self):
        _check_positive("lr", self.lr)
        _check_positive("damping", self.damping)

    def meta_parameters(self, params):
        first = next(iter(params.values()))
        return {"log_damping": torch.tensor(math.log(self.damping), dtype=first.dtype, device=first.device)}

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params, meta, hvp=None):
        if hvp is None:
            raise ValueError("Newton needs the inner loop's Hessian-vector product (hvp=).")
        names = list(updates)
        flat = torch.cat([updates[name].reshape(-1) for name in names])
        damping = meta["log_damping"].exp()

        def damped(vector):
            return hvp(vector) + damping * vector

        if flat.numel() <= self.max_exact:
            eye = torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device)
            hessian = torch.func.vmap(damped)(eye)  # rows H e_i + lambda e_i: the damped Hessian (symmetric)
            direction = torch.linalg.solve(hessian, flat)
        else:
            direction = _conjugate_gradient(damped, flat, self.cg_iters)
        steps, start = {}, 0
        for name in names:
            size = updates[name].numel()
            steps[name] = -self.lr * direction[start : start + size].reshape(updates[name].shape)
            start += size
        return steps, state


def _conjugate_gradient(matvec, b, iterations: int):
    """Solve ``matvec(x) = b`` for a symmetric positive definite operator, a fixed number of iterations."""
    x = torch.zeros_like(b)
    residual, direction = b, b
    norm = residual @ residual
    for _ in range(iterations):
        product = matvec(direction)
        step = norm / (direction @ product + 1e-30)
        x = x + step * direction
        residual = residual - step * product
        new_norm = residual @ residual
        direction = residual + (new_norm / (norm + 1e-30)) * direction
        norm = new_norm
    return x


def newton(lr: float = 1.0, damping: float = 1.0, max_exact: int = 512, cg_iters: int = 20) -> Newton:
    """A damped Newton step with a meta-learned damping; see :class:`Newton`.

    Examples
    --------
    >>> from sklearn_meta import optim
    >>> head_newton = optim.masked(optim.newton(), "4.*")  # curvature-aware steps on the last layer
    """
    return Newton(lr, damping, max_exact, cg_iters)


def _adapts(transform, name: str) -> bool:
    adapts = getattr(transform, "adapts", None)
    return True if adapts is None else bool(adapts(name))


def adapted_names(optimizer, names: Iterable[str]) -> tuple[str, ...]:
    """The parameter names, among ``names``, that ``optimizer`` adapts (in order).

    Raises
    ------
    ValueError
        If it adapts none of them.
    """
    names = tuple(names)
    selected = tuple(name for name in names if _adapts(optimizer, name))
    if not selected:
        raise ValueError(
            f"The inner optimizer adapts none of the network's parameters {list(names)}: its mask "
            "selects nothing. Check the parameter names (module.named_parameters())."
        )
    return selected


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


def _check_protocol(spec) -> None:
    missing = [m for m in ("meta_parameters", "init", "update") if not callable(getattr(spec, m, None))]
    if missing:
        raise TypeError(
            f"inner_optimizer {spec!r} must be one of {sorted(_BY_NAME)} or an object "
            f"with methods meta_parameters, init and update; it lacks {', '.join(missing)}."
        )


def resolve_inner_optimizer(spec, lr: float):
    """Turn an ``inner_optimizer`` argument into an optimizer object.

    A name builds the optimizer with ``lr``; an object is used as it is.
    """
    if isinstance(spec, str):
        return _BY_NAME[spec](lr)
    _check_protocol(spec)
    return spec
