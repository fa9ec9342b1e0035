"""Pictures of meta-learning: the meta-training curve and the few-shot adaptation curve.

Both follow scikit-learn's Display API: ``from_estimator`` computes and
plots, ``plot`` draws again on new axes. matplotlib is an optional dependency
(``pip install sklearn-meta[plot]``); computing needs nothing beyond the package.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.utils._optional_dependencies import check_matplotlib_support
from sklearn.utils.validation import check_is_fitted

from .exceptions import SmallTaskWarning
from .heads import Head

__all__ = ["AdaptationCurveDisplay", "MetaTrainingCurveDisplay"]


def _axes(display, ax):
    check_matplotlib_support(f"{type(display).__name__}.plot")
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    return ax


def _finish(display, ax, lines, **labels):
    """Label the axes, add the legend, and keep the artists on the display."""
    ax.set(**labels)
    ax.legend()
    display.lines_, display.ax_, display.figure_ = lines, ax, ax.figure
    return display


class _Unadapted(Head):
    """The meta-learned network as it is: zero adaptation steps of a closed-form head."""

    def init(self, params, meta):
        return ()

    def adapt(self, net, params, meta, state, x, y, mask=None):
        return params, state


def _with_steps(head, n_steps: int):
    """``head`` taking ``n_steps`` adaptation steps: a gradient head's ``adapt_steps``; a closed form fits once."""
    if "adapt_steps" in head.get_params():
        return clone(head).set_params(adapt_steps=n_steps)
    return head if n_steps else _Unadapted()


class MetaTrainingCurveDisplay:
    """The meta-loss of every outer update, and the validation loss with early stopping.

    Parameters
    ----------
    iterations : ndarray
        Outer update numbers, from 1.
    train_loss : ndarray
        Meta-loss of each update (query loss after adaptation, on its meta-batch).
    valid_loss : ndarray or None
        Few-shot loss on the held-out validation tasks, when recorded.
    estimator_name : str, default=None
        Used in the title.

    Attributes
    ----------
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    lines_ : list of matplotlib Line2D

    Examples
    --------
    >>> from sklearn_meta import MetaRegressor
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> from sklearn_meta.inspection import MetaTrainingCurveDisplay
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> est = MetaRegressor(max_iter=30, random_state=0).fit(X, y, groups=groups)
    >>> display = MetaTrainingCurveDisplay.from_estimator(est, plot=False)
    >>> display.train_loss.shape
    (30,)
    """

    def __init__(self, iterations, train_loss, valid_loss=None, estimator_name=None):
        self.iterations = iterations
        self.train_loss = train_loss
        self.valid_loss = valid_loss
        self.estimator_name = estimator_name

    @classmethod
    def from_estimator(cls, estimator, *, smoothing: int = 1, ax=None, plot: bool = True):
        """Read the training history of a fitted meta-estimator and plot it.

        Parameters
        ----------
        estimator : MetaRegressor or MetaClassifier
            A fitted estimator.
        smoothing : int, default=1
            Width of a moving average over the (noisy) per-batch meta-loss.
        ax : matplotlib Axes, default=None
            Where to draw; a new figure if ``None``.
        plot : bool, default=True
            Draw the curve (needs matplotlib).

        Returns
        -------
        display : MetaTrainingCurveDisplay
        """
        check_is_fitted(estimator)
        history = estimator.history_
        train = np.array([row["train_loss"] for row in history], dtype=float)
        if smoothing > 1 and len(train) >= smoothing:
            train = np.convolve(train, np.ones(smoothing) / smoothing, mode="valid")
            train = np.concatenate([np.full(smoothing - 1, np.nan), train])
        valid = None
        if history and "valid_loss" in history[0]:
            valid = np.array([row["valid_loss"] for row in history], dtype=float)
        display = cls(np.arange(1, len(train) + 1), train, valid, type(estimator).__name__)
        return display.plot(ax=ax) if plot else display

    def plot(self, ax=None):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : MetaTrainingCurveDisplay
        """
        ax = _axes(self, ax)
        lines = ax.plot(self.iterations, self.train_loss, label="meta-loss (training batches)")
        if self.valid_loss is not None:
            lines += ax.plot(self.iterations, self.valid_loss, label="few-shot loss (validation tasks)")
        title = f"Meta-training of {self.estimator_name}"
        return _finish(self, ax, lines, xlabel="outer update", ylabel="loss", title=title)


class AdaptationCurveDisplay:
    """Few-shot error on held-out tasks against the number of adaptation steps.

    For each number of steps, every held-out task is adapted on its first
    ``n_support`` rows and the error on its other rows is measured: mean
    squared error for a regressor, error rate for a classifier. A baseline
    (for instance a network pretrained on all tasks pooled) is drawn as a
    horizontal line on the same query rows.

    Parameters
    ----------
    steps : ndarray
        Numbers of adaptation steps.
    errors : ndarray
        Held-out error after each number of steps.
    baseline_error : float or None
        Error of the baseline on the same query rows.
    baseline_name : str or None
        Label of the baseline line.
    metric_name : str
        ``"mean squared error"`` or ``"error rate"``.

    Attributes
    ----------
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    lines_ : list of matplotlib Line2D

    Examples
    --------
    >>> from sklearn_meta import MetaRegressor
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> from sklearn_meta.inspection import AdaptationCurveDisplay
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> X_new, y_new, groups_new = make_sinusoid_tasks(n_tasks=20, random_state=1)
    >>> est = MetaRegressor(max_iter=30, random_state=0).fit(X, y, groups=groups)
    >>> curve = AdaptationCurveDisplay.from_estimator(est, X_new, y_new, groups_new, steps=[0, 1, 5], plot=False)
    >>> curve.errors.shape
    (3,)
    """

    def __init__(self, steps, errors, baseline_error=None, baseline_name=None, metric_name="error"):
        self.steps = steps
        self.errors = errors
        self.baseline_error = baseline_error
        self.baseline_name = baseline_name
        self.metric_name = metric_name

    @classmethod
    def from_estimator(cls, estimator, X, y, groups, *, steps=range(11), baseline=None, ax=None, plot=True):
        """Measure the held-out few-shot error after each number of adaptation steps.

        Parameters
        ----------
        estimator : MetaRegressor or MetaClassifier
            A fitted estimator; it is not changed. With a closed-form head,
            0 steps is the meta-learned network before adaptation and any
            positive number its one closed-form fit.
        X, y : array-like
            Rows of held-out tasks.
        groups : array-like of shape (n_samples,)
            Their task ids. As in ``score``, each task adapts on its first
            ``n_support`` rows; tasks with no rows left are left out, with
            one :class:`~sklearn_meta.exceptions.SmallTaskWarning`.
        steps : iterable of int, default=range(11)
            Numbers of adaptation steps to try.
        baseline : fitted estimator, default=None
            Drawn as a horizontal line: its error on the same query rows.
        ax : matplotlib Axes, default=None
        plot : bool, default=True

        Returns
        -------
        display : AdaptationCurveDisplay
        """
        check_is_fitted(estimator)
        steps = np.asarray(list(steps), dtype=int)
        classifier = is_classifier(estimator)
        errors, query, codes = [], None, None
        for i, n_steps in enumerate(steps):
            with warnings.catch_warnings():
                if i:  # the same tasks are left out at every step: say it once
                    warnings.simplefilter("ignore", SmallTaskWarning)
                outputs, is_query, codes, y_encoded = estimator._few_shot_outputs(
                    X, y, groups, where="AdaptationCurveDisplay", head=_with_steps(estimator.head_, int(n_steps))
                )
            query = is_query.cpu().numpy()
            out = outputs.cpu().numpy()[query]
            if classifier:
                errors.append(float(np.mean(out.argmax(axis=1) != y_encoded[query])))
            else:
                errors.append(float(np.mean((out - y_encoded[query]) ** 2)))
        baseline_error = None
        if baseline is not None:
            X_query = np.asarray(X)[query] if not hasattr(X, "iloc") else X.iloc[np.flatnonzero(query)]
            y_query = np.asarray(y)[query]
            predicted = baseline.predict(X_query)
            if classifier:
                baseline_error = float(np.mean(predicted != y_query))
            else:
                baseline_error = float(np.mean((np.reshape(predicted, y_query.shape) - y_query) ** 2))
        display = cls(
            steps,
            np.asarray(errors),
            baseline_error,
            None if baseline is None else type(baseline).__name__,
            "error rate" if classifier else "mean squared error",
        )
        return display.plot(ax=ax) if plot else display

    def plot(self, ax=None):
        """Draw the curve and the baseline.

        Parameters
        ----------
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : AdaptationCurveDisplay
        """
        ax = _axes(self, ax)
        lines = ax.plot(self.steps, self.errors, marker="o", label="meta-learned, adapted")
        if self.baseline_error is not None:
            lines.append(ax.axhline(self.baseline_error, linestyle="--", color="gray", label=self.baseline_name))
        return _finish(
            self,
            ax,
            lines,
            xlabel="adaptation steps",
            ylabel=f"held-out {self.metric_name}",
            title="Few-shot adaptation",
        )
