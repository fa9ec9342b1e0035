"""Few-shot adaptation and prediction of a fitted meta-estimator.

One task in place (``partial_adapt``, the serving path), or many held-out
tasks at once on copies (``score``, early stopping's validation), all
through the engine's one inner loop.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data

from ._engine import Learner, adapt, adapt_tasks, predict_tasks
from ._heads import HEADS
from ._splitting import describe, support_size, validate_groups
from ._tasks import GroupedRows, encode_groups

__all__ = ["AdaptationMixin", "as_float_tensor", "atomic", "diverged"]

# Rows per forward pass in predict, to keep memory bounded on large inputs.
_PREDICT_CHUNK = 65536


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


def diverged(what: str, n_steps: int) -> ValueError:
    return ValueError(
        f"Adapting {what} with adapt_steps={n_steps} produced non-finite predictions: the inner loop "
        "diverges at this step count. Lower adapt_steps or inner_lr (Meta-SGD's learned rates are tuned "
        "for the inner_steps it was trained with)."
    )


class AdaptationMixin:
    """``partial_adapt``, ``reset_adaptation``, prediction and the few-shot outputs behind ``score``."""

    def _adapt_steps(self) -> int:
        return self.inner_steps if self.adapt_steps is None else self.adapt_steps

    def _learner(self) -> Learner:
        network = self.module_.network
        head = HEADS[self._network_spec_.get("head", "gradient")]
        return Learner(network, dict(network.named_buffers()), self._loss, self.inner_optimizer_, True, head)

    def _current_params(self) -> dict:
        return self.module_.meta_params() if self.adapted_params_ is None else self.adapted_params_

    def _reset_adaptation_state(self):
        self.adapted_params_ = None
        self.inner_state_ = None

    def reset_adaptation(self):
        """Forget every ``partial_adapt`` and return to the meta-learned initialisation.

        Returns
        -------
        self : object
        """
        check_is_fitted(self)
        self._reset_adaptation_state()
        return self

    def partial_adapt(self, X, y):
        """Adapt to one task from a few labelled rows, in place.

        Takes ``adapt_steps`` steps (default ``inner_steps``) of the inner
        optimizer on all of ``X, y``, starting where the last call left off
        (from the meta-learned initialisation on the first call) and keeping
        the inner optimizer's state. With a closed-form ``head``, the rows are
        added to the head's fit instead (the same as adapting on every row
        seen since the last reset). The meta-learned parameters never change;
        :meth:`reset_adaptation` undoes every call.

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
        check_is_fitted(self)
        with atomic(self):
            X, y_encoded, task_attributes = self._validate_targets(X, y, reset=False)
            device = self._runtime_device()
            x_t = as_float_tensor(X, device)
            y_t = self._target_tensor(y_encoded, device)
            params = self._current_params()
            learner = self._learner()
            state = self.inner_state_
            if state is None:
                state = learner.init_state(params)
            meta = self.module_.inner_meta()
            params, state = adapt(learner, params, meta, state, x_t, y_t, self._adapt_steps(), serving=True)
            if not torch.isfinite(torch.cat([params[name].reshape(-1) for name in learner.adapted])).all():
                raise ValueError(
                    "Adaptation produced non-finite parameters; the model is left as it was. "
                    "Lower inner_lr or adapt_steps, or scale the inputs."
                )
            for name, value in task_attributes.items():
                setattr(self, name, value)
            self.adapted_params_, self.inner_state_ = params, state
        return self

    def _runtime_device(self) -> torch.device:
        return next(self.module_.parameters()).device

    def _forward(self, X, return_variance: bool = False):
        """Outputs of the current (adapted, or meta-learned) network for ``X``.

        With ``return_variance`` (a closed-form head with a predictive
        variance), the pair of outputs and variances, else outputs alone.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        device = self._runtime_device()
        learner, params = self._learner(), self._current_params()
        outputs = torch.empty((X.shape[0], self.n_outputs_), device=device)
        variance = torch.empty(X.shape[0], device=device) if return_variance else None
        state = self.inner_state_
        if return_variance and state is None:
            state = learner.init_state(params)  # the prior: no adaptation yet
        with torch.inference_mode():
            for start in range(0, X.shape[0], _PREDICT_CHUNK):
                chunk = as_float_tensor(X[start : start + _PREDICT_CHUNK], device)
                rows = slice(start, start + len(chunk))
                # Copy out: a chunk's output can keep a far larger buffer alive.
                if return_variance:
                    features = learner.features(params, chunk)
                    outputs[rows] = features @ params["head.weight"].T + params["head.bias"]
                    variance[rows] = learner.head.predictive_variance(state, params, features)
                else:
                    outputs[rows] = learner.forward(params, chunk)
        return (outputs, variance) if return_variance else outputs

    def _few_shot_outputs(self, X, y, groups):
        """Adapt to each task of ``groups`` on its first rows; predict the rest.

        Every task adapts on the same number of support rows (see
        ``_splitting.support_size``), all of them in one vectorised call.
        Returns the outputs for every row (support rows are zero), a boolean
        mask of the query rows, each row's task code and the encoded targets.
        """
        check_is_fitted(self)
        X, y_encoded, _ = self._validate_targets(X, y, reset=False)
        codes, labels = encode_groups(validate_groups(groups, X))
        device = self._runtime_device()
        tasks = GroupedRows(codes, device)
        size = support_size(self.n_support, tasks.sizes)
        too_small = np.flatnonzero(tasks.sizes < size + 1)
        if len(too_small):
            raise ValueError(
                f"score() adapts each task on its first {size} rows (n_support) and scores the rest: "
                f"{len(too_small)} task(s) have too few rows (task ids {describe(labels[too_small])})."
            )
        X_t = as_float_tensor(X, device)
        y_t = self._target_tensor(y_encoded, device)
        support, query, query_valid = tasks.rows[:, :size], tasks.rows[:, size:], tasks.valid[:, size:]
        predicted = self._adapt_and_predict(X_t[support], y_t[support], X_t[query])
        outputs = torch.zeros((X.shape[0], self.n_outputs_), device=device)
        outputs[query[query_valid]] = predicted[query_valid]
        is_query = torch.zeros(X.shape[0], dtype=torch.bool, device=device)
        is_query[query[query_valid]] = True
        if not torch.isfinite(outputs).all():
            raise diverged("the held-out tasks", self._adapt_steps())
        return outputs, is_query, codes, y_encoded

    def _few_shot_score(self, X, y, groups, sample_weight=None) -> float:
        outputs, is_query, codes, y_encoded = self._few_shot_outputs(X, y, groups)
        mask = is_query.cpu().numpy()
        weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[mask]
        return self._score_outputs(outputs.cpu().numpy()[mask], y_encoded[mask], codes[mask], weight)

    def _adapt_and_predict(self, x_support, y_support, x_query) -> torch.Tensor:
        """Adapt a copy of the meta-learned model to every task at once and predict its query rows."""
        learner = self._learner()
        adapted = adapt_tasks(
            learner, self.module_.meta_params(), self.module_.inner_meta(), x_support, y_support, self._adapt_steps()
        )
        return predict_tasks(learner, adapted, x_query)
