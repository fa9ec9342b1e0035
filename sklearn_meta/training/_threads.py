"""How many intra-op threads torch uses while an estimator computes, and giving the caller's back.

The networks of tabular meta-learning are small: torch's intra-op threads
barely speed up one update, and when another process competes for the
cores they slow it down several times (``benchmarks/out_of_the_box.py``).
:func:`choose` picks one thread for such work and all of the caller's
threads for work large enough to gain from them; :func:`intra_op_threads`
applies the choice around a call and restores the caller's setting after.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import torch

__all__ = ["choose", "forward_flops", "intra_op_threads", "thread_policy"]

# Floating-point operations of one forward pass over one update's rows from which the caller's threads
# are used. Measured on a quiet 2-core CPU (benchmarks/results/out_of_the_box.md, threads table; two runs),
# two threads against one: 0.88-0.97x at 1.7 MFLOP (the default MLP), 1.08-1.35x at 82 MFLOP, 1.4-1.8x from
# 900 MFLOP on. Below a few hundred MFLOP the gain is small or none on a quiet machine, and a loss of several
# times on a busy one (2.6x for the default MLP beside one CPU-bound process).
AUTO_THRESHOLD = 200_000_000

_LOCK = threading.Lock()
_ACTIVE = 0


def choose(n_threads, work: float) -> int | None:
    """The intra-op thread count for ``work`` floating-point operations per forward pass, or ``None``.

    ``n_threads``: ``"auto"`` (one thread below :data:`AUTO_THRESHOLD`,
    the caller's count above it), a positive int (at most that many), or
    ``None`` (torch's setting as the caller left it).
    """
    if n_threads is None:
        return None
    if n_threads == "auto":
        return 1 if work < AUTO_THRESHOLD else torch.get_num_threads()
    return int(n_threads)


@contextlib.contextmanager
def intra_op_threads(n: int | None):
    """Run the block with ``n`` intra-op threads (never more than the caller has), then restore them.

    torch keeps the count per calling thread (OpenMP). Blocks running in
    several Python threads at once take one thread each: two estimators
    fitted side by side in threads must not share two cores four ways.
    """
    global _ACTIVE
    if n is None:
        yield
        return
    caller = torch.get_num_threads()
    with _LOCK:
        _ACTIVE += 1
        concurrent = _ACTIVE > 1
    target = 1 if concurrent else max(1, min(n, caller))
    if target != caller:
        torch.set_num_threads(target)
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE -= 1
        if target != caller:
            torch.set_num_threads(caller)


def forward_flops(module: torch.nn.Module, x: torch.Tensor, rows: int) -> float:
    """Floating-point operations of one forward pass of ``module`` over ``rows`` rows like ``x``'s.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` on at most
    ``rows`` rows of ``x`` and scaled to ``rows``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    sample = x[:rows]
    if len(sample) == 0:
        return 0.0
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(sample)
    return counter.get_total_flops() * rows / len(sample)


def thread_policy(method):
    """Decorate an estimator method whose first argument is ``X``: run it under ``n_threads``'s choice.

    The work is the rows of ``X`` times the fitted network's floating-point
    operations per row (``_flops_per_row_``, counted at ``fit``).
    """

    @functools.wraps(method)
    def wrapper(self, X, *args, **kwargs):
        try:
            rows = len(X)
        except TypeError:  # not a sequence: validation will say so
            rows = 0
        work = rows * getattr(self, "_flops_per_row_", 0.0)
        with intra_op_threads(choose(getattr(self, "n_threads", "auto"), work)):
            return method(self, X, *args, **kwargs)

    return wrapper
