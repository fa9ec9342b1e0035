"""Linear algebra the closed-form heads share: the design matrix, a safe Cholesky, the Student-t likelihood."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._base import masked_mean

__all__ = ["cholesky", "design", "last_layer", "one_hot", "student_t_nll", "with_last_layer"]


def cholesky(matrix: Tensor) -> Tensor:
    """Cholesky factor of ``matrix``, all NaN where it does not factorise (non-finite features).

    A NaN then reaches the loss or the predictions, where the estimators'
    finiteness checks report it, instead of a linear-algebra error escaping
    from inside a vectorised solve.
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    return torch.where(info == 0, factor, torch.full_like(factor, math.nan))


def design(features: Tensor) -> Tensor:
    """The features with a column of ones (the last layer's bias)."""
    return torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)


def last_layer(params) -> Tensor:
    """The last layer as one ``(n_features + 1, n_outputs)`` matrix: weights, then the bias."""
    return torch.cat([params["head.weight"].T, params["head.bias"][None]], dim=0)


def with_last_layer(params, matrix: Tensor) -> dict:
    """``params`` with the last layer replaced by ``matrix`` (as :func:`last_layer` lays it out)."""
    matrix = matrix.to(params["head.weight"].dtype)
    return {**params, "head.weight": matrix[:-1].T, "head.bias": matrix[-1]}


def one_hot(y: Tensor, n_classes: int, dtype) -> Tensor:
    """One-hot rows of the class codes ``y``."""
    return (y[:, None] == torch.arange(n_classes, device=y.device)).to(dtype)


def student_t_nll(y: Tensor, mean: Tensor, dof: Tensor, scale2: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean negative log-density of ``y`` under Student-t distributions (location, squared scale, dof).

    With ``mask`` (one entry per row), the mean over the rows where it is 1.
    """
    half = (dof + 1) / 2
    log_norm = torch.lgamma(half) - torch.lgamma(dof / 2) - 0.5 * torch.log(dof * math.pi * scale2)
    nll = half * torch.log1p((y - mean) ** 2 / (dof * scale2)) - log_norm
    if mask is None:
        return nll.mean()
    return masked_mean(nll.mean(dim=-1), mask.to(nll.dtype))
