"""Sphinx configuration for xldensf (built with warnings as errors: ``sphinx -W``)."""

import sphinx_autosummary_accessors

import xldensf

project = "xldensf"
author = "xldensf developers"
release = version = xldensf.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx_autosummary_accessors",
]
templates_path = ["_templates", sphinx_autosummary_accessors.templates_path]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
autosummary_generate = True
autodoc_typehints = "description"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
nitpicky = False
suppress_warnings = ["mystnb.unknown_mime_type"]
# Notebooks are executed by `make test` (pytest --nbmake) and stored with outputs;
# the docs render those outputs rather than executing them a second time.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
html_theme = "alabaster"
html_static_path = []
# intersphinx reads its inventories offline from docs/_inv (the build must pass `sphinx -W`
# without internet; provenance in docs/_inv/PROVENANCE.txt). Only pint's could be obtained
# offline; xarray and numpy are left out.
intersphinx_mapping = {"pint": ("https://pint.readthedocs.io/en/0.19/", "_inv/pint.inv")}


def _copy_notebooks() -> None:
    """Render the executed notebooks of ``notebooks/`` as the Examples section."""
    import shutil
    from pathlib import Path

    source = Path(__file__).parent.parent / "notebooks"
    target = Path(__file__).parent / "examples"
    target.mkdir(exist_ok=True)
    for notebook in sorted(source.glob("*.ipynb")):
        shutil.copy2(notebook, target / notebook.name)


_copy_notebooks()
