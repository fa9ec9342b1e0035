"""EpisodicClassifier: few-shot classification of new classes from N-way K-shot episodes."""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval, StrOptions

from ..heads import Head
from ._base import BaseMetaEstimator, arguments
from ._classifier import BaseMetaClassifier
from ._docstrings import fill_parameters

__all__ = ["EpisodicClassifier"]


@fill_parameters
class EpisodicClassifier(BaseMetaClassifier):
    """Meta-learned classifier of new classes, trained on N-way K-shot episodes.

    The standard few-shot protocol: each training task draws ``n_way``
    classes from the pool of classes in ``y``, with ``k_shot`` support and
    ``n_query`` query rows per class, and labels them ``0 .. n_way - 1`` in
    random order, so no class keeps an output unit. Labels are task-local:
    the first :meth:`partial_adapt` after ``fit`` or :meth:`reset_adaptation`
    sets ``classes_`` from its ``y`` (at most ``n_way`` classes, any labels,
    classes never seen in ``fit`` included); ``predict`` before any
    adaptation is a clear error. ``fit`` takes no ``groups``: the classes are
    the pool.

    It is its own estimator, not a mode of :class:`MetaClassifier`, because
    episodes change what every task-related argument and attribute means:
    support rows are ``k_shot`` per class, query rows are per class,
    ``classes_`` belongs to the adapted task, and ``score`` draws episodes
    instead of scoring held-out groups.

    Parameters
    ----------
    {hidden_layer_sizes}
    {activation}
    {module}
    {module_kwargs}
    n_way : int, default=5
        Classes per episode, and the most classes a task adapts to.
    k_shot : int, default=1
        Support rows per class in an episode.
    n_query : int, default=15
        Query rows per class in a training episode (and in :meth:`score`'s).
    n_score_episodes : int, default=100
        Episodes drawn by :meth:`score`.
    {head}
    {meta_optimizer}
    {meta_lr}
    meta_batch_size : int, default=25
        Episodes per outer update.
    {max_iter}
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the classes (at least ``n_way``)
        and stop when the few-shot loss of fixed episodes of them has not
        improved by ``tol`` for ``n_iter_no_change`` updates, keeping the
        best meta-parameters. Their loss and accuracy are recorded in
        ``history_`` as ``valid_loss`` and ``valid_score``.
    validation_fraction : float, default=0.1
        Fraction of the classes held out for early stopping.
    {n_iter_no_change}
    {tol}
    {compile}
    {warm_start}
    random_state : int, RandomState instance or None, default=None
        Seeds the network initialisation, the training episodes and the
        scoring episodes.
    {device}
    {n_threads}
    {verbose}
    {callbacks}

    Attributes
    ----------
    classes_ : ndarray
        The labels of the task adapted to, set by the first
        :meth:`partial_adapt` (absent before).
    module_ : torch.nn.Module
        The meta-learned state: ``module_.network`` (its ``body`` and last
        layer ``head``) and ``module_.head_meta()``, the head's
        meta-parameters.
    head_ : Head
        The fitted copy of the head.
    adapted_params_ : dict of str to Tensor or None
        Parameters after :meth:`partial_adapt`.
    adaptation_state_ : object
        The head's state after :meth:`partial_adapt`.
    n_support_, n_query_ : int
        Support and query rows of a training episode (``n_way * k_shot``,
        ``n_way * n_query``).
    n_outputs_ : int
        Output units of the network (``n_way``).
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
    MetaClassifier : Grouped tasks whose labels mean the same everywhere.
    sklearn_meta.modules.ConvNet : A convolutional body for rows that are images.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_meta import EpisodicClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> train = y < 7  # meta-train on digits 0-6, adapt to 7, 8, 9
    >>> clf = EpisodicClassifier(n_way=3, k_shot=5, max_iter=20, random_state=0)
    >>> clf = clf.fit(X[train], y[train])
    >>> support = np.concatenate([np.flatnonzero(y == c)[:5] for c in (7, 8, 9)])
    >>> clf.partial_adapt(X[support], y[support]).classes_
    array([7, 8, 9])
    """

    _parameter_constraints: dict = {
        **BaseMetaEstimator._parameter_constraints,
        "head": [StrOptions({"gradient", "prototypes", "ridge"}), Head],
        "n_way": [Interval(Integral, 2, None, closed="left")],
        "k_shot": [Interval(Integral, 1, None, closed="left")],
        "n_query": [Interval(Integral, 1, None, closed="left")],
        "n_score_episodes": [Interval(Integral, 1, None, closed="left")],
    }

    _episodic = True
    _head_shortcuts_doc = """
        - ``"ridge"`` (the default):
          ``RidgeClassifierHead(shrink_to_head=False)``, ridge regression of
          the one-hot labels on the features, times a logit scale, shrunk
          towards zero as R2-D2 does (episodes' output units mean nothing
          from one task to the next); the penalty and the scale are
          meta-learned.
        - ``"prototypes"``: :class:`~sklearn_meta.heads.PrototypeHead`,
          prototypical networks (Snell et al. 2017).
        - ``"gradient"``: :class:`~sklearn_meta.heads.GradientHead`, inner
          gradient steps (MAML, Meta-SGD, ANIL).

        The default was chosen from the measurements in the user guide
        (novel-class digits).
    """

    def __init__(
        self,
        hidden_layer_sizes=(),
        activation="relu",
        *,
        module=None,
        module_kwargs=None,
        n_way=5,
        k_shot=1,
        n_query=15,
        n_score_episodes=100,
        head="ridge",
        meta_optimizer="adam",
        meta_lr=1e-3,
        meta_batch_size=25,
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
    ):
        super().__init__(**arguments(locals()))

    def _episodes(self):
        return self.n_way, self.k_shot, self.n_query, self.n_score_episodes
