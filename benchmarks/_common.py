"""Shared helpers for the asv benchmarks: backend setup and device synchronisation.

A benchmark parametrised over ``backend`` raises ``NotImplementedError`` in
``setup`` where that backend cannot run (asv reports it as skipped), and
every timed method on CuPy ends with a device synchronisation, since CuPy
calls return as soon as the kernels are queued.
"""

import numpy as np

from xpcnn import backend
from xpcnn.commands.bench import SHAPES  # noqa: F401 -- (N, C, H, W, O, K, stride, padding), as in docs/guide/performance.md

BACKENDS = ["numpy", "cupy"]


def xp_or_skip(name):
    """The array module of backend `name`; NotImplementedError (asv: skipped) if unusable."""
    if name not in backend.available():
        raise NotImplementedError(f"backend {name} unavailable here")
    return backend.module(name)


def random(xp, shape, dtype="float32", seed=0):
    """Random normal data drawn on the host (same numbers on every backend)."""
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return xp.asarray(a)


def sync(xp):
    backend.synchronize(xp)
