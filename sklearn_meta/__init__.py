"""sklearn-meta: gradient-based meta-learning with a scikit-learn API.

:class:`MetaRegressor` and :class:`MetaClassifier` meta-train over a
collection of tasks (MAML, first-order MAML, Meta-SGD, or MAML with a
differentiable Adam inner loop) and adapt to a new task from a few labelled
rows with ``partial_adapt``.
"""

from ._classifier import MetaClassifier
from ._regressor import MetaRegressor
from ._version import __version__
from .adaptation import partial_adapt, reset_adaptation

__all__ = ["MetaClassifier", "MetaRegressor", "__version__", "partial_adapt", "reset_adaptation"]
