"""Project rules that are checked, not only hoped for.

(a) Compute code (functional, layers, model, losses, optim, tutorial) never
    names numpy or cupy: it takes ``xp = get_array_module(x)``.
(b) ``import xpcnn`` (and xpcnn.functional, xpcnn.data) imports neither CuPy
    nor any plotting, image, ML, progress-bar or Dask library.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "xpcnn"

#: The functional package must exist and hold these modules.
FUNCTIONAL_MODULES = ["__init__.py", "_utils.py", "activations.py", "conv.py", "linear.py", "loss.py", "pooling.py"]
#: Compute modules that may not exist yet; each one is checked once it does.
OTHER_COMPUTE_MODULES = ["layers.py", "model.py", "losses.py", "optim.py", "tutorial.py"]

FORBIDDEN_MODULES = {"numpy", "cupy"}
FORBIDDEN_NAMES = {"np", "numpy", "cp", "cupy"}


def backend_violations(source: str, filename: str = "<source>") -> list[str]:
    """Every place `source` imports numpy/cupy or uses a name np/numpy/cp/cupy as a module."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in FORBIDDEN_NAMES:
                found.append(f"{where}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call):
            # __import__("numpy"), importlib.import_module("cupy")
            fn = node.func
            fname = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if fname in ("__import__", "import_module") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and str(arg.value).split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{where}: {fname}({arg.value!r})")
    return found


def compute_files() -> list[Path]:
    files = sorted((PKG / "functional").rglob("*.py"))
    files += [PKG / name for name in OTHER_COMPUTE_MODULES if (PKG / name).exists()]
    return files


def test_functional_package_is_present():
    missing = [m for m in FUNCTIONAL_MODULES if not (PKG / "functional" / m).is_file()]
    assert not missing, f"xpcnn/functional is missing {missing}"


def test_compute_code_never_names_numpy_or_cupy():
    files = compute_files()
    functional = [f for f in files if f.relative_to(PKG).parts[0] == "functional"]
    assert len(functional) >= len(FUNCTIONAL_MODULES)
    problems = []
    for path in files:
        problems += backend_violations(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not problems, "compute code must use xp = get_array_module(x):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "snippet",
    [
        "import numpy",
        "import numpy as np",
        "import numpy.linalg",
        "from numpy import zeros",
        "from numpy.lib import stride_tricks",
        "import cupy as cp",
        "from cupy import cuda",
        "def f():\n    import numpy as xp\n    return xp",
        "def f(x):\n    return np.zeros(3)",
        "y = numpy.float32",
        "def f():\n    return cp.asarray(1)",
        "def f():\n    return cupy.cuda",
        "m = __import__('numpy')",
        "import importlib\nm = importlib.import_module('cupy')",
    ],
)
def test_checker_catches_violations(snippet):
    assert backend_violations(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "from ..backend import get_array_module\nxp = get_array_module(x)\ny = xp.zeros(3)",
        "from . import numpy_helpers",  # relative import of a module whose name merely starts with numpy
        "nprocs = 2\nx = nprocs.bit_length()",
        "def f(xp):\n    return xp.float32",
    ],
)
def test_checker_allows_xp_code(snippet):
    assert not backend_violations(snippet)


def test_import_xpcnn_is_light():
    code = (
        "import importlib.util, sys\n"
        "import xpcnn\n"
        "for name in ('xpcnn.functional', 'xpcnn.data'):\n"
        "    if importlib.util.find_spec(name) is not None:\n"
        "        importlib.import_module(name)\n"
        "assert 'xpcnn.functional' in sys.modules\n"
        "bad = [m for m in ('cupy', 'matplotlib', 'skimage', 'tqdm', 'sklearn', 'dask', 'distributed', 'zarr') if m in sys.modules]\n"
        "print(bad)\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("XPCNN_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
