"""Meta-training across processes with :mod:`torch.distributed`: what each rank exchanges, and when.

When ``fit`` runs inside an initialised default process group of more than
one process (``torchrun``, or ``torch.distributed.init_process_group``),
the estimator builds a :class:`Ranks` and the training loop uses it:

- every rank draws the same global meta-batch from the same seeded
  generator and keeps its own slice of it (:meth:`Ranks.shard`), so the
  ranks together compute what one process computes on the whole meta-batch;
- the meta-loss and meta-gradients are averaged, weighted by each rank's
  number of tasks, in one ``all_reduce`` of one flat buffer
  (:meth:`Ranks.exchange`), and every rank takes the same optimizer step;
- the same buffer carries two counters: ranks that stop (Ctrl-C, or a
  callback raising ``KeyboardInterrupt`` on that rank alone) and ranks that
  failed with an exception. Every exchange has the same size, so a rank
  that stops early sends one last exchange (:meth:`Ranks.farewell`) that
  meets whatever exchange the other ranks are in, and they stop at the same
  update instead of waiting for it forever. A non-finite loss on any rank
  makes the averaged loss non-finite on every rank, so all of them stop
  with the same warning.

Nothing here knows about scikit-learn; the estimators decide what to agree on.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import Tensor

from ..engine import GroupBatch, TaskBatch
from ..exceptions import RankFailedError
from ._signals import sigint_handler

# torch.distributed.nn.functional binds ``group.WORLD`` as a default argument of
# its functions when it is first imported. torch imports it lazily (building the
# first torch.optim optimizer imports torch._dynamo, which imports it), so in a script that
# initialises its process group and then fits, the default group stays referenced
# after destroy_process_group: its gloo threads live on until interpreter exit,
# where tearing them down aborts the process now and then ("terminate called
# without an active exception"). Imported here, normally before the user's
# init_process_group, it binds None and keeps nothing alive.
if dist.is_available():
    with contextlib.suppress(ImportError):  # a build without it cannot import it lazily either
        import torch.distributed.nn.functional  # noqa: F401

__all__ = ["RankFailedError", "Ranks"]

# Slots at the end of every exchanged buffer.
_WEIGHT, _STOPPED, _FAILED = -3, -2, -1
_EXTRA = 3


class Ranks:
    """This process's place in the default process group, and the collectives meta-training uses.

    Use :meth:`current` to get one; ``None`` means a single process.
    """

    def __init__(self):
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.interrupted = False  # set by the deferred SIGINT handler
        self._buffer: Tensor | None = None
        self._width = 0

    @classmethod
    def current(cls) -> Ranks | None:
        """The ranks of the initialised default process group, or ``None`` with one process or none."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # Before training --------------------------------------------------------

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, description: dict | None, error: BaseException | None = None) -> None:
        """Check that every rank prepared the same model, or fail on every rank together.

        Each rank passes a description of what must be equal across ranks
        (shapes, classes), or the error its preparation raised. A rank whose
        preparation failed re-raises its own error; the others raise
        :class:`RankFailedError` naming it, instead of waiting for it in the
        first exchange.
        """
        entries = [None] * self.size
        sent = {"error": None if error is None else f"{type(error).__name__}: {error}", "description": description}
        dist.all_gather_object(entries, sent)
        if error is not None:
            raise error
        failed = [(rank, entry["error"]) for rank, entry in enumerate(entries) if entry["error"] is not None]
        if failed:
            rank, message = failed[0]
            raise RankFailedError(f"fit() failed on rank {rank} of {self.size} ({message}); this rank stopped too.")
        for rank, entry in enumerate(entries):
            differs = [key for key in description if not _same(entry["description"][key], description[key])]
            if differs:
                raise ValueError(
                    f"Distributed fit: rank {rank} and rank {self.rank} prepared different models "
                    f"({', '.join(differs)} differ). Every rank needs the same features, target columns and "
                    "classes (each may hold different tasks), and the same estimator arguments."
                )

    def broadcast_(self, tensors: list[Tensor]) -> None:
        """Overwrite ``tensors`` with rank 0's values, in one broadcast."""
        with torch.no_grad():
            flat = torch.cat([t.detach().reshape(-1) for t in tensors])
            dist.broadcast(flat, src=0)
            for t, piece in zip(tensors, torch.split(flat, [t.numel() for t in tensors])):
                t.copy_(piece.view_as(t))

    def open(self, width: int, device, dtype=torch.float32) -> None:
        """Allocate the exchange buffer: room for ``width`` numbers and the counters."""
        self._width = int(width)
        self._buffer = torch.zeros(self._width + _EXTRA, device=device, dtype=dtype)

    # During training -------------------------------------------------------

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's slice of ``n`` items: as even as possible, the first ranks one more."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def shard(self, batch: TaskBatch | GroupBatch) -> TaskBatch | GroupBatch:
        """This rank's tasks (or groups) of a meta-batch drawn identically on every rank."""
        start, stop = self.bounds(len(batch[0]))
        return type(batch)(*(None if t is None else t[start:stop] for t in batch))

    def exchange(self, tensors: list[Tensor], weight: float) -> tuple[list[Tensor], float, bool]:
        """Average ``tensors`` over the ranks, weighted by ``weight``, in one ``all_reduce``.

        Returns the averaged tensors (new tensors, shaped as given), the total
        weight, and whether any rank stopped (then the averages are those of
        the ranks that did not, and the caller stops too). Raises
        :class:`RankFailedError` when another rank failed.
        """
        buffer = self._buffer
        sizes = [t.numel() for t in tensors]
        used = sum(sizes)
        if used > self._width:
            raise RuntimeError(f"exchange of {used} numbers exceeds the buffer of {self._width}")
        buffer.zero_()
        if self.interrupted:  # Ctrl-C on this rank: stop, contributing nothing
            buffer[_STOPPED] = 1
        else:
            if tensors:
                torch.cat([t.detach().reshape(-1).to(buffer.dtype) for t in tensors], out=buffer[:used])
                buffer[:used].mul_(weight)
            buffer[_WEIGHT] = weight
        dist.all_reduce(buffer)
        tail = buffer[-_EXTRA:].tolist()  # one device sync
        total, stopped, failed = tail[_WEIGHT], tail[_STOPPED], tail[_FAILED]
        if failed:
            raise RankFailedError(
                f"Meta-training failed on {int(failed)} other rank(s) (see their errors); this rank stopped "
                "too and its estimator is unchanged."
            )
        if stopped or total == 0:
            return [], total, True
        averaged = buffer[:used] / total
        return [a.view_as(t).to(t.dtype) for a, t in zip(torch.split(averaged, sizes), tensors)], total, False

    def farewell(self, failed: bool) -> None:
        """Send this rank's last exchange: it stops (or failed), and the others learn it at their next one."""
        buffer = self._buffer
        if buffer is None:
            return
        buffer.zero_()
        buffer[_FAILED if failed else _STOPPED] = 1
        with contextlib.suppress(Exception):  # the group may already be broken
            dist.all_reduce(buffer)

    @contextlib.contextmanager
    def deferred_interrupts(self):
        """Turn Ctrl-C into a flag that the next exchange sends, so all ranks stop at the same update.

        Only the main thread can install a signal handler; elsewhere Ctrl-C
        is left as it is.
        """

        def handler(signum, frame):
            self.interrupted = True

        with sigint_handler(handler):
            yield


def _same(a, b) -> bool:
    try:
        return bool(a == b) if not hasattr(a, "__len__") else list(a) == list(b)
    except (TypeError, ValueError):
        return repr(a) == repr(b)
