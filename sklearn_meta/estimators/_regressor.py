"""MetaRegressor: few-shot regression by gradient-based meta-learning."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from sklearn.utils.validation import validate_data

from ..heads import BayesianRidgeHead, GradientHead, Head, masked_mean
from ..tasks import grouped_sampling
from ._base import BaseMetaEstimator, arguments
from ._docstrings import fill_parameters
from ._heads import DEPRECATED, require
from ._serving import check_support_targets


def _plain_targets(y, n_outputs: int) -> bool:
    """Whether ``y`` is a finite float numpy array of ``n_outputs`` outputs: what validation passes unchanged."""
    return (
        type(y) is np.ndarray
        and y.dtype in (np.float64, np.float32)
        and (y.ndim == 1 and n_outputs == 1 or y.ndim == 2 and y.shape[1] == n_outputs)
        and bool(np.isfinite(y.sum()))
    )


@fill_parameters
class MetaRegressor(RegressorMixin, BaseMetaEstimator):
    """Meta-learned regressor that adapts to a new task from a few rows.

    Meta-trains a network over many related tasks so that a handful of rows
    of a new task give a good model. By default (``head="ridge"``) the
    network's body is meta-learned as features and its last layer is fitted
    to each task in closed form, as Bayesian linear regression with a
    meta-learned prior (R2-D2, Bertinetto et al. 2019): a mixed model with
    learned features, which also gives predictive standard deviations.
    With ``head=GradientHead(...)`` a few inner gradient steps adapt the
    network: MAML (Finn et al., 2017), first-order MAML, Meta-SGD (Li et
    al., 2017), ANIL (Raghu et al., 2020) and MAML with a differentiable
    Adam or Newton inner loop.

    Parameters
    ----------
    {hidden_layer_sizes}
    {activation}
    {module}
    {module_kwargs}
    {head}
    {meta_objective}
    {meta_optimizer}
    {meta_lr}
    {meta_batch_size}
    n_support : int or float, default=10
        Support rows per task: the rows a task adapts on, in meta-training
        and in :meth:`score`. A task adapts on ``min(n_support, its rows -
        1)`` rows, so that every task of two rows or more counts; a float is
        a fraction of each task's own rows. Tasks of different sizes run in
        padded, masked batches; one-row tasks are left out with a
        :class:`~sklearn_meta.exceptions.SmallTaskWarning`.
    n_query : int, default=None
        Query rows per training task: at most ``n_query`` of the rows its
        support leaves; ``None`` uses all of them. With
        ``meta_objective="marginal_likelihood"``, the most rows of a group
        in one update; ``None``: all of them.
    {max_iter}
    {early_stopping}
    {validation_fraction}
    {n_iter_no_change}
    {tol}
    {compile}
    {warm_start}
    {random_state}
    {device}
    {n_threads}
    {verbose}
    {callbacks}
    {deprecated}

    Attributes
    ----------
    module_ : torch.nn.Module
        The meta-learned state: ``module_.network`` is the network (its
        ``body`` and last layer ``head``) holding the meta-learned
        initialisation, ``module_.head_meta()`` the head's meta-parameters
        (the Bayesian ridge head's prior, Meta-SGD's learned rates).
    head_ : Head
        The fitted copy of the head: how ``partial_adapt``, ``score`` and
        batch ``predict`` adapt.
    adapted_params_ : dict of str to Tensor or None
        Parameters after :meth:`partial_adapt`; ``None`` before.
    adaptation_state_ : object
        The head's state after :meth:`partial_adapt` (the closed forms'
        sufficient statistics, the inner optimizer's state).
    n_support_, n_query_ : int
        Support and query rows per task used in meta-training: the most of
        any task (smaller tasks use fewer, masked). With
        ``meta_objective="marginal_likelihood"``: 0, and the rows per group
        in one update.
    n_outputs_ : int
        Number of outputs.
    n_iter_ : int
        Outer updates made.
    loss_curve_ : list of float
        Meta-loss of each outer update.
    history_ : skorch.history.History
        Training log: one row per outer update.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.
    saved_with_ : dict
        On a loaded model only: the state format and the sklearn-meta and
        torch versions that saved it.

    See Also
    --------
    MetaClassifier : The classification counterpart.

    Examples
    --------
    >>> from sklearn_meta import MetaRegressor
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=200, n_samples_per_task=20, random_state=0)
    >>> est = MetaRegressor(max_iter=20, random_state=0).fit(X, y, groups=groups)
    >>> X_new, y_new, _ = make_sinusoid_tasks(n_tasks=1, n_samples_per_task=20, random_state=1)
    >>> est.partial_adapt(X_new[:10], y_new[:10]).predict(X_new[10:]).shape
    (10,)
    """

    _criterion = torch.nn.MSELoss

    # predict(X, groups=..., y_support=..., support=...) adapts to new tasks: requested by default,
    # so a Pipeline routes them with metadata routing on and without set_predict_request calls.
    # return_std is an option, not metadata, but under routing a Pipeline passes it only if requested.
    __metadata_request__predict = {"groups": True, "y_support": True, "support": True, "return_std": True}

    _parameter_constraints: dict = {
        **BaseMetaEstimator._parameter_constraints,
        "head": [StrOptions({"gradient", "ridge"}), Head],
        "meta_objective": [StrOptions({"episodes", "marginal_likelihood"})],
        "n_support": [Interval(Integral, 1, None, closed="left"), Interval(RealNotInt, 0, 1, closed="neither")],
        "n_query": [Interval(Integral, 1, None, closed="left"), None],
    }

    _task_type = "regression"
    _head_shortcuts = {"ridge": BayesianRidgeHead, "gradient": GradientHead}
    _head_shortcuts_doc = """
        - ``"ridge"`` (the default): :class:`~sklearn_meta.heads.BayesianRidgeHead`,
          Bayesian linear regression on the body's features with a
          meta-learned prior (R2-D2, Bertinetto et al. 2019): the prior
          mean, a full prior covariance (which directions of the feature
          space vary between tasks, like a mixed model's random-effects
          covariance) and each task's noise prior are meta-learned through
          the query rows' likelihood (so ``loss_curve_`` holds it);
          ``predict(X, return_std=True)`` gives the standard deviation of
          the Student-t predictive distribution.
        - ``"gradient"``: :class:`~sklearn_meta.heads.GradientHead`, inner
          gradient steps (MAML; its arguments give Meta-SGD, ANIL, Adam
          and Newton inner loops).

        The default was chosen from the measurements in the user guide: on
        the multilevel data sets and the sinusoids it reaches lower
        few-shot errors than gradient steps at a fraction of the
        meta-training cost, and has no inner learning rate to tune.
    """

    def __init__(
        self,
        hidden_layer_sizes=(40, 40),
        activation="tanh",
        *,
        module=None,
        module_kwargs=None,
        head="ridge",
        meta_objective="episodes",
        meta_optimizer="adam",
        meta_lr=1e-3,
        meta_batch_size=25,
        n_support=10,
        n_query=None,
        max_iter=1000,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        compile="auto",
        warm_start=False,
        random_state=None,
        device="cpu",
        n_threads="auto",
        verbose=0,
        callbacks=None,
        inner_optimizer=DEPRECATED,
        inner_lr=DEPRECATED,
        inner_steps=DEPRECATED,
        adapt_steps=DEPRECATED,
        first_order=DEPRECATED,
        recompute_inner=DEPRECATED,
        adapt_params=DEPRECATED,
        max_grad_norm=DEPRECATED,
    ):
        super().__init__(**arguments(locals()))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _check_head(self, head) -> None:
        if self.meta_objective == "marginal_likelihood":
            require(
                head,
                "negative_log_evidence",
                "meta_objective='marginal_likelihood'",
                "BayesianRidgeHead, head='ridge', has one; or set meta_objective='episodes'",
            )

    def _validate_targets(self, X, y, reset, fit=False):
        if not reset and _plain_targets(y, self.n_outputs_):
            X = self._validate_rows(X)  # the serving fast path for plain numpy rows and targets
            if len(y) == len(X):
                return X, y.reshape(len(y), -1).astype(np.float32, copy=False), {}
        X, y = validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32), y_numeric=True, multi_output=True)
        attributes = {"_single_output": y.ndim == 1} if reset else {}
        y = y.reshape(len(y), -1).astype(np.float32, copy=False)
        if not reset and y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y.shape[1]} outputs but the model was fitted with {self.n_outputs_}.")
        return X, y, attributes

    def _n_outputs(self, y_encoded, target_attributes):
        return y_encoded.shape[1]

    def _encode_support_targets(self, y, tasks, labels, n_tasks):
        try:
            y = check_array(
                y,
                ensure_2d=False,
                dtype="numeric",
                ensure_all_finite=False,
                ensure_min_samples=0,
                input_name="y_support",
            )
        except ValueError as error:
            raise ValueError(f"y_support must hold numeric targets at the support rows: {error}") from None
        check_support_targets(y, tasks, labels)
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if n_outputs != self.n_outputs_:
            raise ValueError(f"y_support has {n_outputs} outputs but the model was fitted with {self.n_outputs_}.")
        return y.reshape(len(y), -1).astype(np.float32), None

    def _target_tensor(self, y_encoded, device):
        return torch.from_numpy(np.array(y_encoded, dtype=np.float32)).to(device)  # a copy: any strides

    @staticmethod
    def _loss(output, target, mask=None):
        if mask is None:
            return torch.nn.functional.mse_loss(output, target)
        return masked_mean(torch.nn.functional.mse_loss(output, target, reduction="none").mean(dim=-1), mask)

    def _score_outputs(self, outputs, y_encoded, codes, sample_weight=None):
        # Pooled few-shot R²: r2_score on targets centred on each task's own (weighted)
        # mean, so SS_tot is taken around the task means; averaged over outputs.
        weight = np.ones(len(codes)) if sample_weight is None else sample_weight
        y_true = y_encoded.reshape(len(codes), -1).astype(np.float64)
        task_weight = np.bincount(codes, weights=weight)
        sums = np.stack([np.bincount(codes, weights=weight * col) for col in y_true.T], axis=1)
        means = (sums / np.where(task_weight > 0, task_weight, 1)[:, None])[codes]
        pred = outputs.reshape(len(codes), -1).astype(np.float64)
        return float(r2_score(y_true - means, pred - means, sample_weight=sample_weight))

    def _sampling(self, X_t, y_t, y_encoded, groups, generator):
        return grouped_sampling(
            X_t,
            y_t,
            groups,
            generator,
            n_support=self.n_support,
            n_query=self.n_query,
            whole_groups=self.meta_objective == "marginal_likelihood",
            validation_fraction=self.validation_fraction if self.early_stopping else None,
        )

    def predict(self, X, return_std=False, groups=None, y_support=None, support=None):
        """Predict with the adapted model, or adapt to many new tasks at once and predict them.

        Without ``groups``: the predictions of the current model, adapted by
        :meth:`partial_adapt` (the meta-learned one before any adaptation).

        With ``groups``: every distinct group of ``X`` is a new task. Its
        rows with ``support`` True are its support rows, with targets
        ``y_support``; each task is adapted on them from the meta-learned
        initialisation, as ``reset_adaptation().partial_adapt(X_support,
        y_support)`` would, and each row of ``X`` is predicted by its task's
        adapted model. Tasks with the same number of support rows are adapted
        in one vectorised call. A task without support rows gets the
        meta-learned model's predictions. The estimator is not changed (its
        ``partial_adapt`` state included). In a :class:`~sklearn.pipeline.Pipeline`,
        ``pipe.predict(X, groups=..., y_support=..., support=...)`` transforms
        the support rows with the rest of ``X``; these three arguments are
        requested by default under metadata routing.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return the standard deviation of the predictive distribution
            of each row's target (a head with a predictive variance:
            ``head="ridge"``, :class:`~sklearn_meta.heads.BayesianRidgeHead`), as ``BayesianRidge``
            and ``GaussianProcessRegressor`` give it: the Student-t
            predictive of the adapted head, whose spread combines the
            uncertainty of the head's weights and the task's noise variance
            estimated from the rows adapted on (before any adaptation, the
            prior's). With ``groups``, of each task's adapted head.
        groups : array-like of shape (n_samples,), default=None
            Task id of every row: adapt to each task and predict its rows.
        y_support : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
            Targets, aligned with ``X``; only the values at support rows are
            read (NaN elsewhere is fine, such as a DataFrame column that is
            missing on the rows to predict). Required with ``groups``.
        support : array-like of bool of shape (n_samples,), default=None
            True at each task's support rows. Required with ``groups``.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        y_std : ndarray of shape (n_samples,)
            Only with ``return_std=True``; the same for every output.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_meta import MetaRegressor
        >>> from sklearn_meta.datasets import make_sinusoid_tasks
        >>> X, y, groups = make_sinusoid_tasks(n_tasks=200, n_samples_per_task=20, random_state=0)
        >>> est = MetaRegressor(max_iter=20, random_state=0).fit(X, y, groups=groups)
        >>> X_new, y_new, groups_new = make_sinusoid_tasks(n_tasks=3, n_samples_per_task=20, random_state=1)
        >>> support = np.tile(np.arange(20) < 10, 3)  # the first 10 rows of each new task are labelled
        >>> y_known = np.where(support, y_new, np.nan)
        >>> est.predict(X_new, groups=groups_new, y_support=y_known, support=support).shape
        (60,)
        """
        if return_std:
            self._check_return_std()
        if groups is not None or y_support is not None or support is not None:
            output, variance, _, _ = self._batch_outputs(X, groups, y_support, support, return_variance=return_std)
        elif return_std:
            output, variance = self._forward(X, return_variance=True)
        else:
            output = self._forward(X)
        output = output.cpu().numpy().astype(np.float64)
        if not return_std:
            return output.ravel() if self._single_output else output
        std = np.sqrt(variance.cpu().numpy().astype(np.float64))
        return (output.ravel() if self._single_output else output), std

    def score(self, X, y, sample_weight=None, groups=None):
        """Few-shot R² on held-out tasks, or R² of the current model without ``groups``.

        With ``groups``, each task is adapted (from the meta-learned
        initialisation, on a copy) on its first ``n_support`` rows and its
        other rows are predicted. The score is the pooled R²,
        ``1 - sum(SS_res) / sum(SS_tot)`` over all query rows, with
        ``SS_tot`` taken around each task's own query mean (averaged over
        outputs). Early stopping's ``valid_score`` is the same metric. Tasks
        of ``n_support`` rows or fewer have nothing to score: they are left
        out, with a :class:`~sklearn_meta.exceptions.SmallTaskWarning` (a
        ``ValueError`` when no task is left).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows; with ``groups``, of the query rows.
        groups : array-like of shape (n_samples,), default=None
            Task id of every row.

        Returns
        -------
        score : float
        """
        if groups is None:
            return super().score(X, y, sample_weight=sample_weight)
        return self._few_shot_score(X, y, groups, sample_weight)
