"""sklearn-meta: gradient-based meta-learning with a scikit-learn API.

:class:`MetaRegressor` and :class:`MetaClassifier` meta-train over a
collection of grouped tasks, :class:`EpisodicClassifier` over N-way K-shot
episodes of new classes; all adapt to a new task from a few labelled rows
with ``partial_adapt``. How they adapt is their ``head``
(:mod:`sklearn_meta.heads`): closed-form Bayesian ridge, ridge-classifier and
prototype heads, or inner gradient steps (MAML, first-order MAML, Meta-SGD,
ANIL, Adam and Newton inner loops).
"""

import importlib as _importlib
import sys as _sys

from ._version import __version__
from .adaptation import partial_adapt, reset_adaptation
from .estimators import EpisodicClassifier, MetaClassifier, MetaRegressor
from .estimators._compat import LEGACY_MODULES as _LEGACY_MODULES

__all__ = ["EpisodicClassifier", "MetaClassifier", "MetaRegressor", "__version__", "partial_adapt", "reset_adaptation"]

# Pickles written by sklearn-meta 0.2 name the modules its classes lived in then.
for _old, _new in _LEGACY_MODULES.items():
    _sys.modules.setdefault(_old, _importlib.import_module(_new))
