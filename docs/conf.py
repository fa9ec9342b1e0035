"""Sphinx configuration: numpydoc API reference, MyST user guide, sphinx-gallery examples."""

import os
import sys
from pathlib import Path

import sklearn_meta

sys.path.insert(0, str(Path(__file__).resolve().parent))

project = "sklearn-meta"
author = "sklearn-meta developers"
copyright = "2026, sklearn-meta developers"
version = release = sklearn_meta.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip"]
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]  # links from the Markdown guide to example sources on GitHub

autosummary_generate = True
# Our own methods, also those inherited from our base class; scikit-learn's generic ones
# (get_params, set_*_request, ...) are documented by scikit-learn.
autodoc_default_options = {
    "members": True,
    "inherited-members": "BaseEstimator,RegressorMixin,ClassifierMixin",
    "exclude-members": (
        "set_fit_request,set_score_request,set_predict_request,set_predict_proba_request,"
        "get_metadata_routing,set_params,get_params"
    ),
}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# Examples run in full when the gallery is built; SKLEARN_META_EXAMPLE_FAST=1 gives a quick smoke build.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r".*\.py$",
    "ignore_pattern": r"(__init__|_output)",
    "plot_gallery": "True",
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
}
os.environ.setdefault("MPLBACKEND", "Agg")

html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-meta {release}"
html_theme_options = {"navigation_with_keys": False}


def _skip_torch_members(app, what, name, obj, skip, options):
    """Members a class inherits from torch (ConvNet's nn.Module methods) are documented by torch."""
    return True if (getattr(obj, "__module__", None) or "").startswith("torch.") else None


def setup(app):
    app.connect("autodoc-skip-member", _skip_torch_members)
