"""Sphinx configuration: numpydoc API reference, MyST Markdown guide, executed gallery.

Build (offline, warnings are errors)::

    pip install ".[docs]"
    sphinx-build -W -b html docs docs/_build/html
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The checkout's xpcnn, not an installed copy: the docs describe this tree.
sys.path.insert(0, str(ROOT))

# The gallery runs on the CPU whatever the environment says; plots go to files.
os.environ.pop("XPCNN_BACKEND", None)
os.environ.setdefault("MPLBACKEND", "Agg")

import xpcnn  # noqa: E402
from sphinx_gallery.sorting import ExplicitOrder  # noqa: E402

project = "xpcnn"
author = "the xpcnn developers"
copyright = "the xpcnn developers"
version = release = xpcnn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb"]
templates_path = ["_templates"]

# -- API reference -----------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's __all__ is its public API
autodoc_typehints = "none"  # the numpydoc sections already give the types
numpydoc_show_class_members = False  # the class template lists them instead
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- Markdown (the guide pages read well on GitHub too) ----------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links, as on GitHub

# -- Gallery: examples/plot_*.py, run at every build -------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    # From the tutorial to training and beyond; scripts not listed come last.
    "within_subsection_order": ExplicitOrder([
        "plot_tutorial_chelsea.py",
        "plot_conv_algorithms.py",
        "plot_train_digits.py",
        "plot_sklearn_grid_search.py",
        "plot_dask_predict.py",
        "*",
    ]),
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reference_url": {"xpcnn": None},
    "doc_module": ("xpcnn",),
    "backreferences_dir": "api/generated/backreferences",
    "show_memory": False,
}

# -- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"xpcnn {release}"
html_static_path = []
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "secondary_sidebar_items": ["page-toc"],
    "show_prev_next": True,
}
html_show_sourcelink = False


def _skip_member(app, what, name, obj, skip, options):
    """Leave out what scikit-learn adds to every estimator class.

    Its ``set_{method}_request`` methods are made per class (metadata
    routing) and their docstrings point into scikit-learn's own docs.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
