"""Warnings and errors raised by sklearn-meta."""

from sklearn.exceptions import NotFittedError

__all__ = ["NonFiniteLossWarning", "NotAdaptedError", "RankFailedError", "SingleTaskWarning"]


class SingleTaskWarning(UserWarning):
    """``fit`` received no ``groups`` (or one task) and treats all rows as one task.

    Inside ``GridSearchCV``, ``Pipeline`` or ``cross_validate`` this usually
    means metadata routing is off, so scikit-learn dropped ``groups``:
    enable it with ``sklearn.set_config(enable_metadata_routing=True)``.
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
