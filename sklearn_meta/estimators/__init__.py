"""The scikit-learn estimators: meta-training (``fit``), few-shot adaptation and prediction, saving."""

from ._classifier import MetaClassifier
from ._episodic import EpisodicClassifier
from ._regressor import MetaRegressor

__all__ = ["EpisodicClassifier", "MetaClassifier", "MetaRegressor"]

# Public names live at the package's top level: pickles and skops name them sklearn_meta.<Name>.
for _cls in (EpisodicClassifier, MetaClassifier, MetaRegressor):
    _cls.__module__ = "sklearn_meta"
