"""Shared helpers for the asv benchmarks: backend setup and device synchronisation.

A benchmark parametrised over ``backend`` raises ``NotImplementedError`` in
``setup`` where that backend cannot run (asv reports it as skipped), and
every timed method on CuPy ends with a device synchronisation, since CuPy
calls return as soon as the kernels are queued.
"""

import numpy as np

from xpcnn import backend

BACKENDS = ["numpy", "cupy"]

# (N, C, H, W, O, K, stride, padding): the tutorial's chelsea layers, then
# CIFAR- and ImageNet-like layers.
CONV_SHAPES = {
    "chelsea1": (1, 1, 300, 451, 2, 3, 1, 0),
    "chelsea2": (1, 2, 149, 224, 3, 5, 1, 0),
    "cifar_in": (32, 3, 32, 32, 32, 3, 1, 0),
    "cifar_mid": (32, 32, 32, 32, 64, 3, 1, 1),
    "resnet": (16, 64, 56, 56, 64, 3, 1, 1),
    "resnet_s2": (16, 64, 56, 56, 128, 3, 2, 1),
}


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
