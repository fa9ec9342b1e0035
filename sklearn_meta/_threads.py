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
import threading

import torch

__all__ = ["choose", "forward_flops", "intra_op_threads"]

# Floating-point operations of one forward pass over one update's rows above which the caller's threads pay:
# measured in benchmarks/out_of_the_box.py (threads table) on a 2-core CPU, where two threads first beat
# one at about this much work per update, and never lose by much above it.
AUTO_THRESHOLD = 50_000_000

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
