"""The Examples sections of xpcnn's docstrings run and print what they show.

The API reference renders these docstrings, so a wrong example is a wrong
page. Every public module of the package is collected, also the ones added later;
a module whose optional dependency (matplotlib, dask, scikit-learn ...) is
missing is skipped with that reason.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys

import pytest

import xpcnn
from xpcnn import backend, config



def _public(name: str) -> bool:
    """Modules of the API reference: no private part, not the command line."""
    parts = name.split(".")
    return not any(p.startswith("_") for p in parts) and parts[1:2] not in (["cli"], ["commands"])


MODULES = ["xpcnn"] + sorted(
    info.name for info in pkgutil.walk_packages(xpcnn.__path__, "xpcnn.") if _public(info.name)
)


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if exc.name and not exc.name.startswith("xpcnn"):
            pytest.skip(f"{name} needs {exc.name}, which is not installed")
        raise


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Examples may write files, change settings or the default backend: undo it."""
    monkeypatch.chdir(tmp_path)
    settings = dict(vars(config))
    default = backend._default
    cupy = sys.modules.get("cupy")
    yield
    vars(config).update(settings)
    backend._default = default
    if cupy is None:
        sys.modules.pop("cupy", None)
    else:
        sys.modules["cupy"] = cupy


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, isolated):
    module = _import(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, name) if t.examples]
    if not tests:
        pytest.skip(f"{name} has no docstring examples")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
