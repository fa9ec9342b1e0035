"""The meta-training loop, run by a skorch ``NeuralNet`` that skorch callbacks receive as ``net``.

One outer update is one skorch epoch holding one training "batch" (the
meta-batch of tasks) and, with early stopping, one validation batch (the
held-out tasks). :class:`MetaNet` is a real :class:`skorch.NeuralNet`:
callbacks get its ``module_`` (the :class:`MetaModel`), ``optimizer_`` (the
meta-optimizer), ``criterion_`` and ``history``, skorch's ``notify`` calls
them, its default callbacks (``EpochTimer``, and ``PassthroughScoring`` for
``train_loss`` / ``valid_loss``, read from the epoch's one batch) record the log, and its ``save_params`` /
``load_params`` serve ``Checkpoint`` and ``LoadInitState``.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Callable

import torch
from skorch import NeuralNet
from skorch.callbacks import EpochTimer
from torch.utils._pytree import tree_leaves

from .._warnings import warn
from ..engine import TaskBatch, batch_size, compiled_meta_loss, meta_gradient
from ..exceptions import NonFiniteLossWarning, RankFailedError
from ..heads import FunctionalNetwork, Head
from ._callbacks import MetaProgressBar, OneBatchScoring, ThinnedPrintLog
from ._distributed import Ranks
from ._signals import sigint_handler

__all__ = ["MetaNet", "train"]


class MetaNet(NeuralNet):
    """The training object: what skorch callbacks receive as ``net`` during meta-training.

    Built by the estimators' ``fit``; not for direct use. ``module`` is a
    :class:`MetaModel` instance, ``optimizer`` the meta-optimizer class and
    ``lr`` its learning rate, ``max_epochs`` the number of outer updates.
    """

    def __init__(self, module, criterion, *, progress_every: int = 0, **kwargs):
        super().__init__(module, criterion, train_split=None, **kwargs)
        self.progress_every = progress_every

    @property
    def _default_callbacks(self):
        log = []
        if self.verbose == 1:
            log = [("progress_bar", MetaProgressBar(self.max_epochs))]
        elif self.verbose >= 2:
            log = [("print_log", ThinnedPrintLog(self.progress_every))]
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", OneBatchScoring(name="train_loss", on_train=True)),
            ("valid_loss", OneBatchScoring(name="valid_loss")),
            *log,
        ]


def _all_finite(tensors) -> bool:
    # One reduction and one sync: NaN and infinity survive a sum (inf - inf is NaN). Only a
    # sum beyond the float range, of values that large, reads as non-finite.
    return bool(torch.isfinite(torch.stack([t.sum() for t in tensors]).sum()))


class _CtrlC:
    """Ctrl-C while training: passed on at once, except inside ``with ctrl_c:``, which first runs to its end.

    Keeps an update and its history row together: a Ctrl-C between
    ``optimizer.step()`` and the row being written would otherwise leave a
    model one update ahead of its ``n_iter_``. :meth:`installed` puts the
    handler in place for a whole training run (swapping a signal handler
    costs about 10 us, too much for every update); a Ctrl-C goes to the
    handler that was there before (Python's raises ``KeyboardInterrupt``; the
    distributed one sets its flag). Only the main thread receives signals;
    elsewhere, and under a handler installed outside Python, nothing changes.
    """

    def __init__(self):
        self.previous = None
        self.holding = self.pending = False

    @contextlib.contextmanager
    def installed(self):
        with sigint_handler(self._handler) as self.previous:
            try:
                yield
            finally:
                self.previous = None

    def _handler(self, signum, frame):
        if self.holding:
            self.pending = True
        else:
            self._pass_on(frame)

    def _pass_on(self, frame=None):
        if callable(self.previous):
            self.previous(signal.SIGINT, frame)
        elif self.previous is not None:  # SIG_DFL or SIG_IGN: let the signal do what they do
            signal.signal(signal.SIGINT, self.previous)
            signal.raise_signal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)

    def __enter__(self):
        self.holding = True

    def __exit__(self, exc_type, exc, tb):
        self.holding = False
        if self.pending:
            self.pending = False
            if exc_type is None:  # an error leaving the block wins over the Ctrl-C it held
                self._pass_on()


def _record_batch(history, prefix: str, values: dict, size: int) -> None:
    # Batch-level entries, as skorch's own loops record them, for PassthroughScoring, in the
    # batch that skorch's on_batch_begin opened; the epoch-level values are recorded directly
    # too, so the log never depends on which default callbacks a user kept.
    for key, value in values.items():
        history.record_batch(key, value)
        history.record(key, value)
    history.record_batch(f"{prefix}_batch_size", size)


def train(
    net: MetaNet,
    network: FunctionalNetwork,
    head: Head,
    sample: Callable[[], TaskBatch],
    *,
    max_iter: int,
    validate: Callable[[], tuple[dict, int]] | None = None,
    max_grad_norm: float | None = None,
    compile: bool = False,
    ranks: Ranks | None = None,
) -> bool:
    """Run up to ``max_iter`` outer updates of ``net.module_``, appending to ``net.history``.

    A ``KeyboardInterrupt`` (Ctrl-C, or skorch's ``EarlyStopping``) ends
    training with the last completed update. A non-finite meta-loss,
    meta-gradient or updated parameter stops training with the last finite
    meta-parameters and a warning; before any update, :class:`ValueError`.
    A history row exists exactly for every update the model has. Returns
    whether the meta-loss ran compiled (``compile`` and no fallback).

    With ``ranks`` (see ``_distributed``), every rank starts from rank 0's
    parameters, computes the meta-gradient of its slice of each meta-batch,
    and takes the step of the averaged meta-gradient; validation results
    are averaged too, so that early stopping decides the same on every
    rank. Every way of stopping stops all ranks at the same update.
    """
    model, optimizer = net.module_, net.optimizer_
    loss_fn = compiled_meta_loss(network, head) if compile and not head.recomputes else None
    params = list(model.parameters())
    # The same tensors every update (the optimizer steps them in place; a loaded checkpoint too).
    init_params, head_meta = model.init_params(), model.head_meta()
    named_parameters = list(model.named_parameters())
    net.notify("on_train_begin")
    # Read after on_train_begin: LoadInitState may replace the history with a saved one.
    history = net.history
    n_before = len(history)  # rows of earlier fits (warm start, a loaded checkpoint)
    if ranks is not None:
        ranks.broadcast_(params)  # one starting point, however each rank built its own
        ranks.open(1 + sum(p.numel() for p in params), params[0].device, params[0].dtype)
    backup = [p.detach().clone() for p in params]
    ctrl_c = _CtrlC()
    try:
        with contextlib.nullcontext() if ranks is None else ranks.deferred_interrupts(), ctrl_c.installed():
            for _ in range(max_iter):
                net.notify("on_epoch_begin")
                batch = sample()
                if ranks is not None:
                    batch = ranks.shard(batch)
                net.notify("on_batch_begin", batch=batch, training=True)
                try:
                    loss, param_grads, meta_grads = meta_gradient(network, head, init_params, head_meta, batch, loss_fn)
                except Exception as error:  # compilation failed (platform, toolchain): carry on eagerly
                    if loss_fn is None:
                        raise
                    warn(f"torch.compile failed ({type(error).__name__}: {error}); training eagerly.", UserWarning)
                    loss_fn = None
                    loss, param_grads, meta_grads = meta_gradient(network, head, init_params, head_meta, batch)
                grads = [*param_grads.values(), *tree_leaves(meta_grads)]
                size = batch_size(batch)
                if ranks is not None:  # one all-reduce: the meta-loss and every meta-gradient
                    averaged, size, stopped = ranks.exchange([loss, *grads], size)
                    if stopped:  # Ctrl-C on some rank: nobody makes this update
                        history.pop()
                        break
                    loss, grads = averaged[0], averaged[1:]
                loss_value = loss.item()
                # A non-finite gradient with a finite loss makes the stepped parameters non-finite,
                # which the check after the step catches: one check of the loss suffices here.
                if not math.isfinite(loss_value):
                    if not _all_finite(params):  # a callback wrote non-finite values into the model
                        _restore(params, backup)
                    _stop_non_finite(history, n_before)
                    break
                with torch.no_grad():
                    torch._foreach_copy_(backup, params)
                for p, g in zip(params, grads):
                    p.grad = g
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                net.notify("on_grad_computed", named_parameters=named_parameters, batch=batch, training=True)
                with ctrl_c:  # the step and its history row, or neither
                    try:
                        optimizer.step()
                    except RuntimeError as error:  # a step size beyond float range: torch refuses to convert it
                        if "overflow" not in str(error):
                            raise
                        _restore(params, backup)
                        _stop_non_finite(history, n_before, overflow=str(error))
                        break
                    if not _all_finite(params):  # an overflowing step: undo it
                        _restore(params, backup)
                        _stop_non_finite(history, n_before)
                        break
                    _record_batch(history, "train", {"train_loss": loss_value}, int(size))
                net.notify("on_batch_end", batch=batch, training=True)
                if validate is not None:
                    values, size = validate()
                    if ranks is not None:  # early stopping must decide the same on every rank
                        names = list(values)
                        averaged, size, stopped = ranks.exchange([torch.tensor(values[k]) for k in names], size)
                        if stopped:
                            break
                        values = {name: value.item() for name, value in zip(names, averaged)}
                    net.notify("on_batch_begin", training=False)
                    _record_batch(history, "valid", values, int(size))
                    net.notify("on_batch_end", training=False)
                net.notify("on_epoch_end")
    except KeyboardInterrupt:
        if history and "train_loss" not in history[-1]:
            history.pop()  # the interrupted update never started stepping
        if ranks is not None:  # a callback stopped this rank: the others stop at their next exchange
            ranks.farewell(failed=False)
    except RankFailedError:
        raise
    except BaseException:
        if ranks is not None:  # the others must not wait for this rank's next exchange
            ranks.farewell(failed=True)
        raise
    for p in params:
        p.grad = None
    net.notify("on_train_end")
    return loss_fn is not None and len(history) > n_before


def _restore(params, backup) -> None:
    with torch.no_grad():
        for p, b in zip(params, backup):
            p.copy_(b)


def _stop_non_finite(history, n_before: int, overflow: str | None = None) -> None:
    """Drop the row of the update that was not made; raise if no update was ever made, else warn."""
    iteration = history[-1, "epoch"]
    history.pop()  # the row of the update that was not made
    if overflow is not None:  # the meta-optimizer could not even take the step
        what = (
            f"The meta-optimizer's step overflowed the float32 range at iteration {iteration} ({overflow}): "
            "its learning rate (meta_lr, times the head's meta_lr_factor for the head's own meta-parameters) "
            "is too large."
        )
        if len(history) == n_before:
            raise ValueError(f"{what} No update was made. Lower meta_lr.")
        warn(
            f"{what} Meta-training stopped and kept the last finite meta-parameters ({len(history)} updates). "
            "Lower meta_lr.",
            NonFiniteLossWarning,
        )
        return
    if len(history) == n_before:
        raise ValueError(
            f"The meta-loss or its gradient was not finite at iteration {iteration}, before any "
            "update could be made. Lower meta_lr (or a gradient head's inner_lr), scale the inputs, or clip the "
            "meta-gradient with skorch's GradientNormClipping callback."
        )
    warn(
        f"The meta-loss, its gradient or the updated meta-parameters became non-finite at iteration "
        f"{iteration}; meta-training stopped and kept the last finite meta-parameters ({len(history)} "
        "updates). Lower meta_lr (or a gradient head's inner_lr), or clip the meta-gradient with skorch's "
        "GradientNormClipping callback.",
        NonFiniteLossWarning,
    )
