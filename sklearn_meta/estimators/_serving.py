"""Few-shot adaptation and prediction of a fitted meta-estimator.

One task in place (``partial_adapt``, the serving path), many new tasks at
once without touching the estimator (``predict(X, groups=..., y_support=...,
support=...)``), or many held-out tasks at once on copies (``score``, the
Displays), all through the fitted head (``head_``).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.utils import check_array
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data
from torch.func import vmap

from ..engine import adapt_one_task, adapt_tasks, moderates, predict_tasks
from ..heads import FunctionalNetwork, Head, takes_masks
from ..tasks import GroupedRows, check_single_rows, describe, encode_groups, support_sizes, validate_groups
from ..training import thread_policy
from ._heads import require

__all__ = ["ServingMixin", "as_float_tensor", "atomic", "check_support_targets", "diverged"]

# Rows per forward pass in predict, to keep memory bounded on large inputs.
_PREDICT_CHUNK = 65536

_FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))

# Batch prediction adapts at most this many task-specific parameter entries at once.
_TASK_PARAMETER_CHUNK = 2**25


class _Serving(NamedTuple):
    """What serving a fitted model needs, built once per ``module_`` rather than on every call."""

    head: Head  # the head_ and loss it was built for
    loss: Any
    network: FunctionalNetwork
    init_params: dict
    head_meta: Any
    device: torch.device


# Keyed by the fitted MetaModel: fit and loading replace module_ (never reassign its parameters),
# so an entry lives exactly as long as the model it serves, and the estimator's __dict__ (what
# pickling, clone and scikit-learn's checks see) holds nothing extra.
_SERVING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SERVING_LOCK = threading.Lock()


@contextlib.contextmanager
def atomic(estimator):
    """Restore the estimator's attributes if the block raises: a failed call changes nothing.

    Fitted tensors are never modified in place (a warm start trains a copy),
    so a shallow copy suffices.
    """
    saved = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise


def as_float_tensor(X, device) -> torch.Tensor:
    # np.array copies into a fresh C-contiguous array: read-only and negatively strided
    # input (X[::-1], which torch refuses) alike.
    return torch.from_numpy(np.array(X, dtype=np.float32)).to(device)


def diverged(what: str, head) -> ValueError:
    if "adapt_steps" in getattr(head, "get_params", dict)():
        advice = (
            f"the inner loop diverges at adapt_steps={head.n_adapt_steps}. Lower the head's adapt_steps or "
            "inner_lr (Meta-SGD's learned rates are tuned for the inner_steps it was trained with)."
        )
    else:
        advice = "scale the inputs, or check them for extreme values."
    return ValueError(f"Adapting {what} with {type(head).__name__} produced non-finite predictions: {advice}")


def _batch_arguments(X, groups, y_support, support):
    """Validate ``predict``'s batch arguments against the rows of ``X``: groups, targets and support mask."""
    given = {"groups": groups is not None, "y_support": y_support is not None, "support": support is not None}
    if not all(given.values()):
        missing = ", ".join(name for name, present in given.items() if not present)
        raise ValueError(
            "predict(X, groups=..., y_support=..., support=...) adapts every task of groups to its support "
            f"rows and needs all three arguments; {missing} {'is' if missing.count(',') == 0 else 'are'} "
            "missing. Without groups, predict uses the current model."
        )
    groups = validate_groups(groups, X)
    try:
        support = column_or_1d(support, warn=False)
    except ValueError as error:
        raise ValueError(f"support must be a 1-dimensional boolean mask (one entry per row of X): {error}") from None
    if support.dtype != np.bool_:
        raise ValueError(
            f"support must be a boolean mask, True at the support rows (one entry per row of X); got dtype "
            f"{support.dtype}. Use for instance support=(row_kind == 'support')."
        )
    y_support = check_array(
        y_support, ensure_2d=False, dtype=None, ensure_all_finite=False, ensure_min_samples=0, input_name="y_support"
    )
    try:
        check_consistent_length(X, y_support, support)
    except ValueError:
        raise ValueError(
            f"X has {len(X)} rows but y_support has {len(y_support)} and support {len(support)}: give one entry "
            "per row of X (y_support's values at rows where support is False are ignored)."
        ) from None
    return groups, y_support, support


def check_support_targets(y: np.ndarray, tasks: np.ndarray, labels: np.ndarray) -> None:
    """Refuse missing targets (NaN, infinity, None) at support rows, naming the tasks that have them."""
    if y.dtype.kind in "fc":
        missing = ~np.isfinite(y.reshape(len(y), -1)).all(axis=1)
    elif y.dtype.kind == "O":
        missing = np.array([v is None or (isinstance(v, float) and not np.isfinite(v)) for v in y.reshape(-1)])
        missing = missing.reshape(len(y), -1).any(axis=1)
    else:
        return
    if missing.any():
        raise ValueError(
            f"y_support is NaN, infinite or None at {int(missing.sum())} support row(s) (task ids "
            f"{describe(labels[np.unique(tasks[missing])])}): every row with support=True needs a target."
        )


class ServingMixin:
    """``partial_adapt``, ``reset_adaptation``, prediction and the few-shot outputs behind ``score``."""

    def _serving(self) -> _Serving:
        """The fitted network, head and meta-parameters, cached for the serving hot path."""
        model = self.__dict__.get("module_")
        if model is None:
            check_is_fitted(self)
        head = self.head_
        entry = _SERVING.get(model)
        if entry is None or entry.head is not head or entry.loss is not self._loss:
            network = model.network
            entry = _Serving(
                head,
                self._loss,
                FunctionalNetwork(network, dict(network.named_buffers()), self._loss, shared=True),
                model.init_params(),
                model.head_meta(),
                next(model.parameters()).device,
            )
            with _SERVING_LOCK:
                _SERVING[model] = entry
        return entry

    def _validate_rows(self, X) -> np.ndarray:
        """``validate_data(self, X, reset=False)`` for prediction, with a fast path for plain arrays.

        A 2-d float32/float64 numpy array of the fitted width, with finite
        values, on a model fitted without feature names, is what
        ``validate_data`` would return unchanged: it is returned as is. Any
        other input (and any input it would refuse) goes through
        ``validate_data``, which raises the usual errors.
        """
        if (
            type(X) is np.ndarray
            and X.ndim == 2
            and X.dtype in _FLOAT_DTYPES
            and X.shape[0] > 0
            and X.shape[1] == self.n_features_in_
            and "feature_names_in_" not in self.__dict__
            and np.isfinite(X.sum())  # NaN and infinities propagate into the sum (an overflow takes the slow path)
        ):
            return X
        return validate_data(self, X, reset=False, dtype=(np.float64, np.float32))

    def _reset_adaptation_state(self):
        self.adapted_params_ = None
        self.adaptation_state_ = None

    def reset_adaptation(self):
        """Forget every ``partial_adapt`` and return to the meta-learned initialisation.

        Returns
        -------
        self : object
        """
        if "module_" not in self.__dict__:  # check_is_fitted's full test costs more than the reset
            check_is_fitted(self)
        self._reset_adaptation_state()
        return self

    @thread_policy
    def partial_adapt(self, X, y):
        """Adapt to one task from a few labelled rows, in place.

        The fitted head adapts the network to all of ``X, y``, starting
        where the last call left off (from the meta-learned initialisation on
        the first call) and keeping its state: a closed-form head adds the
        rows to its fit of the last layer (the same as adapting on every row
        seen since the last reset), :class:`~sklearn_meta.heads.GradientHead`
        takes ``adapt_steps`` more inner-optimizer steps. The meta-learned
        parameters never change; :meth:`reset_adaptation` undoes every call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Support rows of the new task.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Their targets.

        Returns
        -------
        self : object
            The adapted estimator.
        """
        serving = self._serving()
        with atomic(self):
            X, y_encoded, task_attributes = self._validate_targets(X, y, reset=False)
            x_t = as_float_tensor(X, serving.device)
            y_t = self._target_tensor(y_encoded, serving.device)
            head, head_meta = serving.head, serving.head_meta
            before = serving.init_params if self.adapted_params_ is None else self.adapted_params_
            state = self.adaptation_state_
            if state is None:
                state = head.init(before, head_meta)
            params, state = adapt_one_task(serving.network, head, before, head_meta, state, x_t, y_t)
            changed = [p.reshape(-1) for name, p in params.items() if p is not before.get(name)]
            if changed and not torch.isfinite(torch.cat(changed)).all():
                raise ValueError(
                    f"Adaptation produced non-finite parameters; the model is left as it was. {_advice(head)}"
                )
            for name, value in task_attributes.items():
                setattr(self, name, value)
            self.adapted_params_, self.adaptation_state_ = params, state
        return self

    def _runtime_device(self) -> torch.device:
        return self._serving().device

    @thread_policy
    def _forward(self, X, return_variance: bool = False):
        """Outputs of the current (adapted, or meta-learned) network for ``X``.

        With ``return_variance`` (a closed-form head with a predictive
        variance), the pair of outputs and variances, else outputs alone.
        """
        serving = self._serving()
        X = self._validate_rows(X)
        device, network, head = serving.device, serving.network, serving.head
        params = serving.init_params if self.adapted_params_ is None else self.adapted_params_
        moderated = moderates(head)
        if not (return_variance or moderated) and X.shape[0] <= _PREDICT_CHUNK:  # the serving hot path
            with torch.inference_mode():
                return network.forward(params, as_float_tensor(X, device))
        outputs = torch.empty((X.shape[0], self.n_outputs_), device=device)
        variance = torch.empty(X.shape[0], device=device) if return_variance else None
        state = self.adaptation_state_
        if (return_variance or moderated) and state is None:
            state = head.init(params, serving.head_meta)  # the prior: no adaptation yet
        with torch.inference_mode():
            for start in range(0, X.shape[0], _PREDICT_CHUNK):
                chunk = as_float_tensor(X[start : start + _PREDICT_CHUNK], device)
                rows = slice(start, start + len(chunk))
                # Copy out: a chunk's output can keep a far larger buffer alive.
                if return_variance or moderated:
                    features = network.features(params, chunk)
                    if moderated:
                        outputs[rows] = head.predictive_outputs(params, serving.head_meta, state, features)
                    else:
                        outputs[rows] = network.output(params, features)
                    if return_variance:
                        variance[rows] = head.predictive_variance(params, serving.head_meta, state, features)
                else:
                    outputs[rows] = network.forward(params, chunk)
        return (outputs, variance) if return_variance else outputs

    def _encode_support_targets(self, y: np.ndarray, tasks: np.ndarray, labels: np.ndarray, n_tasks: int):
        """Encode the targets of the support rows (of tasks ``tasks``) for batch prediction.

        Returns the encoded targets and what the estimator needs to read the
        outputs (the classifier's classes of each task, in episodic mode).
        """
        raise NotImplementedError

    @thread_policy
    def _batch_outputs(self, X, groups, y_support, support, return_variance: bool = False):
        """Adapt every task of ``groups`` on its support rows and predict all its rows, on copies.

        Each task is adapted from the meta-learned initialisation, never from
        the current ``partial_adapt`` state, which is left untouched. Tasks
        with the same number of support rows are adapted in one vectorised
        call (in chunks that bound memory); tasks without support rows are
        predicted by the meta-learned model.

        Returns
        -------
        outputs : Tensor of shape (n_samples, n_outputs)
        variance : Tensor of shape (n_samples,) or None
            With ``return_variance`` (a closed-form head with a predictive variance).
        tasks : ndarray of shape (n_samples,)
            The task code of every row.
        extra : object
            What ``_encode_support_targets`` returned besides the targets.
        """
        serving = self._serving()
        X = self._validate_rows(X)
        groups, y_support, support = _batch_arguments(X, groups, y_support, support)
        tasks, labels = encode_groups(groups)
        n_tasks = len(labels)
        support_rows = np.flatnonzero(support)
        y_encoded, extra = self._encode_support_targets(y_support[support_rows], tasks[support_rows], labels, n_tasks)
        device, network, init_params = serving.device, serving.network, serving.init_params
        X_t = as_float_tensor(X, device)
        y_t = self._target_tensor(y_encoded, device)
        outputs = torch.empty((X.shape[0], self.n_outputs_), device=device)
        variance = torch.empty(X.shape[0], device=device) if return_variance else None

        # Rows of each task, in input order: all of them (to predict) and its support rows (to adapt on).
        n_rows, n_support = np.bincount(tasks, minlength=n_tasks), np.bincount(tasks[support_rows], minlength=n_tasks)
        rows = np.argsort(tasks, kind="stable")
        rows_start = np.concatenate([[0], np.cumsum(n_rows)[:-1]])
        support_order = np.argsort(tasks[support_rows], kind="stable")  # positions in support_rows and y_t
        support_start = np.concatenate([[0], np.cumsum(n_support)[:-1]])
        n_parameters = sum(p.numel() for p in init_params.values())
        max_tasks = max(1, _TASK_PARAMETER_CHUNK // max(1, n_parameters))
        with_state = return_variance or moderates(serving.head)  # the head's state serves the predictions

        with torch.no_grad():  # not inference_mode: the gradient head's inner loop differentiates
            # Tasks by support size, then by rows: each chunk of equal support size is one vectorised call,
            # its tasks' rows padded (with a repeat of the task's first row) to the chunk's largest task.
            order = np.lexsort((n_rows, n_support))
            for chunk in _chunks(order, n_support[order], n_rows[order], max_tasks):
                k, width = int(n_support[chunk[0]]), int(n_rows[chunk[-1]])
                offsets = np.arange(width)
                valid = offsets[None, :] < n_rows[chunk][:, None]
                query = rows[rows_start[chunk][:, None] + np.minimum(offsets[None, :], n_rows[chunk][:, None] - 1)]
                query_t = torch.as_tensor(query, device=device)
                if k == 0:
                    params = {name: p.expand(len(chunk), *p.shape) for name, p in init_params.items()}
                    state = serving.head.init(init_params, serving.head_meta) if with_state else None
                    state_dims = None
                else:
                    positions = torch.as_tensor(
                        support_order[support_start[chunk][:, None] + np.arange(k)[None, :]], device=device
                    )
                    x_support = X_t[torch.as_tensor(support_rows, device=device)[positions]]
                    adapted = adapt_tasks(
                        network,
                        serving.head,
                        init_params,
                        serving.head_meta,
                        x_support,
                        y_t[positions],
                        with_state,
                    )
                    params, state = adapted if with_state else (adapted, None)
                    state_dims = 0
                x_query = X_t[query_t]
                valid_t = torch.as_tensor(valid, device=device)
                target = query_t[valid_t]
                predicted = predict_tasks(network, params, x_query, serving.head, serving.head_meta, state, state_dims)
                outputs[target] = predicted[valid_t]
                if return_variance:
                    spread = vmap(_predictive_variance(serving), in_dims=(0, state_dims, 0))(params, state, x_query)
                    variance[target] = spread[valid_t]
        if not torch.isfinite(outputs).all():
            raise diverged("the tasks of groups", serving.head)
        return outputs, variance, tasks, extra

    @thread_policy
    def _few_shot_outputs(self, X, y, groups, where: str = "score()", head=None):
        """Adapt to each task of ``groups`` on its first rows; predict the rest.

        Each task adapts on its first ``min(n_support, rows - 1)`` rows (or
        that fraction of its rows: ``tasks.support_sizes``), all tasks in one
        vectorised call, padded and masked when their sizes differ; with
        ``head``, another head over the same fitted model (the Displays: a
        gradient head with other ``adapt_steps``). Returns the outputs for
        every row (support rows are zero), a boolean mask of the query rows,
        each row's task code and the encoded targets.
        """
        check_is_fitted(self)
        X, y_encoded, _ = self._validate_targets(X, y, reset=False)
        codes, labels = encode_groups(validate_groups(groups, X))
        device = self._runtime_device()
        sizes = np.bincount(codes)
        n_support = support_sizes(self.n_support, sizes)
        scored = n_support >= 1  # a task of one row cannot be both adapted to and scored
        what = (
            f"{where} adapts each task on its first min(n_support, rows - 1) rows (n_support={self.n_support!r}) "
            "and scores the rest"
        )
        check_single_rows(scored, labels, what, "the score")
        kept = np.flatnonzero(scored[codes])  # the rows of the tasks that are scored
        tasks = GroupedRows(np.cumsum(scored)[codes[kept]] - 1, device)
        kept = torch.as_tensor(kept, device=device)
        X_t = as_float_tensor(X, device)
        y_t = self._target_tensor(y_encoded, device)
        n_support, n_rows = n_support[scored], sizes[scored]
        width, queries = int(n_support.max()), int((n_rows - n_support).max())
        support_t = torch.as_tensor(n_support, device=device)[:, None]
        offsets = torch.arange(max(width, queries), device=device)[None, :]
        support_valid = offsets[:, :width] < support_t
        query_at = (support_t + offsets[:, :queries]).clamp(max=tasks.rows.shape[1] - 1)
        query_valid = tasks.valid.gather(1, query_at) & (support_t + offsets[:, :queries] < tasks.rows.shape[1])
        support, query = kept[tasks.rows[:, :width]], kept[tasks.rows.gather(1, query_at)]
        ragged = not bool(support_valid.all() and query_valid.all())
        mask = support_valid.to(X_t.dtype) if ragged else None
        predicted = self._adapt_and_predict(X_t[support], y_t[support], X_t[query], head, mask)
        outputs = torch.zeros((X.shape[0], self.n_outputs_), device=device)
        outputs[query[query_valid]] = predicted[query_valid]
        is_query = torch.zeros(X.shape[0], dtype=torch.bool, device=device)
        is_query[query[query_valid]] = True
        if not torch.isfinite(outputs).all():
            raise diverged("the held-out tasks", head or self.head_)
        return outputs, is_query, codes, y_encoded

    def _few_shot_score(self, X, y, groups, sample_weight=None) -> float:
        outputs, is_query, codes, y_encoded = self._few_shot_outputs(X, y, groups)
        mask = is_query.cpu().numpy()
        weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[mask]
        return self._score_outputs(outputs.cpu().numpy()[mask], y_encoded[mask], codes[mask], weight)

    def _adapt_and_predict(self, x_support, y_support, x_query, head=None, mask=None) -> torch.Tensor:
        """Adapt a copy of the meta-learned model to every task at once and predict its query rows.

        ``mask``: 1 at the real support rows of tasks of different sizes, 0 at padding.
        """
        serving = self._serving()
        head = serving.head if head is None else head
        if mask is not None and not takes_masks(head):
            raise ValueError(
                f"The tasks have different numbers of rows, but {type(head).__name__}'s adapt() takes no mask "
                "argument (see sklearn_meta.heads.Head, 'Tasks of different sizes'): score tasks of equal sizes, "
                "or add mask=None to it."
            )
        with_state = moderates(head)
        adapted = adapt_tasks(
            serving.network, head, serving.init_params, serving.head_meta, x_support, y_support, with_state, mask=mask
        )
        params, state = adapted if with_state else (adapted, None)
        return predict_tasks(serving.network, params, x_query, head, serving.head_meta, state)

    def _check_return_std(self) -> None:
        require(self.head_, "predictive_variance", "return_std=True", "BayesianRidgeHead has one")


def _advice(head) -> str:
    if "inner_lr" in getattr(head, "get_params", dict)():
        return "Lower the head's inner_lr or adapt_steps, or scale the inputs."
    return "Scale the inputs, or check them for extreme values."


def _predictive_variance(serving: _Serving):
    def variance(params, state, x):
        network = serving.network
        return serving.head.predictive_variance(params, serving.head_meta, state, network.features(params, x))

    return variance


def _chunks(tasks: np.ndarray, n_support: np.ndarray, n_rows: np.ndarray, max_tasks: int):
    """Split ``tasks`` (sorted by support size, then rows) into chunks of one support size and bounded size.

    A chunk's cost is its number of tasks times the support rows plus the
    padded rows of its largest task, at most ``_PREDICT_CHUNK`` (a single
    task may exceed it) and at most ``max_tasks`` tasks.
    """
    boundaries = np.flatnonzero(np.diff(n_support)) + 1
    for start, stop in zip(np.concatenate([[0], boundaries]), np.concatenate([boundaries, [len(tasks)]])):
        while start < stop:
            cost = np.arange(1, stop - start + 1) * (n_support[start:stop] + n_rows[start:stop])
            size = min(max(1, int(np.searchsorted(cost, _PREDICT_CHUNK, side="right"))), max_tasks)
            yield tasks[start : start + size]
            start += size
