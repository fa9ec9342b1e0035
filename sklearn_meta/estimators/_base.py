"""The shared scikit-learn front of the meta-estimators: constructor arguments and the fit lifecycle.

The base class owns the arguments and ``fit``. Subclasses supply the target
encoding, the loss, the head shortcuts, the task sampling and the one metric
used by validation and ``score``. What ``fit`` trains with is built in
``_setup`` (a frozen :class:`~._setup.TrainingPlan`), few-shot adaptation and
prediction live in ``_serving``, saving in ``_persistence``.
"""

from __future__ import annotations

import copy
import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from ..heads import GradientHead, Head
from ..training import Ranks, choose, intra_op_threads, mark_warm, train
from ._heads import GRADIENT_ARGUMENTS, deprecated_constraints, is_deprecated, warn_deprecated
from ._network import ACTIVATIONS
from ._persistence import PersistenceMixin
from ._serving import ServingMixin, atomic
from ._setup import TrainingPlan, build_model, compile_key, prepare_training, use_compile

__all__ = ["BaseMetaEstimator", "arguments"]

META_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def arguments(local_variables: dict) -> dict:
    """A concrete estimator's constructor arguments, from its ``locals()``."""
    return {k: v for k, v in local_variables.items() if k not in ("self", "__class__")}


# The deprecated estimator arguments are checked as GradientHead checks them (they now belong to it).
_OLD_CONSTRAINTS = {
    **GradientHead._parameter_constraints,
    "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
}


class BaseMetaEstimator(ServingMixin, PersistenceMixin, BaseEstimator):
    """Base class of the meta-learning estimators; not for direct use."""

    __metadata_request__fit = {"groups": True}
    __metadata_request__score = {"groups": True}

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "module": [callable, None],
        "module_kwargs": [dict, None],
        "head": [StrOptions({"gradient"}), Head],
        "meta_optimizer": [StrOptions(set(META_OPTIMIZERS)), callable],
        "meta_lr": [Interval(Real, 0, None, closed="neither")],
        "meta_batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "compile": ["boolean", StrOptions({"auto"})],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "n_threads": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
        "callbacks": [list, None],
        **deprecated_constraints(_OLD_CONSTRAINTS, (*GRADIENT_ARGUMENTS, "max_grad_norm")),
    }

    def __init__(self, **params):
        # The concrete estimators own the signatures and defaults; arguments are stored untouched.
        for name, value in params.items():
            setattr(self, name, value)

    def set_params(self, **params):
        """Set the estimator's arguments, as scikit-learn's ``set_params`` does (``head__<argument>`` too).

        They take effect at the next ``fit``. The deprecated ``adapt_steps`` and
        ``inner_steps`` also change how a fitted gradient head adapts, as they
        did in 0.2 (with a ``FutureWarning``): set them on the fitted head,
        ``est.head_.set_params(adapt_steps=...)``, instead.

        Parameters
        ----------
        **params : dict
            Estimator arguments.

        Returns
        -------
        self : object
        """
        super().set_params(**params)
        late = {k: v for k, v in params.items() if k in ("inner_steps", "adapt_steps") and not is_deprecated(v)}
        head = self.__dict__.get("head_")
        if late and isinstance(head, GradientHead):
            call = ", ".join(f"{k}={v!r}" for k, v in late.items())
            warn_deprecated(
                list(late),
                f"To adapt a fitted model with other steps, set them on its fitted head: "
                f"est.head_.set_params({call}); set on the estimator, they belong to the next fit's GradientHead.",
            )
            self.head_ = clone(head).set_params(**late)  # a new head: copies of this estimator keep theirs
        return self

    # What subclasses provide -------------------------------------------------

    _criterion: type[torch.nn.Module]  # the loss as a module, for skorch's criterion_
    _task_type: str  # "regression" or "classification": which heads fit
    _head_shortcuts: dict  # the string values of ``head`` and the heads they build

    @staticmethod
    def _loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _validate_targets(self, X, y, reset: bool, fit: bool = False):
        """Validate ``X, y``; return ``X``, the encoded targets, and the target attributes to set.

        ``reset``: a new fit (the fitted feature and target attributes are set afresh); ``fit``: the
        rows are training rows (also on a warm start), not a task's adaptation rows.
        """
        raise NotImplementedError

    def _target_tensor(self, y_encoded, device) -> torch.Tensor:
        raise NotImplementedError

    def _n_outputs(self, y_encoded, target_attributes: dict) -> int:
        """Width of the network's output layer."""
        raise NotImplementedError

    def _score_outputs(self, outputs: np.ndarray, y_encoded: np.ndarray, codes, sample_weight=None):
        """The estimator's few-shot metric over query rows (pooled R², accuracy)."""
        raise NotImplementedError

    def _sampling(self, X_t, y_t, y_encoded, groups, generator):
        """How meta-training draws its batches (a :class:`~sklearn_meta.tasks.Sampling`)."""
        raise NotImplementedError

    @property
    def _meta_lr(self) -> float:
        """The outer learning rate meta-training uses: ``meta_lr``."""
        return self.meta_lr

    def _check_head(self, head) -> None:
        """Refuse a head that cannot serve the estimator's other arguments (a clear error before training)."""

    # Meta-training -----------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):
        """Meta-train on a collection of tasks.

        With ``warm_start=True`` and a fitted estimator, meta-training
        continues from the fitted state for ``max_iter`` more updates.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of all training tasks.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        groups : array-like of shape (n_samples,), default=None
            Task id of every row: any hashable labels, in any order. Without
            it all rows are one task (with a :class:`SingleTaskWarning`).

        Returns
        -------
        self : object
            The meta-trained estimator, with no adaptation.
        """
        with atomic(self):
            self._fit(X, y, groups)
        return self

    def _fit(self, X, y, groups):
        ranks = Ranks.current()  # inside an initialised process group of several: distributed meta-training
        rng = check_random_state(self.random_state)
        seeds = tuple(int(s) for s in rng.randint(np.iinfo(np.int32).max, size=2))
        if ranks is not None:  # rank 0's seeds: the same network and meta-batches on every rank
            seeds = ranks.broadcast_object(seeds)
        try:
            # validation and building run on the threads of small work; training on those its work calls for
            with intra_op_threads(choose(self.n_threads, 0.0)):
                plan = prepare_training(self, X, y, groups, seeds, ranks)
        except Exception as error:
            if ranks is None:
                raise
            ranks.agree(None, error)  # re-raises here; the other ranks raise RankFailedError, not wait
        if ranks is not None:  # every rank learns whether all of them prepared the same model
            ranks.agree(plan.description)
        key = compile_key(self, plan)
        with intra_op_threads(choose(self.n_threads, plan.work)):
            compiled = train(
                plan.net,
                plan.network,
                plan.head,
                plan.sample,
                max_iter=self.max_iter,
                validate=plan.validate,
                max_grad_norm=plan.max_grad_norm,
                compile=use_compile(self, plan.head, key),
                ranks=ranks,
            )
        if compiled:  # torch has cached this compilation: "auto" compiles shorter fits of these shapes
            mark_warm(key)
        self._set_fitted(plan)

    def _set_fitted(self, plan: TrainingPlan) -> None:
        """Every fitted attribute is set here, and only here."""
        plan.model.requires_grad_(False)
        history = plan.net.history
        for name, value in plan.target_attributes.items():
            setattr(self, name, value)
        self.module_ = plan.model
        self.head_ = plan.head
        self.history_ = history
        self.n_iter_ = len(history)
        self.loss_curve_ = list(history[:, "train_loss"]) if len(history) else []
        self.n_outputs_ = plan.n_outputs
        self.n_support_, self.n_query_ = plan.n_support, plan.n_query
        self.device_ = str(plan.device)
        self._network_spec_ = plan.spec
        self._flops_per_row_ = plan.work / plan.rows  # for n_threads="auto" after fit
        self._reset_adaptation_state()

    def _build_model(self, device):
        """An untrained model of the fitted architecture, to load a saved state into."""
        return build_model(self._network_spec_, self.head_, 0, device)

    def _warm_model(self, spec, head, target_attributes, device):
        """A copy of the fitted model to continue meta-training (``warm_start``), or a clear error."""
        changed = [name for name, old, new in [("network", self._network_spec_, spec), ("head", self.head_, head)]
                   if _differs(old, new)]  # fmt: skip
        changed += [name for name, value in target_attributes.items() if not np.array_equal(getattr(self, name), value)]
        if changed or str(device) != self.device_:
            what = ", ".join(changed) or "device"
            raise ValueError(
                f"warm_start=True continues meta-training the fitted model, but the {what} changed since "
                "it was fitted. Set warm_start=False to fit from scratch."
            )
        return copy.deepcopy(self.module_)  # a failed or interrupted fit must not touch the fitted model

    def _resolve_device(self, ranks=None) -> torch.device:
        if str(self.device) == "auto":
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            try:
                device = torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"device={self.device!r} is not a torch device; use 'cpu', 'cuda' or 'auto'.") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but no CUDA GPU is available; use 'cpu' or 'auto'.")
        if ranks is not None and device.type == "cuda" and device.index is None:
            # one GPU per rank: torchrun's LOCAL_RANK, else the one torch.cuda.set_device chose
            local = os.environ.get("LOCAL_RANK")
            device = torch.device("cuda", int(local) if local is not None else torch.cuda.current_device())
        return device

    def _meta_optimizer_factory(self):
        factory = self.meta_optimizer
        return META_OPTIMIZERS[factory] if isinstance(factory, str) else factory


def _differs(old, new) -> bool:
    """Whether a fitted value and a new one differ for meta-training.

    Heads compare by class and arguments, leaving out ``adapt_steps`` (it
    changes only how a fitted model adapts); an argument of a class without
    its own equality (a user's inner optimizer) compares by class.
    """
    if type(old) is not type(new):
        return True
    if not hasattr(old, "get_params"):
        return not _same_value(old, new)
    ours, theirs = old.get_params(deep=False), new.get_params(deep=False)
    ours.pop("adapt_steps", None)
    theirs.pop("adapt_steps", None)
    return ours.keys() != theirs.keys() or not all(_same_value(ours[k], theirs[k]) for k in ours)


def _same_value(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if type(a).__eq__ is object.__eq__:  # no equality of its own: identity would always differ after a copy
        return True
    try:
        return bool(np.all(a == b))
    except Exception:
        return repr(a) == repr(b)
