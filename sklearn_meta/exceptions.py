"""Warnings and errors raised by sklearn-meta."""

from sklearn.exceptions import NotFittedError

__all__ = ["NonFiniteLossWarning", "NotAdaptedError", "RankFailedError", "SingleTaskWarning", "SmallTaskWarning"]


class SingleTaskWarning(UserWarning):
    """``fit`` received no ``groups`` (or one task) and treats all rows as one task.

    Inside ``GridSearchCV``, ``Pipeline`` or ``cross_validate`` this usually
    means metadata routing is off, so scikit-learn dropped ``groups``:
    enable it with ``sklearn.set_config(enable_metadata_routing=True)``.
    """


class SmallTaskWarning(UserWarning):
    """``score`` (with ``groups``) left out the tasks too small to be scored.

    The few-shot score adapts each task on its first ``n_support`` rows and
    scores the others, so a task of ``n_support`` rows or fewer has nothing
    to score. Real grouped data often has such groups (a county with two
    homes); they are left out of the score, which covers the other tasks,
    instead of failing the whole call (inside ``cross_validate`` or
    ``GridSearchCV``, a failed score is a NaN for that split). ``score``
    raises a ``ValueError`` when no task has more than ``n_support`` rows.
    """


class NonFiniteLossWarning(UserWarning):
    """Meta-training stopped early because the meta-loss or meta-gradient was not finite."""


class NotAdaptedError(NotFittedError):
    """An episodic :class:`~sklearn_meta.MetaClassifier` was asked to predict before ``partial_adapt``."""


class RankFailedError(RuntimeError):
    """Distributed ``fit``: another rank of the process group failed, so this rank stopped too.

    Raised on every rank but the one that failed (which raises its own
    error), instead of waiting for it forever. The estimator is left as it
    was before ``fit``. See the user guide's "Scaling out".
    """
