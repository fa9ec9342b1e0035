"""MetaClassifier: few-shot classification, over grouped tasks or N-way K-shot episodes."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._adaptation import as_float_tensor, diverged
from ._base import BaseMetaEstimator, _arguments
from ._docstrings import fill_parameters
from ._samplers import class_pool, episode_sampler, grouped_sampler
from ._splitting import describe
from ._tasks import EpisodeSampler
from .exceptions import NotAdaptedError

_EPISODIC_N_QUERY = 15


@fill_parameters
class MetaClassifier(ClassifierMixin, BaseMetaEstimator):
    """Meta-learned classifier that adapts to a new task from a few labelled rows.

    Two kinds of task collection are supported:

    - **grouped tasks** (``n_way=None``): rows grouped into tasks by
      ``groups``, labels meaning the same thing in every task; ``classes_``
      is global and set by ``fit``.
    - **N-way K-shot episodes** (``n_way`` set): each training task draws
      ``n_way`` classes from the pool of classes in ``y``, with ``k_shot``
      support and ``n_query`` query rows per class, and labels them
      ``0 .. n_way - 1`` in random order. Labels are task-local: the first
      :meth:`partial_adapt` after ``fit`` or :meth:`reset_adaptation` sets
      ``classes_`` from its ``y``.

    Parameters
    ----------
    {hidden_layer_sizes}
    {activation}
    {module}
    {module_kwargs}
    n_way : int, default=None
        Classes per episode; ``None`` for grouped tasks.
    k_shot : int, default=1
        Support rows per class in an episode.
    n_score_episodes : int, default=100
        Episodes drawn by :meth:`score` in episodic mode.
    {head}
    {adapt_params}
    {inner_optimizer}
    {inner_lr}
    {inner_steps}
    {adapt_steps}
    {first_order}
    {meta_optimizer}
    {meta_lr}
    {meta_batch_size}
    n_support : int or float, default=10
        Grouped tasks: support rows per task, in meta-training and in
        :meth:`score`. A float is a fraction of the smallest task's rows
        (every task of a collection adapts on the same number of rows).
        Episodes: not used (``n_way * k_shot``).
    n_query : int, default=None
        Grouped tasks: query rows per task, ``None`` for as many as the
        smallest task leaves. Episodes: query rows per class, ``None`` for 15.
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
    {verbose}
    {callbacks}

    Attributes
    ----------
    classes_ : ndarray
        Grouped tasks: all labels seen in ``fit``. Episodes: the labels of
        the task adapted to, set by the first :meth:`partial_adapt`.
    module_ : torch.nn.Module
        The meta-learned state: ``module_.network`` is the network holding
        the meta-learned initialisation, ``module_.inner_meta()`` the inner
        optimizer's meta-parameters.
    inner_optimizer_ : object
        The inner optimizer used.
    adapted_params_ : dict of str to Tensor or None
        Parameters after :meth:`partial_adapt`.
    inner_state_ : object
        The inner optimizer's state after :meth:`partial_adapt`.
    n_support_, n_query_ : int
        Support and query rows per training task.
    n_outputs_ : int
        Output units of the network.
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
    MetaRegressor : The regression counterpart.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_meta import MetaClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> train = y < 7  # meta-train on digits 0-6, adapt to 7, 8, 9
    >>> clf = MetaClassifier(n_way=3, k_shot=5, max_iter=20, random_state=0)
    >>> clf = clf.fit(X[train], y[train])
    >>> support = np.concatenate([np.flatnonzero(y == c)[:5] for c in (7, 8, 9)])
    >>> clf.partial_adapt(X[support], y[support]).classes_
    array([7, 8, 9])
    """

    _criterion = torch.nn.CrossEntropyLoss

    _parameter_constraints: dict = {
        **BaseMetaEstimator._parameter_constraints,
        "n_way": [Interval(Integral, 2, None, closed="left"), None],
        "k_shot": [Interval(Integral, 1, None, closed="left")],
        "n_score_episodes": [Interval(Integral, 1, None, closed="left")],
        "head": [StrOptions({"gradient", "prototypes", "ridge"})],
    }

    def _head_key(self) -> str:
        # Episodes permute the labels in every task: the ridge head then shrinks towards zero, not
        # towards a meta-learned last layer whose output units mean nothing from one task to the next.
        if self.head == "ridge":
            return "ridge_classifier" if self.n_way is None else "ridge_classifier_episodes"
        return self.head

    def __init__(
        self,
        hidden_layer_sizes=(40, 40),
        activation="relu",
        *,
        module=None,
        module_kwargs=None,
        n_way=None,
        k_shot=1,
        n_score_episodes=100,
        head="ridge",
        adapt_params="all",
        inner_optimizer="sgd",
        inner_lr=0.01,
        inner_steps=1,
        adapt_steps=None,
        first_order=False,
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
        verbose=0,
        callbacks=None,
    ):
        super().__init__(**_arguments(locals()))

    @property
    def _episodic(self) -> bool:
        return self.n_way is not None

    def _episode_n_query(self) -> int:
        return _EPISODIC_N_QUERY if self.n_query is None else self.n_query

    # Targets ----------------------------------------------------------------

    def _validate_targets(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        if reset:
            labels, codes = np.unique(y, return_inverse=True)
            return X, codes, ({} if self._episodic else {"classes_": labels})
        attributes = {}
        classes = getattr(self, "classes_", None)
        if self._episodic and classes is None:  # the first adaptation to a task names its classes
            classes = np.unique(y)
            if len(classes) > self.n_way:
                raise ValueError(
                    f"This model adapts to {self.n_way}-way tasks but y has {len(classes)} classes "
                    f"({describe(classes)})."
                )
            attributes["classes_"] = classes
        codes = np.searchsorted(classes, y)
        unknown = (codes >= len(classes)) | (classes[np.minimum(codes, len(classes) - 1)] != y)
        if unknown.any():
            hint = (
                " Call reset_adaptation() to start a new task."
                if self._episodic
                else " A grouped MetaClassifier knows only the classes seen in fit."
            )
            raise ValueError(
                f"y has labels outside classes_ {classes.tolist()}: {describe(np.unique(y[unknown]))}.{hint}"
            )
        return X, codes, attributes

    def _n_outputs(self, y_encoded, target_attributes):
        return self.n_way if self._episodic else len(target_attributes.get("classes_", getattr(self, "classes_", [])))

    def _target_tensor(self, y_encoded, device):
        return torch.as_tensor(np.asarray(y_encoded, dtype=np.int64), device=device)

    @staticmethod
    def _loss(output, target):
        return torch.nn.functional.cross_entropy(output, target)

    def _score_outputs(self, outputs, y_encoded, codes, sample_weight=None):
        return float(accuracy_score(y_encoded, outputs.argmax(axis=-1), sample_weight=sample_weight))

    def _reset_adaptation_state(self):
        super()._reset_adaptation_state()
        if self._episodic:
            self.__dict__.pop("classes_", None)

    # Episodes -----------------------------------------------------------------

    def _make_sampler(self, X_t, y_t, y_encoded, groups, generator):
        if not self._episodic:
            return grouped_sampler(self, X_t, y_t, groups, generator)
        return episode_sampler(self, X_t, y_encoded, self._episode_n_query(), generator)

    def _episodic_score(self, X, y):
        check_is_fitted(self)
        X, y = validate_data(self, X, y, reset=False, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        device = self._runtime_device()
        _, codes = np.unique(y, return_inverse=True)
        classes, pool = class_pool(codes, self.n_way, self.k_shot, self._episode_n_query(), device, "score()")
        generator = torch.Generator(device=device)
        generator.manual_seed(int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max)))
        sampler = EpisodeSampler(
            as_float_tensor(X, device), classes, pool, self.n_way, self.k_shot, self._episode_n_query()
        )
        batch = sampler.sample(self.n_score_episodes, generator)
        logits = self._adapt_and_predict(batch.x_support, batch.y_support, batch.x_query)
        if not torch.isfinite(logits).all():
            raise diverged("the scoring episodes", self._adapt_steps())
        n_rows = batch.y_query.numel()
        return self._score_outputs(
            logits.reshape(n_rows, -1).cpu().numpy(), batch.y_query.reshape(-1).cpu().numpy(), None
        )

    # Prediction ---------------------------------------------------------------

    def _logits(self, X):
        logits = self._forward(X)
        if self._episodic:
            if not hasattr(self, "classes_"):
                raise NotAdaptedError(
                    "An episodic MetaClassifier has no classes until it is adapted: call "
                    "partial_adapt(X_support, y_support) with the new task's labelled rows first."
                )
            logits = logits[:, : len(self.classes_)]
        return logits

    def predict(self, X):
        """Predict class labels with the adapted model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        winners = self._logits(X).argmax(dim=1).cpu().numpy()
        return self.classes_[winners]

    def predict_proba(self, X):
        """Class probabilities from the adapted model, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return torch.softmax(self._logits(X), dim=1).cpu().numpy().astype(np.float64)

    def score(self, X, y, sample_weight=None, groups=None):
        """Few-shot accuracy on held-out tasks.

        Grouped tasks with ``groups``: each task is adapted (on a copy of the
        meta-learned model) on its first ``n_support`` rows and its other rows
        are predicted; the score is the accuracy over all those rows.
        Episodic mode: ``n_score_episodes`` seeded episodes are drawn from the
        classes in ``X`` (``groups`` is not used). Otherwise: the accuracy of
        the current model. Early stopping's ``valid_score`` is the same metric.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows (of the query rows, with ``groups``). Not
            supported in episodic mode, where rows are drawn at random.
        groups : array-like of shape (n_samples,), default=None
            Task id of every row.

        Returns
        -------
        score : float
        """
        if self._episodic:
            if sample_weight is not None:
                raise ValueError("sample_weight is not supported by the episodic score, which draws rows at random.")
            return self._episodic_score(X, y)
        if groups is None:
            return super().score(X, y, sample_weight=sample_weight)
        return self._few_shot_score(X, y, groups, sample_weight)
