"""The estimators' ``head`` argument: string shortcuts, head objects, and the deprecated gradient arguments.

Until 0.3 the inner loop was set by seven estimator arguments that only
``head="gradient"`` used. They are now arguments of
:class:`~sklearn_meta.heads.GradientHead`; for one release the old spelling
still works, with a :class:`FutureWarning` naming the new one (scikit-learn's
deprecation convention: the argument's default is ``"deprecated"``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from sklearn.base import clone
from sklearn.utils._param_validation import Hidden, StrOptions

from .._warnings import warn
from ..heads import GradientHead, Head

__all__ = [
    "DEPRECATED",
    "GRADIENT_ARGUMENTS",
    "deprecated_constraints",
    "is_deprecated",
    "require",
    "resolve_head",
    "warn_deprecated",
]

DEPRECATED = "deprecated"

#: Estimator arguments that moved to GradientHead in 0.3 (same names there).
GRADIENT_ARGUMENTS = (
    "inner_optimizer",
    "inner_lr",
    "inner_steps",
    "adapt_steps",
    "first_order",
    "recompute_inner",
    "adapt_params",
)


def is_deprecated(value) -> bool:
    """Whether an argument holds the ``"deprecated"`` placeholder (its default), i.e. was not set."""
    return isinstance(value, str) and value == DEPRECATED


def deprecated_constraints(constraints: dict, names) -> dict:
    """The constraints of ``names`` from ``constraints``, each also allowing the hidden ``"deprecated"``."""
    return {name: [*constraints[name], Hidden(StrOptions({DEPRECATED}))] for name in names}


def warn_deprecated(names, instead: str) -> None:
    """scikit-learn's deprecation warning for estimator arguments."""
    listed = ", ".join(f"`{name}`" for name in names)
    verb = "was" if len(names) == 1 else "were"
    warn(f"{listed} {verb} deprecated in sklearn-meta 0.3 and will be removed in 0.4. {instead}", FutureWarning)


def _call(kwargs: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in kwargs.items())


def resolve_head(estimator, shortcuts: dict[str, Callable[[], Head]], task_type: str) -> Head:
    """A fresh, validated copy of the head that the estimator's arguments select.

    ``shortcuts`` maps the estimator's string values of ``head`` to the
    heads they build; ``task_type`` is ``"regression"`` or
    ``"classification"``.
    """
    old = {
        name: getattr(estimator, name)
        for name in GRADIENT_ARGUMENTS
        if not is_deprecated(getattr(estimator, name, DEPRECATED))  # a new estimator never had them
    }
    spec = estimator.head
    if isinstance(spec, str):
        head = shortcuts[spec]()
        if old and isinstance(head, GradientHead):
            warn_deprecated(list(old), f"Use head=GradientHead({_call(old)}) instead.")
            head.set_params(**copy.deepcopy(old))  # the fitted head shares nothing with the arguments
        elif old:
            warn_deprecated(
                list(old),
                f"They are arguments of GradientHead, and head={spec!r} fits the last layer in closed form, "
                "so they are not used. Remove them.",
            )
    else:
        if old:
            listed = f"{', '.join(old)} {'is' if len(old) == 1 else 'are'} set on the estimator"
            if isinstance(spec, GradientHead):
                instead = clone(spec).set_params(**copy.deepcopy(old))
                raise ValueError(
                    f"{listed} and head is a GradientHead object: set {'it' if len(old) == 1 else 'them'} on the "
                    f"head instead, head={instead!r} (the estimator's inner-loop arguments are deprecated)."
                )
            raise ValueError(
                f"{listed}, but they are arguments of GradientHead, which head={spec!r} is not: remove them."
            )
        head = clone(spec, safe=False)  # the fitted head_ never changes with the user's object
    types = getattr(head, "task_types", ("regression", "classification"))
    if task_type not in types:
        raise ValueError(
            f"{type(estimator).__name__} needs a {task_type} head, but {type(head).__name__} is for "
            f"{' and '.join(types)} (its task_types)."
        )
    if isinstance(head, Head):
        head._validate_params()  # scikit-learn's parameter validation, as an estimator's fit does
    return head


def require(head, method: str, what: str, offer: str) -> None:
    """Refuse ``what`` (a call or an argument) for a head without the optional ``method`` it needs."""
    if not callable(getattr(head, method, None)):
        raise ValueError(f"{what} needs a head with {method}() ({offer}); {type(head).__name__} has none.")
