"""Few-shot adaptation of estimators and of pipelines that end in one.

:class:`~sklearn.pipeline.Pipeline` has no ``partial_adapt``; these functions
run the support rows through the fitted transformers (without refitting them)
and adapt the final meta-estimator, so a fitted pipeline adapts in one call.
"""

from __future__ import annotations

from sklearn.pipeline import Pipeline

__all__ = ["partial_adapt", "reset_adaptation"]


def _split(estimator):
    """The fitted transformer steps before the final estimator, and that estimator."""
    if isinstance(estimator, Pipeline):
        transformers, meta_estimator = _split(estimator.steps[-1][1])
        before = [step for _, step in estimator.steps[:-1] if step not in (None, "passthrough")]
        return before + transformers, meta_estimator
    if not hasattr(estimator, "partial_adapt"):
        raise TypeError(
            f"{type(estimator).__name__} cannot adapt: it is not a meta-estimator or a Pipeline ending in one."
        )
    return [], estimator


def partial_adapt(estimator, X, y):
    """Adapt a meta-estimator, or a fitted Pipeline ending in one, to a new task.

    For a pipeline, ``X`` goes through the fitted transformers' ``transform``
    (they are not refitted) and the final step's ``partial_adapt`` gets the
    result.

    Parameters
    ----------
    estimator : MetaRegressor, MetaClassifier or Pipeline
        A fitted meta-estimator, or a fitted pipeline whose last step is one.
    X : array-like of shape (n_samples, n_features)
        Support rows of the new task, as the pipeline takes them.
    y : array-like of shape (n_samples,)
        Their targets.

    Returns
    -------
    estimator : object
        The same object, adapted.

    Examples
    --------
    >>> import sklearn
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_meta import MetaRegressor, partial_adapt
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     pipe = make_pipeline(StandardScaler(), MetaRegressor(max_iter=5, random_state=0))
    ...     pipe = pipe.fit(X, y, groups=groups)
    >>> X_new, y_new, _ = make_sinusoid_tasks(n_tasks=1, random_state=1)
    >>> partial_adapt(pipe, X_new[:10], y_new[:10]).predict(X_new[10:]).shape
    (10,)
    """
    transformers, meta_estimator = _split(estimator)
    for step in transformers:
        X = step.transform(X)
    meta_estimator.partial_adapt(X, y)
    return estimator


def reset_adaptation(estimator):
    """Return a meta-estimator, or a Pipeline ending in one, to its meta-learned state.

    Parameters
    ----------
    estimator : MetaRegressor, MetaClassifier or Pipeline

    Returns
    -------
    estimator : object
        The same object.
    """
    _split(estimator)[1].reset_adaptation()
    return estimator
