"""Warnings that point at the user's line, not at ours."""

from __future__ import annotations

import os
import sys
import warnings

import sklearn
import skorch

# Frames in these packages are skipped: a warning raised inside fit() called by
# GridSearchCV points at the user's call of GridSearchCV.fit.
_LIBRARY_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep for module in (sys.modules[__package__], sklearn, skorch)
)


def stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside sklearn-meta, scikit-learn and skorch, seen from the caller."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning]) -> None:
    """:func:`warnings.warn` with the stack level of the user's line."""
    warnings.warn(message, category, stacklevel=stacklevel())
