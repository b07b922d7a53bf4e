"""The stand-in against the real CuPy: its names and keywords, and those xpcnn uses.

Real CuPy imports without a GPU (only allocating fails), so this runs
wherever it is installed: ``pip install cupy-cuda12x`` (a 140 MB wheel, not
in the ``test`` extra), then ``python -m pytest tests/test_fakecupy_vs_cupy.py``.
Elsewhere it skips, saying so. It runs in a subprocess, because the test
session may have the stand-in installed as ``cupy``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import ast, inspect, json, sys, types
from pathlib import Path

try:
    import cupy
except Exception as exc:
    print(json.dumps({"skip": f"real CuPy does not import here ({type(exc).__name__}: {exc})"}))
    sys.exit()
from xpcnn.testing import fakecupy as fc

OWN = {"install", "uninstall", "installed", "counts", "Counts"}  # the stand-in's own API
IMPORTED = {"annotations", "contextlib", "sys", "threading", "types", "Any", "Iterator"}
problems = []


def public(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


def params(obj):
    """Parameter names of a callable, None if it takes any keyword, from its docstring if need be."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        line = (obj.__doc__ or "").split("\n")[0].replace("\\*", "*")
        head, _, rest = line.partition("(")
        if not rest:
            return "unknown"
        tree = ast.parse(f"def f({rest.rpartition(')')[0]}): pass").body[0].args
        if tree.kwarg:
            return None
        return {a.arg for a in tree.args + tree.kwonlyargs} - {"self"}
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY)} - {"self"}


pairs = [("cupy", fc, cupy), ("cupy.ndarray", fc.ndarray, cupy.ndarray),
         ("cupy.cuda", fc.cuda, cupy.cuda), ("cupy.cuda.runtime", fc.cuda.runtime, cupy.cuda.runtime),
         ("cupy.cuda.Device", fc.cuda.Device, cupy.cuda.Device), ("cupy.cuda.Stream", fc.cuda.Stream, cupy.cuda.Stream),
         ("cupy.random", fc.random, cupy.random), ("cupy.random.Generator", fc.random.Generator, cupy.random.Generator),
         ("cupy.lib", fc.lib, cupy.lib), ("cupy.lib.stride_tricks", fc.lib.stride_tricks, cupy.lib.stride_tricks)]
for where, mine, real in pairs:
    for name in sorted(public(mine) - OWN - IMPORTED - public(real)):
        if not isinstance(getattr(mine, name), types.ModuleType):
            problems.append(f"{where}.{name}: in the stand-in, not in CuPy {cupy.__version__}")

# Hand-written functions and methods: their keywords must be CuPy's.
hand = [("cupy", fc, cupy, ["array", "asarray", "ascontiguousarray", "asnumpy", "get_array_module", "matmul"]),
        ("cupy.ndarray", fc.ndarray, cupy.ndarray, ["get", "item", "tolist", "set", "astype"]),
        ("cupy.random.Generator", fc.random.Generator, cupy.random.Generator,
         ["random", "standard_normal", "uniform", "integers"]),
        ("cupy.lib.stride_tricks", fc.lib.stride_tricks, cupy.lib.stride_tricks, ["as_strided", "sliding_window_view"])]
for where, mine, real, names in hand:
    for name in names:
        got, want = params(getattr(mine, name)), params(getattr(real, name))
        if want is not None and (got is None or want == "unknown" or got - want):
            problems.append(f"{where}.{name}: the stand-in takes {sorted(got or ['**kwargs'])}, CuPy {want}")

# Every xp.* name xpcnn calls exists in CuPy and takes the keywords xpcnn passes;
# so do the ndarray methods it calls with keywords.
UFUNC = {"out", "dtype", "casting"}
methods = public(cupy.ndarray)
checked = []
for path in sorted(Path(sys.argv[1], "xpcnn").rglob("*.py")):
    if "testing" in path.parts:
        continue
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        chain, root = [], node
        while isinstance(root, ast.Attribute):
            chain.insert(0, root.attr)
            root = root.value
        if isinstance(root, ast.Name) and root.id == "xp" and not chain[0].startswith("__"):
            obj = cupy
            for part in chain:
                obj = getattr(obj, part, None)
            if obj is None:
                problems.append(f"{path.name}:{node.lineno}: xp.{'.'.join(chain)} is not in CuPy")
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        kws = {k.arg for k in node.keywords if k.arg}
        if not kws:
            continue
        chain, root = [], node.func
        while isinstance(root, ast.Attribute):
            chain.insert(0, root.attr)
            root = root.value
        if isinstance(root, ast.Name) and root.id == "xp":
            obj, where = cupy, "xp." + ".".join(chain)
            for part in chain:
                obj = getattr(obj, part, None)
            if obj is None:
                continue  # reported above
        elif chain[-1] in methods and not (isinstance(root, ast.Name) and root.id in ("np", "numpy", "backend", "F")):
            obj, where = getattr(cupy.ndarray, chain[-1]), f"ndarray.{chain[-1]}"
        else:
            continue
        checked.append(where)
        accepted = UFUNC if isinstance(obj, cupy.ufunc) else params(obj)
        if accepted == "unknown" or (accepted is not None and kws - accepted):
            problems.append(f"{path.name}:{node.lineno}: {where}(... {sorted(kws)}): CuPy takes {accepted}")
print(json.dumps({"problems": problems, "checked": sorted(set(checked))}))
'''


def test_stand_in_names_and_xpcnn_keywords_exist_in_real_cupy():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"] + "; run: pip install cupy-cuda12x (imports without a GPU)")
    assert result["problems"] == [], "\n".join(result["problems"])
    assert {"xp.matmul", "xp.einsum", "ndarray.astype"} <= set(result["checked"])  # the scan found calls
