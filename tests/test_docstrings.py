"""Every constructor argument is documented, once, in every estimator's docstring."""

import inspect
import re
import textwrap

import pytest

from sklearn_meta import EpisodicClassifier, MetaClassifier, MetaRegressor
from sklearn_meta.estimators._docstrings import PARAMETERS

ESTIMATORS = (MetaRegressor, MetaClassifier, EpisodicClassifier)


def _documented(cls) -> dict:
    section = cls.__doc__.split("Parameters\n    ----------\n")[1].split("\n    Attributes\n")[0]
    entries = re.findall(r"^    (\w+(?:, \w+)*) : ", section, flags=re.MULTILINE)
    return {name.strip(): section for entry in entries for name in entry.split(",")}


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_every_parameter_is_documented(cls):
    documented = _documented(cls)
    assert set(cls().get_params()) == set(documented)
    assert "{" + "verbose" + "}" not in cls.__doc__  # every placeholder was filled


def test_shared_parameters_read_the_same_in_every_estimator():
    shared = set.intersection(*(set(cls().get_params()) for cls in ESTIMATORS))
    # these differ: what a task is (grouped tasks, episodes), and what the head's shortcuts are
    for name in shared - {"n_support", "n_query", "meta_batch_size", "early_stopping", "validation_fraction",
                          "random_state", "head"}:  # fmt: skip
        assert name in PARAMETERS, name
        first, rest = PARAMETERS[name].split("\n", 1)
        for cls in ESTIMATORS:
            if first.endswith("default=%"):  # a per-estimator default, read from the signature
                default = inspect.signature(cls).parameters[name].default
                first_line = first[:-1] + (f'"{default}"' if isinstance(default, str) else repr(default))
            else:
                first_line = first
            assert textwrap.indent(first_line + "\n" + rest, "    ") in cls.__doc__, (cls.__name__, name)


def test_per_estimator_defaults_are_documented_as_the_signature_has_them():
    assert 'head : str or Head, default="ridge"' in MetaRegressor.__doc__
    assert 'default="tanh"' in MetaRegressor.__doc__ and MetaRegressor().activation == "tanh"
    assert 'default="relu"' in MetaClassifier.__doc__ and MetaClassifier().activation == "relu"
    assert f'head : str or Head, default="{MetaClassifier().head}"' in MetaClassifier.__doc__
    for cls in ESTIMATORS:  # each lists its own shortcuts
        default = inspect.signature(cls).parameters["head"].default
        assert "%shortcuts" not in cls.__doc__ and f'``"{default}"`` (the default)' in cls.__doc__
    assert "hidden_layer_sizes : array-like of int, default=(40, 40)" in MetaRegressor.__doc__
    assert "hidden_layer_sizes : array-like of int, default=()" in MetaClassifier.__doc__
    assert MetaRegressor().hidden_layer_sizes == (40, 40) and MetaClassifier().hidden_layer_sizes == ()
    assert "default=%" not in MetaRegressor.__doc__ + MetaClassifier.__doc__


def test_verbose_documents_what_the_code_does():
    # Bug: the docstring said verbose=1 prints a table; it draws a progress bar.
    assert "1 draws a progress bar" in " ".join(MetaRegressor.__doc__.split())
