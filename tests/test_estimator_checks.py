"""scikit-learn's own estimator checks."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_meta import MetaClassifier, MetaRegressor

# Small and quick (30 updates), with a meta-learning rate high enough for the checks that require
# a decent fit of a single task (check_regressors_train, check_classifiers_train).
ESTIMATORS = [
    MetaRegressor(hidden_layer_sizes=(16,), max_iter=30, meta_lr=3e-2, random_state=0),
    MetaRegressor(
        hidden_layer_sizes=(16,), meta_objective="marginal_likelihood", max_iter=30, meta_lr=3e-2, random_state=0
    ),
    # the classifier's defaults: no body and the Bayesian logistic head
    MetaClassifier(max_iter=30, meta_lr=3e-2, random_state=0),
]


def _expected_failures(estimator):
    # Not strict: whether the rounding differences exceed the tolerance depends on the values.
    failures = {
        "check_methods_subset_invariance": (
            "The network computes in float32: a matrix product over a batch of 20 rows and over "
            "subsets of it round differently, by about 2e-7 to 4e-7, above the check's 1e-7 tolerance."
        )
    }
    if getattr(estimator, "meta_objective", None) == "marginal_likelihood":
        failures["check_regressors_train"] = (
            "The check fits one task (no groups) and scores the unadapted model. The marginal likelihood of "
            "a single group does not identify the prior mean, since the group's own weights can explain its "
            "rows, as a mixed model's fixed effects are not identified from one group: adapted with "
            "partial_adapt the model fits, unadapted it need not."
        )
    return failures


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)
