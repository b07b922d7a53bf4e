"""Fuzz test of Sequential.load: random mutations of valid model files (bytes, zip
fields and declared sizes, JSON values/types/nesting, .npy headers), each loaded
in a worker process under CPU-time and address-space limits (see
fuzz_model_files.py). Every case must give a model that predicts or a
ValueError naming the file.

``XPCNN_FUZZ_CASES=20000 python -m pytest tests/test_model_fuzz.py`` runs a
longer campaign; so does ``python tests/fuzz_model_files.py --cases 20000``.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import fuzz_model_files  # noqa: E402

resource = pytest.importorskip("resource", reason="the fuzz workers' limits need the resource module (POSIX)")

CASES = int(os.environ.get("XPCNN_FUZZ_CASES", "400"))


def test_mutated_model_files_load_or_raise_value_error_within_limits():
    report = fuzz_model_files.run(CASES, workers=2, seed=int(os.environ.get("XPCNN_FUZZ_SEED", "0")))
    failures = "\n".join(f"case {f['index']} ({f['what']}): {f['failure']}" for f in report["failures"][:20])
    assert not report["failures"], f"{len(report['failures'])} of {CASES} cases failed:\n{failures}"
    assert report["cases"] == CASES
    # The mutations reach both outcomes: files that still load and files that are refused.
    assert report["outcomes"].get("loaded", 0) > 0 and report["outcomes"].get("ValueError", 0) > 0
