"""Few-shot classification: the shared classifier, and MetaClassifier over grouped tasks.

:class:`BaseMetaClassifier` holds both kinds of task collection: grouped
tasks whose labels mean the same everywhere (:class:`MetaClassifier`), and
N-way K-shot episodes with task-local labels (``EpisodicClassifier``, in
``_episodic``; and, until 0.4, ``MetaClassifier(n_way=...)``, deprecated).
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ..exceptions import NotAdaptedError
from ..heads import BayesianLogisticHead, GradientHead, Head, PrototypeHead, RidgeClassifierHead, masked_mean
from ..tasks import EpisodeSampler, class_pool, describe, episode_sampling, grouped_sampling
from ._base import BaseMetaEstimator, arguments
from ._docstrings import fill_parameters
from ._heads import DEPRECATED, deprecated_constraints, is_deprecated, require, warn_deprecated
from ._serving import as_float_tensor, check_support_targets, diverged

_EPISODIC_N_QUERY = 15  # query rows per class of MetaClassifier(n_way=...)'s episodes, when n_query is None


def _encode_labels(classes: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of ``y`` in the sorted ``classes``, and a mask of the labels that are not among them."""
    try:
        codes = np.searchsorted(classes, y)
    except TypeError:  # labels of a type that does not compare with the classes' (strings against ints)
        return np.zeros(len(y), dtype=np.int64), np.ones(len(y), dtype=bool)
    unknown = (codes >= len(classes)) | (classes[np.minimum(codes, len(classes) - 1)] != y)
    return codes, unknown


class BaseMetaClassifier(ClassifierMixin, BaseMetaEstimator):
    """Base class of the meta-learned classifiers; not for direct use."""

    _criterion = torch.nn.CrossEntropyLoss
    _task_type = "classification"

    # predict(X, groups=..., y_support=..., support=...) adapts to new tasks: requested by default,
    # so a Pipeline routes them with metadata routing on and without set_*_request calls.
    __metadata_request__predict = {"groups": True, "y_support": True, "support": True}
    __metadata_request__predict_proba = {"groups": True, "y_support": True, "support": True}

    #: Whether tasks are N-way K-shot episodes with task-local labels (else grouped tasks, global classes).
    _episodic: bool = False

    def _episodes(self) -> tuple[int, int, int, int]:
        """``n_way``, ``k_shot``, query rows per class and scoring episodes, in episodic mode."""
        raise NotImplementedError

    @property
    def _head_shortcuts(self):  # type: ignore[override]
        # Episodes permute the labels in every task: the ridge head then shrinks towards zero, not
        # towards a meta-learned last layer whose output units mean nothing from one task to the next.
        shrink = not self._episodic
        return {
            "ridge": lambda: RidgeClassifierHead(shrink_to_head=shrink),
            "prototypes": PrototypeHead,
            "gradient": GradientHead,
            "logistic": BayesianLogisticHead,
        }

    # Targets ----------------------------------------------------------------

    def _validate_targets(self, X, y, reset, fit=False):
        # The serving fast path: integer labels in a 1-d numpy array are valid classification targets.
        plain = not reset and not fit and type(y) is np.ndarray and y.ndim == 1 and y.dtype.kind in "iu"
        if plain:
            X = self._validate_rows(X)
            plain = len(y) == len(X)
        if not plain:
            X, y = validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32))
            check_classification_targets(y)
        if reset or (fit and self._episodic):  # episodes: the training pool's own classes, on a warm start too
            labels, codes = np.unique(y, return_inverse=True)
            return X, codes, ({} if self._episodic else {"classes_": labels})
        attributes = {}
        classes = getattr(self, "classes_", None)
        if self._episodic and classes is None:  # the first adaptation to a task names its classes
            classes = np.unique(y)
            n_way = self._episodes()[0]
            if len(classes) > n_way:
                raise ValueError(
                    f"This model adapts to {n_way}-way tasks but y has {len(classes)} classes ({describe(classes)})."
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
        if self._episodic:
            return self._episodes()[0]
        return len(target_attributes.get("classes_", getattr(self, "classes_", [])))

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
                f"An episodic {type(self).__name__} takes each task's classes from its support rows, but task(s) "
                f"{describe(labels[n_classes == 0])} have no support rows."
            )
        n_way = self._episodes()[0]
        if (n_classes > n_way).any():
            raise ValueError(
                f"This model adapts to {n_way}-way tasks but task(s) {describe(labels[n_classes > n_way])} "
                f"have up to {n_classes.max()} classes in y_support."
            )
        first = np.concatenate([[0], np.cumsum(n_classes)[:-1]])
        local = np.arange(len(pairs)) - first[pair_task]  # a class's rank among its task's classes
        task_columns = np.full((n_tasks, n_way), -1)
        task_columns[pair_task, local] = pairs % len(columns)
        return local[pair], (columns, task_columns, n_classes)

    def _target_tensor(self, y_encoded, device):
        return torch.as_tensor(np.asarray(y_encoded, dtype=np.int64), device=device)

    @staticmethod
    def _loss(output, target, mask=None):
        if mask is None:
            return torch.nn.functional.cross_entropy(output, target)
        return masked_mean(torch.nn.functional.cross_entropy(output, target, reduction="none"), mask)

    def _score_outputs(self, outputs, y_encoded, codes, sample_weight=None):
        return float(accuracy_score(y_encoded, outputs.argmax(axis=-1), sample_weight=sample_weight))

    def _reset_adaptation_state(self):
        super()._reset_adaptation_state()
        if self._episodic:
            self.__dict__.pop("classes_", None)

    # Episodes -----------------------------------------------------------------

    def _sampling(self, X_t, y_t, y_encoded, groups, generator):
        validation_fraction = self.validation_fraction if self.early_stopping else None
        if not self._episodic:
            return grouped_sampling(
                X_t,
                y_t,
                groups,
                generator,
                n_support=self.n_support,
                n_query=self.n_query,
                whole_groups=getattr(self, "meta_objective", "episodes") == "marginal_likelihood",
                validation_fraction=validation_fraction,
            )
        n_way, k_shot, n_query, _ = self._episodes()
        return episode_sampling(
            X_t,
            y_encoded,
            generator,
            n_way=n_way,
            k_shot=k_shot,
            n_query=n_query,
            validation_fraction=validation_fraction,
            n_validation_episodes=max(self.meta_batch_size, 32),
        )

    def _episodic_score(self, X, y):
        check_is_fitted(self)
        X, y = validate_data(self, X, y, reset=False, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        device = self._runtime_device()
        _, codes = np.unique(y, return_inverse=True)
        n_way, k_shot, n_query, n_episodes = self._episodes()
        classes, pool = class_pool(codes, n_way, k_shot, n_query, device, "score()")
        generator = torch.Generator(device=device)
        generator.manual_seed(int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max)))
        sampler = EpisodeSampler(as_float_tensor(X, device), classes, pool, n_way, k_shot, n_query)
        batch = sampler.sample(n_episodes, generator)
        logits = self._adapt_and_predict(batch.x_support, batch.y_support, batch.x_query)
        if not torch.isfinite(logits).all():
            raise diverged("the scoring episodes", self.head_)
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
                    f"An episodic {type(self).__name__} has no classes until it is adapted: call "
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
            torch.arange(self._episodes()[0], device=logits.device)
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
        >>> from sklearn_meta import EpisodicClassifier
        >>> X, y = load_digits(return_X_y=True)
        >>> X = X / 16
        >>> train = y < 7  # meta-train on digits 0-6, adapt to new tasks over 7, 8, 9
        >>> clf = EpisodicClassifier(n_way=2, k_shot=5, max_iter=20, random_state=0).fit(X[train], y[train])
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
        Episodes (:class:`EpisodicClassifier`): ``n_score_episodes`` seeded episodes are drawn from the
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


@fill_parameters
class MetaClassifier(BaseMetaClassifier):
    """Meta-learned classifier over grouped tasks, adapting to a new task from a few labelled rows.

    Rows are grouped into tasks by ``groups`` (a person, school, store), and
    labels mean the same thing in every task: ``classes_`` is global and set
    by ``fit``. For N-way K-shot episodes drawn from a pool of classes, whose
    labels are task-local, use :class:`EpisodicClassifier`.

    By default the last layer is a Bayesian logistic (softmax) regression on
    the inputs (no hidden layer), with a meta-learned prior mean and
    diagonal prior covariance: each new task's posterior by a Laplace
    approximation, and probabilities integrated over it
    (:class:`~sklearn_meta.heads.BayesianLogisticHead`). That is a logistic
    mixed model (GLMM) with random intercepts and slopes on every feature,
    fitted for few-shot prediction; it ties a GLMM's log loss on the grouped
    binary data sets of ``benchmarks/real_data_classification.py``.

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
        Support rows per task, in meta-training and in :meth:`score`. A
        task adapts on ``min(n_support, its rows - 1)`` rows, so that every
        task of two rows or more counts; a float is a fraction of each
        task's own rows. One-row tasks are left out with a
        :class:`~sklearn_meta.exceptions.SmallTaskWarning`.
    n_query : int, default=None
        Query rows per training task: at most ``n_query`` of the rows its
        support leaves; ``None`` uses all of them.
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
    n_way, k_shot, n_score_episodes : deprecated
        .. deprecated:: 0.3
           N-way K-shot episodes are :class:`EpisodicClassifier`, with the
           same arguments: ``n_way`` changed what ``n_support``, ``n_query``,
           ``classes_`` and ``score`` mean. Set here, they still select
           episodes with a ``FutureWarning`` (``n_query=None`` meaning 15
           per class), and the defaults ``head="logistic"`` and
           ``meta_lr=3e-3`` mean EpisodicClassifier's (``"ridge"``, 1e-3).
           Removed in 0.4.

    Attributes
    ----------
    classes_ : ndarray
        All labels seen in ``fit``.
    module_ : torch.nn.Module
        The meta-learned state: ``module_.network`` is the network (its
        ``body`` and last layer ``head``) holding the meta-learned
        initialisation, ``module_.head_meta()`` the head's meta-parameters.
    head_ : Head
        The fitted copy of the head.
    adapted_params_ : dict of str to Tensor or None
        Parameters after :meth:`partial_adapt`.
    adaptation_state_ : object
        The head's state after :meth:`partial_adapt`.
    n_support_, n_query_ : int
        Support and query rows per training task: the most of any task
        (smaller tasks use fewer, masked).
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
    EpisodicClassifier : N-way K-shot episodes with task-local labels.
    MetaRegressor : The regression counterpart.

    Examples
    --------
    >>> from sklearn_meta import MetaClassifier
    >>> from sklearn_meta.datasets import make_classification_tasks
    >>> X, y, groups = make_classification_tasks(n_tasks=40, random_state=0)
    >>> clf = MetaClassifier(max_iter=20, random_state=0).fit(X, y, groups=groups)
    >>> X_new, y_new, _ = make_classification_tasks(n_tasks=1, random_state=1)
    >>> clf.partial_adapt(X_new[:10], y_new[:10]).predict(X_new[10:20]).shape
    (10,)
    """

    _parameter_constraints: dict = {
        **BaseMetaEstimator._parameter_constraints,
        "head": [StrOptions({"gradient", "logistic", "prototypes", "ridge"}), Head],
        "meta_objective": [StrOptions({"episodes", "marginal_likelihood"})],
        "n_support": [Interval(Integral, 1, None, closed="left"), Interval(RealNotInt, 0, 1, closed="neither")],
        "n_query": [Interval(Integral, 1, None, closed="left"), None],
        **deprecated_constraints(
            {
                "n_way": [Interval(Integral, 2, None, closed="left"), None],
                "k_shot": [Interval(Integral, 1, None, closed="left")],
                "n_score_episodes": [Interval(Integral, 1, None, closed="left")],
            },
            ("n_way", "k_shot", "n_score_episodes"),
        ),
    }

    _deprecated_episode_arguments = ("n_way", "k_shot", "n_score_episodes")
    _head_shortcuts_doc = """
        - ``"ridge"``: :class:`~sklearn_meta.heads.RidgeClassifierHead`,
          ridge regression of the one-hot labels on the features, times a
          logit scale (R2-D2), shrunk towards the meta-learned last layer;
          the penalty and the scale are meta-learned. Unlike prototypes it
          needs no scaling of the inputs.
        - ``"prototypes"``: :class:`~sklearn_meta.heads.PrototypeHead`, each
          class's mean support feature (prototypical networks, Snell et al.
          2017), scored by negative squared distance with a meta-learned
          scale.
        - ``"logistic"`` (the default): :class:`~sklearn_meta.heads.BayesianLogisticHead`,
          Bayesian softmax regression on the features with a meta-learned
          prior, each task's posterior by a Laplace approximation, and
          probabilities integrated over it: a logistic mixed model (GLMM)
          with learned features; it has a marginal likelihood
          (``meta_objective="marginal_likelihood"``).
        - ``"gradient"``: :class:`~sklearn_meta.heads.GradientHead`, inner
          gradient steps (MAML, Meta-SGD, ANIL).

        The default was chosen from the measurements in the user guide.
    """

    def __init__(
        self,
        hidden_layer_sizes=(),
        activation="relu",
        *,
        module=None,
        module_kwargs=None,
        head="logistic",
        meta_objective="episodes",
        meta_optimizer="adam",
        meta_lr=3e-3,
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
        n_way=DEPRECATED,
        k_shot=DEPRECATED,
        n_score_episodes=DEPRECATED,
    ):
        super().__init__(**arguments(locals()))

    @property
    def _episodic(self) -> bool:  # type: ignore[override]
        return not is_deprecated(self.n_way) and self.n_way is not None

    @property
    def _head_shortcuts(self):  # type: ignore[override]
        shortcuts = dict(super()._head_shortcuts)
        if self._episodic:  # deprecated n_way: the default "logistic" assumes labels meaning the same in every task
            shortcuts["logistic"] = shortcuts["ridge"]  # EpisodicClassifier's default, as before
        return shortcuts

    @property
    def _meta_lr(self) -> float:
        # Deprecated episodes keep EpisodicClassifier's default rate (MetaClassifier's is for grouped tasks).
        return 1e-3 if self._episodic and self.meta_lr == 3e-3 else self.meta_lr

    def _check_head(self, head) -> None:
        if self.meta_objective == "marginal_likelihood":
            if self._episodic:
                raise ValueError(
                    "meta_objective='marginal_likelihood' fits grouped tasks, not N-way episodes (n_way is set)."
                )
            require(
                head,
                "negative_log_evidence",
                "meta_objective='marginal_likelihood'",
                "BayesianLogisticHead, head='logistic', has one; or set meta_objective='episodes'",
            )

    def _episodes(self):
        k_shot = 1 if is_deprecated(self.k_shot) else self.k_shot
        n_query = _EPISODIC_N_QUERY if self.n_query is None else self.n_query
        n_episodes = 100 if is_deprecated(self.n_score_episodes) else self.n_score_episodes
        return self.n_way, k_shot, n_query, n_episodes

    def fit(self, X, y, groups=None):
        if self._episodic:
            set_here = {name: getattr(self, name) for name in self._deprecated_episode_arguments}
            kwargs = ", ".join(f"{k}={v!r}" for k, v in set_here.items() if not is_deprecated(v))
            warn_deprecated(
                [name for name, value in set_here.items() if not is_deprecated(value)],
                f"Episodes are EpisodicClassifier({kwargs}), with the same arguments (n_query: query rows per "
                "class, 15 by default).",
            )
        return super().fit(X, y, groups=groups)

    fit.__doc__ = BaseMetaEstimator.fit.__doc__
