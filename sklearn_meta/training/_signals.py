"""Ctrl-C handlers held for the length of a training run."""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["sigint_handler"]


@contextlib.contextmanager
def sigint_handler(handler):
    """Install ``handler`` for Ctrl-C (SIGINT) inside the block, then put back the one it replaced.

    Yields the replaced handler, or ``None`` where nothing is installed:
    outside the main thread (only it may install signal handlers) and under
    a handler installed outside Python (which could not be put back).
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous is None or threading.current_thread() is not threading.main_thread():
        yield None
        return
    signal.signal(signal.SIGINT, handler)
    try:
        yield previous
    finally:
        signal.signal(signal.SIGINT, previous)
