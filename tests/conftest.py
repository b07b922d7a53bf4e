"""Shared fixtures: every backend test runs once per backend.

The CuPy lane runs wherever CuPy imports and a CUDA device is present, and on
any machine with ``XPCNN_TEST_FAKE_CUPY=1``: then the CPU stand-in
``xpcnn.testing.fakecupy`` is installed as ``cupy`` before xpcnn first looks
for CuPy. Elsewhere the lane's cases are reported as skipped, with the reason.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

# Plots in tests never open a window.
os.environ.setdefault("MPLBACKEND", "Agg")

FAKE_CUPY = os.environ.get("XPCNN_TEST_FAKE_CUPY", "") not in ("", "0")
if FAKE_CUPY:
    from xpcnn.testing import fakecupy

    fakecupy.install()

from xpcnn import backend  # noqa: E402

BACKENDS = ["numpy", "cupy"]

#: LocalCluster arguments for tests: no dashboard, and the scheduler's HTTP
#: routes on a free loopback port. With ``dashboard_address=None`` alone they
#: take port 8787, which a cluster of an earlier test may still hold.
NO_DASHBOARD = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}


def _skip_reason(name: str) -> str | None:
    if name in backend.available():
        return None
    try:
        backend.module(name)
    except backend.BackendUnavailableError as exc:
        return str(exc)
    return f"backend {name} unavailable"


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module of each backend (``numpy``, then ``cupy`` where usable)."""
    reason = _skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return backend.module(request.param)


@pytest.fixture
def rng():
    """A fresh, seeded host generator: tests draw on the host, then move arrays."""
    return np.random.default_rng(12345)


def to_xp(xp, a):
    """Host array -> array of module `xp` (a plain copy for NumPy)."""
    return xp.asarray(a)


def to_host(a):
    return backend.to_numpy(a)


def pytest_collection_modifyitems(config, items):
    """In the stand-in lane, leave out the ``xp`` fixture's NumPy cases: the plain lane runs them."""
    if not FAKE_CUPY:
        return
    keep, numpy_cases = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        (numpy_cases if callspec and callspec.params.get("xp") == "numpy" else keep).append(item)
    if numpy_cases:
        config.hook.pytest_deselected(items=numpy_cases)
        items[:] = keep
