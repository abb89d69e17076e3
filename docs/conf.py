"""Sphinx configuration: pydata-sphinx-theme, MyST pages, notebooks
rendered as they are (the test suite executes them), and an API reference
from the numpy-style docstrings. ``make docs`` builds it with warnings as
errors."""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))

import rdask  # noqa: E402

project = "rdask"
author = "the rdask developers"
copyright = "2026, the rdask developers"  # noqa: A001 - Sphinx's name
version = release = rdask.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_copybutton",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the notebooks run in the test suite (tests/test_notebooks.py)

autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "xarray": ("https://docs.xarray.dev/en/stable/", None),
    "dask": ("https://docs.dask.org/en/stable/", None),
    "rasterio": ("https://rasterio.readthedocs.io/en/stable/", None),
}
# Offline builds (CI has no internet beyond package registries): no inventories.
if os.environ.get("RDASK_DOCS_OFFLINE", "1") == "1":
    intersphinx_mapping = {}

html_theme = "pydata_sphinx_theme"
html_title = f"rdask {version}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
}


def _notebook_links(app, docname, source):
    """notebooks/README.md links the notebooks as GitHub shows them
    (``[01-quickstart](01-quickstart.ipynb)``); Sphinx resolves a link's path
    through the docs/notebooks symlink to one outside the site, so there
    they become document references."""
    if docname == "notebooks/README":
        source[0] = re.sub(r"\[([^\]]+)\]\(([\w-]+)\.ipynb\)", r"{doc}`\1 <\2>`", source[0])


def setup(app):
    app.connect("source-read", _notebook_links)
