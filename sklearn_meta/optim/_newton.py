"""Curvature-aware inner steps: a damped Newton step from Hessian-vector products."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._base import EmptyState, _check_positive


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
    >>> head_newton = optim.masked(optim.newton(), "head.*")  # curvature-aware steps on the last layer
    """
    return Newton(lr, damping, max_exact, cg_iters)
