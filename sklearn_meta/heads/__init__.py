"""Heads: how a meta-learned network adapts to a new task from its labelled rows.

**The rule.** The estimator's ``module`` (or the built-in MLP's hidden layers)
is the *body*: it maps rows to features, of any width. The *head* owns the
network's last layer, a linear map from those features to the outputs, and
decides how the network adapts to a task:

- :class:`GradientHead`: inner gradient steps (MAML, first-order MAML,
  Meta-SGD, ANIL, Adam or Newton inner loops) on the parameters it selects;
- :class:`BayesianRidgeHead`: the last layer as Bayesian linear regression on
  the body's features, with a meta-learned prior (regression; predictive
  standard deviations);
- :class:`RidgeClassifierHead`: ridge regression of one-hot labels, scaled
  into logits (classification);
- :class:`PrototypeHead`: class means of the support features
  (classification);
- :class:`BayesianLogisticHead`: the last layer as Bayesian softmax
  regression with a meta-learned prior, by a Laplace approximation
  (classification; probabilities integrated over the posterior).

Heads are parameter objects, as scikit-learn's kernels are: pass one as
``head=`` and ``get_params``, ``set_params(head__inner_lr=...)``, ``clone`` and
grid searches over ``head__<argument>`` work. The estimators also take the
strings ``"gradient"``, ``"ridge"``, ``"prototypes"`` and ``"logistic"`` as shortcuts for the
heads built with their defaults. :class:`Head` is the base class and the
protocol for writing your own.
"""

from ._base import FunctionalNetwork, Head, HeadedNetwork, masked_mean, takes_masks
from ._classification import PrototypeHead, PrototypeState, RidgeClassifierHead, RidgeClassifierState
from ._gradient import GradientHead
from ._logistic import BayesianLogisticHead, LogisticState
from ._ridge import BayesianRidgeHead, RidgeState

__all__ = [
    "BayesianLogisticHead",
    "BayesianRidgeHead",
    "FunctionalNetwork",
    "GradientHead",
    "Head",
    "HeadedNetwork",
    "LogisticState",
    "PrototypeHead",
    "PrototypeState",
    "RidgeClassifierHead",
    "RidgeClassifierState",
    "RidgeState",
    "masked_mean",
    "takes_masks",
]

# Public names live here: pickles, skops and the docs name them sklearn_meta.heads.<Name>.
for _cls in (BayesianLogisticHead, BayesianRidgeHead, FunctionalNetwork, GradientHead, Head, HeadedNetwork,
             LogisticState, PrototypeHead, PrototypeState, RidgeClassifierHead, RidgeClassifierState,
             RidgeState):  # fmt: skip
    _cls.__module__ = __name__
