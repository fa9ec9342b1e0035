"""The meta-training loop: outer updates, skorch History and callbacks, fault handling.

One outer update is one skorch "epoch": it appends a row to the History and
calls the callbacks' ``on_epoch_*`` hooks, so skorch's ``EarlyStopping``,
``PrintLog`` and user callbacks work unchanged.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from skorch.callbacks import Callback, PrintLog
from skorch.history import History
from torch import nn

from ._engine import Learner, TaskBatch, compiled_meta_loss, meta_gradient
from .exceptions import NonFiniteLossWarning

__all__ = ["MetaModel", "MetaProgressBar", "ThinnedPrintLog", "TrainingView", "train"]


class MetaModel(nn.Module):
    """The meta-learned state: the network's initialisation and the inner optimizer's meta-parameters.

    One module, so the meta-optimizer, ``state_dict`` and skorch callbacks
    (``EarlyStopping(load_best=True)``) see both.
    """

    def __init__(self, network: nn.Module, inner_meta: dict[str, torch.Tensor]):
        super().__init__()
        self.network = network
        # ParameterDict keys cannot contain dots.
        self.inner = nn.ParameterDict(
            {name.replace(".", "__"): nn.Parameter(t.detach().clone()) for name, t in inner_meta.items()}
        )

    def meta_params(self) -> dict[str, torch.Tensor]:
        return dict(self.network.named_parameters())

    def inner_meta(self) -> dict[str, torch.Tensor]:
        return {name.replace("__", "."): p for name, p in self.inner.items()}


class TrainingView:
    """What skorch callbacks receive as ``net`` during meta-training.

    ``history``, ``module_`` (the :class:`MetaModel`) and ``verbose`` are
    the attributes skorch's callbacks read; anything else is looked up on
    the estimator being fitted.
    """

    def __init__(self, estimator, module: MetaModel, history: History):
        self.estimator = estimator
        self.module_ = module
        self.history = history

    def __getattr__(self, name):
        return getattr(self.estimator, name)


class ThinnedPrintLog(PrintLog):
    """skorch's ``PrintLog`` table, printing the first and every ``every``-th outer update."""

    def __init__(self, every: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.every = every

    def on_epoch_end(self, net, **kwargs):
        epoch = net.history[-1, "epoch"]
        if epoch == 1 or epoch % self.every == 0:
            super().on_epoch_end(net, **kwargs)


class MetaProgressBar(Callback):
    """A progress bar over the outer updates, showing the latest meta-loss and validation results.

    Parameters
    ----------
    total : int
        Number of outer updates planned (``max_iter``).
    keys : tuple of str
        History entries shown beside the bar, when present.
    file : file-like, default=None
        Where the bar is drawn; standard error by default.
    """

    def __init__(self, total: int, keys=("train_loss", "valid_loss", "valid_score"), file=None):
        self.total, self.keys, self.file = total, keys, file

    def on_train_begin(self, net, **kwargs):
        from tqdm.auto import tqdm

        self.bar_ = tqdm(total=self.total, desc="meta-training", unit="update", file=self.file, leave=True)

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        self.bar_.set_postfix({k: f"{row[k]:.4g}" for k in self.keys if k in row}, refresh=False)
        self.bar_.update(1)

    def on_train_end(self, net, **kwargs):
        self.bar_.close()


def _all_finite(loss, grads) -> bool:
    flags = [torch.isfinite(loss)] + [torch.isfinite(g).all() for g in grads]
    return bool(torch.stack(flags).all())


def train(
    view: TrainingView,
    learner: Learner,
    optimizer: torch.optim.Optimizer,
    sample: Callable[[], TaskBatch],
    *,
    max_iter: int,
    n_steps: int,
    first_order: bool,
    callbacks: list,
    validate: Callable[[], dict] | None = None,
    max_grad_norm: float | None = None,
    compile: bool = False,
) -> int:
    """Run up to ``max_iter`` outer updates of ``view.module_``; return how many completed.

    A ``KeyboardInterrupt`` (Ctrl-C, or skorch's ``EarlyStopping``) ends
    training with the last completed update. A non-finite meta-loss or
    meta-gradient stops training with the last finite meta-parameters and a
    warning; if it happens before any update, :class:`ValueError`. With
    ``compile``, the meta-loss is compiled with :func:`torch.compile`.
    """
    model, history = view.module_, view.history
    loss_fn = compiled_meta_loss(learner, n_steps, first_order) if compile else None
    params = list(model.parameters())
    backup = [p.detach().clone() for p in params]
    stepping = False
    for cb in callbacks:
        cb.on_train_begin(view)
    try:
        for iteration in range(1, max_iter + 1):
            history.new_epoch()
            history.record("epoch", iteration)
            for cb in callbacks:
                cb.on_epoch_begin(view)
            start = time.perf_counter()
            batch = sample()
            try:
                loss, param_grads, meta_grads = meta_gradient(
                    learner, model.meta_params(), model.inner_meta(), batch, n_steps, first_order, loss_fn
                )
            except Exception as error:  # compilation failed (platform, toolchain): carry on eagerly
                if loss_fn is None:
                    raise
                warnings.warn(
                    f"torch.compile failed ({type(error).__name__}: {error}); training eagerly.", stacklevel=4
                )
                loss_fn = None
                loss, param_grads, meta_grads = meta_gradient(
                    learner, model.meta_params(), model.inner_meta(), batch, n_steps, first_order
                )
            grads = list(param_grads.values()) + list(meta_grads.values())
            if not _all_finite(loss, grads):
                history.pop()
                _stop_non_finite(iteration, len(history))
                break
            for p, b, g in zip(params, backup, grads):
                b.copy_(p.detach())
                p.grad = g
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            for cb in callbacks:
                cb.on_grad_computed(view, named_parameters=list(model.named_parameters()), batch=batch)
            stepping = True
            optimizer.step()
            stepping = False
            history.record("train_loss", loss.item())
            if validate is not None:
                for key, value in validate().items():
                    history.record(key, value)
            history.record("dur", time.perf_counter() - start)
            for cb in callbacks:
                cb.on_epoch_end(view)
    except KeyboardInterrupt:
        if history and "train_loss" not in history[-1]:
            history.pop()  # the interrupted update never completed
    for p in params:
        p.grad = None
    # A Ctrl-C inside optimizer.step() leaves some parameters updated and others
    # not; an overflowing update leaves them non-finite. Either way, go back to
    # the parameters of the last completed update.
    if stepping or not all(torch.isfinite(p).all() for p in params):
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)
    for cb in callbacks:
        cb.on_train_end(view)
    return len(history)


def _stop_non_finite(iteration, n_done):
    if n_done == 0:
        raise ValueError(
            f"The meta-loss or its gradient was not finite at iteration {iteration}, before any "
            "update could be made. Lower inner_lr or meta_lr, scale the inputs, or set max_grad_norm."
        )
    warnings.warn(
        f"The meta-loss or its gradient became non-finite at iteration {iteration}; meta-training "
        f"stopped and kept the last finite meta-parameters ({n_done} updates). Lower inner_lr or "
        "meta_lr, or set max_grad_norm.",
        NonFiniteLossWarning,
        stacklevel=4,
    )
