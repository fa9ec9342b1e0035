"""Every constructor argument is documented, once, in both estimators' docstrings."""

import re
import textwrap

import pytest

from sklearn_meta import MetaClassifier, MetaRegressor
from sklearn_meta._docstrings import PARAMETERS


def _documented(cls) -> dict:
    section = cls.__doc__.split("Parameters\n    ----------\n")[1].split("\n    Attributes\n")[0]
    entries = re.findall(r"^    (\w+(?:, \w+)*) : ", section, flags=re.MULTILINE)
    return {name.strip(): section for entry in entries for name in entry.split(",")}


@pytest.mark.parametrize("cls", [MetaRegressor, MetaClassifier])
def test_every_parameter_is_documented(cls):
    documented = _documented(cls)
    assert set(cls().get_params()) == set(documented)
    assert "{" + "verbose" + "}" not in cls.__doc__  # every placeholder was filled


def test_shared_parameters_read_the_same_in_both_estimators():
    shared = set(MetaRegressor().get_params()) & set(MetaClassifier().get_params())
    for name in shared - {"n_support", "n_query"}:  # these two differ: episodes
        assert name in PARAMETERS, name
        text = textwrap.indent(PARAMETERS[name], "    ")
        assert text in MetaRegressor.__doc__ and text in MetaClassifier.__doc__, name


def test_verbose_documents_what_the_code_does():
    # Bug: the docstring said verbose=1 prints a table; it draws a progress bar.
    assert "1 draws a progress bar" in " ".join(MetaRegressor.__doc__.split())
