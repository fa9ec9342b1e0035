"""MetaRegressor: few-shot regression by gradient-based meta-learning."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import check_array
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import validate_data

from ._adaptation import check_support_targets
from ._base import BaseMetaEstimator, _arguments
from ._docstrings import fill_parameters
from ._samplers import grouped_sampler


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
    With ``head="gradient"`` a few inner gradient steps adapt the network:
    MAML (Finn et al., 2017), first-order MAML, Meta-SGD (Li et al., 2017),
    ANIL (Raghu et al., 2020) and MAML with a differentiable Adam or
    Newton inner loop.

    Parameters
    ----------
    {hidden_layer_sizes}
    {activation}
    {module}
    {module_kwargs}
    {head}
    meta_objective : {"episodes", "marginal_likelihood"}, default="episodes"
        What meta-training maximises.

        - ``"episodes"``: how well each task's query rows are predicted
          after adapting on ``n_support`` of its rows (MAML, R2-D2). Only
          tasks with more than ``n_support`` rows take part.
        - ``"marginal_likelihood"`` (``head="ridge"`` only): the marginal
          likelihood of all the rows of every training group, the head's
          weights and noise variance integrated out: what a mixed model is
          fitted by (maximum likelihood), with the body's features as the
          random effects' design. Every group counts, whatever its size,
          and no support/query split is drawn; each update takes
          ``meta_batch_size`` whole groups, padded to the largest (or to
          ``n_query`` rows, a random subset of a larger group: set it when
          one group is far larger than the rest, or every group is padded to
          that one). It needs several groups: one group's likelihood does
          not identify the prior mean. Choose it
          when many groups are small or of very different sizes, as in
          survey and repeated-measures data; the adapted model, ``predict``
          and ``return_std`` are the same as with ``"episodes"``.
    {adapt_params}
    {inner_optimizer}
    {inner_lr}
    {inner_steps}
    {adapt_steps}
    {first_order}
    {recompute_inner}
    {meta_optimizer}
    {meta_lr}
    {meta_batch_size}
    n_support : int or float, default=10
        Support rows per task: the rows a task adapts on, in meta-training
        and in :meth:`score`. A float is a fraction of the smallest task's
        rows (every task of a collection adapts on the same number of rows).
    n_query : int, default=None
        Query rows per training task; ``None`` uses as many as the smallest
        task leaves after its support rows. With
        ``meta_objective="marginal_likelihood"``, the most rows of a group
        in one update; ``None``: all of them.
    {max_iter}
    {early_stopping}
    {validation_fraction}
    {n_iter_no_change}
    {tol}
    {max_grad_norm}
    {compile}
    {warm_start}
    {random_state}
    {device}
    {n_threads}
    {verbose}
    {callbacks}

    Attributes
    ----------
    module_ : torch.nn.Module
        The meta-learned state: ``module_.network`` is the network holding
        the meta-learned initialisation, ``module_.inner_meta()`` the inner
        optimizer's meta-parameters (Meta-SGD's learned rates).
    inner_optimizer_ : object
        The inner optimizer used.
    adapted_params_ : dict of str to Tensor or None
        Parameters after :meth:`partial_adapt`; ``None`` before.
    inner_state_ : object
        The inner optimizer's state after :meth:`partial_adapt`.
    n_support_, n_query_ : int
        Support and query rows per task used in meta-training (with
        ``meta_objective="marginal_likelihood"``: 0, and the rows per group
        in one update).
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
        "head": [StrOptions({"gradient", "ridge"})],
        "meta_objective": [StrOptions({"episodes", "marginal_likelihood"})],
    }

    def __init__(
        self,
        hidden_layer_sizes=(40, 40),
        activation="tanh",
        *,
        module=None,
        module_kwargs=None,
        head="ridge",
        meta_objective="episodes",
        adapt_params="all",
        inner_optimizer="sgd",
        inner_lr=0.01,
        inner_steps=1,
        adapt_steps=None,
        first_order=False,
        recompute_inner=False,
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
        max_grad_norm=None,
        compile="auto",
        warm_start=False,
        random_state=None,
        device="cpu",
        n_threads="auto",
        verbose=0,
        callbacks=None,
    ):
        super().__init__(**_arguments(locals()))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _check_head_arguments(self) -> None:
        if self.meta_objective == "marginal_likelihood" and self.head != "ridge":
            raise ValueError(
                f"meta_objective='marginal_likelihood' needs head='ridge', got head={self.head!r}: only the "
                "Bayesian linear head has a marginal likelihood. Set head='ridge' or meta_objective='episodes'."
            )
        super()._check_head_arguments()

    def _validate_targets(self, X, y, reset):
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
    def _loss(output, target):
        return torch.nn.functional.mse_loss(output, target)

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

    def _make_sampler(self, X_t, y_t, y_encoded, groups, generator):
        return grouped_sampler(self, X_t, y_t, groups, generator)

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
            of each row's target (``head="ridge"`` only), as ``BayesianRidge``
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
        if return_std and self._serving().head != "ridge":
            raise ValueError("return_std=True needs head='ridge': its Bayesian linear head has a predictive variance.")
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
