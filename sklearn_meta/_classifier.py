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
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._adaptation import as_float_tensor, check_support_targets, diverged
from ._base import BaseMetaEstimator, _arguments
from ._docstrings import fill_parameters
from ._samplers import class_pool, episode_sampler, grouped_sampler
from ._splitting import describe
from ._tasks import EpisodeSampler
from .exceptions import NotAdaptedError

_EPISODIC_N_QUERY = 15


def _encode_labels(classes: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of ``y`` in the sorted ``classes``, and a mask of the labels that are not among them."""
    try:
        codes = np.searchsorted(classes, y)
    except TypeError:  # labels of a type that does not compare with the classes' (strings against ints)
        return np.zeros(len(y), dtype=np.int64), np.ones(len(y), dtype=bool)
    unknown = (codes >= len(classes)) | (classes[np.minimum(codes, len(classes) - 1)] != y)
    return codes, unknown


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
    {recompute_inner}
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
    {n_threads}
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

    # predict(X, groups=..., y_support=..., support=...) adapts to new tasks: requested by default,
    # so a Pipeline routes them with metadata routing on and without set_*_request calls.
    __metadata_request__predict = {"groups": True, "y_support": True, "support": True}
    __metadata_request__predict_proba = {"groups": True, "y_support": True, "support": True}

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
        hidden_layer_sizes=(),
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

    @property
    def _episodic(self) -> bool:
        return self.n_way is not None

    def _episode_n_query(self) -> int:
        return _EPISODIC_N_QUERY if self.n_query is None else self.n_query

    # Targets ----------------------------------------------------------------

    def _validate_targets(self, X, y, reset):
        # The serving fast path: integer labels in a 1-d numpy array are valid classification targets.
        plain = not reset and type(y) is np.ndarray and y.ndim == 1 and y.dtype.kind in "iu"
        if plain:
            X = self._validate_rows(X)
            plain = len(y) == len(X)
        if not plain:
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
        codes, unknown = _encode_labels(classes, y)
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

    def _encode_support_targets(self, y, tasks, labels, n_tasks):
        """Class codes of the support rows; in episodic mode, each task's classes from its own rows.

        Episodes return, besides the codes, ``(columns, task_columns,
        n_classes)``: the sorted labels of all support rows, and for each task
        the column (in ``columns``) of its local classes ``0 .. n_classes - 1``
        (-1 beyond), as ``partial_adapt`` would set ``classes_``.
        """
        y = column_or_1d(y, warn=True)
        check_support_targets(y, tasks, labels)
        if len(y):
            check_classification_targets(y)
        if not self._episodic:
            codes, unknown = _encode_labels(self.classes_, y)
            if unknown.any():
                raise ValueError(
                    f"y_support has labels outside classes_ {self.classes_.tolist()}: "
                    f"{describe(np.unique(y[unknown]))}. A grouped MetaClassifier knows only the classes seen in fit."
                )
            return codes, None
        columns, column = np.unique(y, return_inverse=True)
        pairs, pair = np.unique(tasks * len(columns) + column, return_inverse=True)  # (task, class) pairs
        pair_task = pairs // max(1, len(columns))
        n_classes = np.bincount(pair_task, minlength=n_tasks)
        if (n_classes == 0).any():
            raise ValueError(
                "An episodic MetaClassifier takes each task's classes from its support rows, but task(s) "
                f"{describe(labels[n_classes == 0])} have no support rows."
            )
        if (n_classes > self.n_way).any():
            raise ValueError(
                f"This model adapts to {self.n_way}-way tasks but task(s) {describe(labels[n_classes > self.n_way])} "
                f"have up to {n_classes.max()} classes in y_support."
            )
        first = np.concatenate([[0], np.cumsum(n_classes)[:-1]])
        local = np.arange(len(pairs)) - first[pair_task]  # a class's rank among its task's classes
        task_columns = np.full((n_tasks, self.n_way), -1)
        task_columns[pair_task, local] = pairs % len(columns)
        return local[pair], (columns, task_columns, n_classes)

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

    def _batch_logits(self, X, groups, y_support, support):
        """Each row's logits after adapting its task (``-inf`` beyond an episode's classes), and the columns.

        Returns the logits, the labels of their columns for each row (an
        array of labels, or per-row column indices into the labels in
        episodic mode) and the labels of the output columns.
        """
        logits, _, tasks, episodes = self._batch_outputs(X, groups, y_support, support)
        if not self._episodic:
            return logits, None, self.classes_
        columns, task_columns, n_classes = episodes
        in_task = (
            torch.arange(self.n_way, device=logits.device)
            < torch.as_tensor(n_classes[tasks], device=logits.device)[:, None]
        )
        return logits.masked_fill(~in_task, -torch.inf), task_columns[tasks], columns

    def predict(self, X, groups=None, y_support=None, support=None):
        """Predict class labels with the adapted model, or adapt to many new tasks at once and predict them.

        Without ``groups``: the predictions of the current model, adapted by
        :meth:`partial_adapt`.

        With ``groups``: every distinct group of ``X`` is a new task. Its
        rows with ``support`` True are its support rows, labelled by
        ``y_support``; each task is adapted on them from the meta-learned
        initialisation, as ``reset_adaptation().partial_adapt(X_support,
        y_support)`` would, and each row of ``X`` is predicted by its task's
        adapted model. Tasks with the same number of support rows are adapted
        in one vectorised call. A task without support rows gets the
        meta-learned model's predictions (an error in episodic mode, where a
        task's classes are those of its support rows). The estimator is not
        changed (its ``partial_adapt`` state included). In a
        :class:`~sklearn.pipeline.Pipeline`, ``pipe.predict(X, groups=...,
        y_support=..., support=...)`` transforms the support rows with the
        rest of ``X``; these three arguments are requested by default under
        metadata routing.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        groups : array-like of shape (n_samples,), default=None
            Task id of every row: adapt to each task and predict its rows.
        y_support : array-like of shape (n_samples,), default=None
            Labels, aligned with ``X``; only the values at support rows are
            read. Required with ``groups``. Grouped tasks: labels of
            ``classes_``. Episodes: any labels, at most ``n_way`` per task.
        support : array-like of bool of shape (n_samples,), default=None
            True at each task's support rows. Required with ``groups``.

        Returns
        -------
        y : ndarray of shape (n_samples,)

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from sklearn_meta import MetaClassifier
        >>> X, y = load_digits(return_X_y=True)
        >>> X = X / 16
        >>> train = y < 7  # meta-train on digits 0-6, adapt to new tasks over 7, 8, 9
        >>> clf = MetaClassifier(n_way=2, k_shot=5, max_iter=20, random_state=0).fit(X[train], y[train])
        >>> rows = np.concatenate([np.flatnonzero(y == c)[:10] for c in (7, 8, 8, 9)])  # two 2-way tasks
        >>> groups = np.repeat(["store A", "store B"], 20)
        >>> support = np.tile(np.arange(10) < 5, 4)  # 5 labelled rows per class
        >>> clf.predict(X[rows], groups=groups, y_support=y[rows], support=support).shape
        (40,)
        """
        if groups is None and y_support is None and support is None:
            winners = self._logits(X).argmax(dim=1).cpu().numpy()
            return self.classes_[winners]
        logits, row_columns, columns = self._batch_logits(X, groups, y_support, support)
        winners = logits.argmax(dim=1).cpu().numpy()
        if row_columns is None:
            return columns[winners]
        return columns[row_columns[np.arange(len(winners)), winners]]

    def predict_proba(self, X, groups=None, y_support=None, support=None):
        """Class probabilities from the adapted model, or from each task's model after adapting to it.

        Without ``groups``, columns in the order of ``classes_``. With
        ``groups`` (see :meth:`predict`): grouped tasks, columns in the order
        of ``classes_``; episodes, one column per label of
        ``y_support[support]`` in sorted order (``np.unique``), zero for the
        labels outside a row's task.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        groups : array-like of shape (n_samples,), default=None
            Task id of every row: adapt to each task and predict its rows.
        y_support : array-like of shape (n_samples,), default=None
            Labels, aligned with ``X``; only the values at support rows are
            read. Required with ``groups``.
        support : array-like of bool of shape (n_samples,), default=None
            True at each task's support rows. Required with ``groups``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        if groups is None and y_support is None and support is None:
            return torch.softmax(self._logits(X), dim=1).cpu().numpy().astype(np.float64)
        logits, row_columns, columns = self._batch_logits(X, groups, y_support, support)
        proba = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
        if row_columns is None:
            return proba
        out = np.zeros((len(proba), len(columns)))
        rows, local = np.nonzero(row_columns >= 0)
        out[rows, row_columns[rows, local]] = proba[rows, local]
        return out

    def score(self, X, y, sample_weight=None, groups=None):
        """Few-shot accuracy on held-out tasks.

        Grouped tasks with ``groups``: each task is adapted (on a copy of the
        meta-learned model) on its first ``n_support`` rows and its other rows
        are predicted; the score is the accuracy over all those rows. Tasks
        of ``n_support`` rows or fewer are left out, with a
        :class:`~sklearn_meta.exceptions.SmallTaskWarning`.
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
