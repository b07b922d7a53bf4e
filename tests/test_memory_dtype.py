"""Bounded workspace and no silent upcasts.

The workspace test uses ``tracemalloc``: NumPy reports its array buffers to
it, so the traced peak of a call minus its output is the temporary memory
the call allocated. On the CuPy stand-in (``XPCNN_TEST_FAKE_CUPY=1``) that
includes the operand copies CuPy's ``matmul`` makes, which the stand-in makes
too; real CuPy's other temporaries (einsum's, its memory pool) are not seen.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from xpcnn import backend, config
from xpcnn import functional as F

ALGOS = [a for a in F.ALGOS if a != "auto"]

# 64 x 16 x 32 x 32 float32 = 4 MiB of input; the unchunked im2col of a 3x3
# conv is 9x that (36 MiB), far over the 6 MiB limit set below.
LIMIT = 6 * 2**20
SLACK = 2**20  # small per-chunk arrays (views' metadata, bias, index arrays)


def _peak_extra(fn, output_bytes):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak - output_bytes, result


@pytest.fixture
def big_batch(rng):
    x = rng.standard_normal((64, 16, 32, 32), dtype=np.float32)
    w = rng.standard_normal((32, 16, 3, 3), dtype=np.float32)
    return x, w


@pytest.mark.parametrize("algo", ALGOS + ["auto"])
@pytest.mark.parametrize("padding,stride", [(1, 1), (0, 2)])
def test_conv2d_workspace_is_bounded(monkeypatch, xp, big_batch, algo, padding, stride):
    x, w = (xp.asarray(a) for a in big_batch)
    unchunked_im2col = x.shape[0] * 16 * 9 * 32 * 32 * 4
    assert unchunked_im2col > 5 * LIMIT  # the test would mean nothing otherwise
    expected = F.conv2d(x, w, padding=padding, stride=stride, algo=algo)
    monkeypatch.setattr(config, "workspace_bytes", LIMIT)
    F.clear_autotune_cache()  # "auto" runs its trial of every candidate inside the measured call
    extra, y = _peak_extra(lambda: F.conv2d(x, w, padding=padding, stride=stride, algo=algo), expected.nbytes)
    assert extra <= LIMIT + SLACK, f"{algo}: {extra / 2**20:.1f} MiB of temporaries, limit {LIMIT / 2**20:.1f} MiB"
    # Chunking changes float32 summation order (einsum's more than BLAS's):
    # compare on the scale of the largest output, as for the backward below.
    y, expected = backend.to_numpy(y), backend.to_numpy(expected)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("padding,stride", [(1, 1), (0, 2)])
def test_conv2d_backward_workspace_is_bounded(monkeypatch, xp, big_batch, rng, padding, stride):
    x, w = (xp.asarray(a) for a in big_batch)
    y = F.conv2d(x, w, padding=padding, stride=stride)
    dy = xp.asarray(rng.standard_normal(y.shape, dtype=np.float32))
    expected = F.conv2d_backward(dy, x, w, padding=padding, stride=stride)
    monkeypatch.setattr(config, "workspace_bytes", LIMIT)
    outputs = x.nbytes + w.nbytes + w.shape[0] * 4
    extra, grads = _peak_extra(lambda: F.conv2d_backward(dy, x, w, padding=padding, stride=stride), outputs)
    assert extra <= LIMIT + SLACK, f"backward: {extra / 2**20:.1f} MiB of temporaries"
    for got, want in zip(map(backend.to_numpy, grads), map(backend.to_numpy, expected)):
        # dw sums 64 * 1024 products: compare on the scale of the largest entry
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def _intermediates(x, w, b, dense_w, labels, algo):
    """Run a small network through every op, forward and backward; yield (name, array)."""
    y = F.conv2d(x, w, b, padding=1, algo=algo)
    yield "conv2d", y
    for name in ("relu", "leaky_relu", "sigmoid", "tanh"):
        yield name, getattr(F, name)(y)
    a = F.relu(y)
    m = F.max_pool2d(a, 2)
    yield "max_pool2d", m
    yield "avg_pool2d", F.avg_pool2d(a, 2, padding=1)
    flat = m.reshape(m.shape[0], -1)
    logits = F.linear(flat, dense_w, b[:10])
    yield "linear", logits
    yield "softmax", F.softmax(logits)
    yield "log_softmax", F.log_softmax(logits)
    yield "cross_entropy", F.cross_entropy(logits, labels)
    dlogits = F.cross_entropy_backward(logits, labels)
    yield "cross_entropy_backward", dlogits
    yield "softmax_backward", F.softmax_backward(dlogits, F.softmax(logits))
    yield "log_softmax_backward", F.log_softmax_backward(dlogits, F.log_softmax(logits))
    dflat, dwl, dbl = F.linear_backward(dlogits, flat, dense_w)
    yield "linear_backward dx", dflat
    yield "linear_backward dw", dwl
    yield "linear_backward db", dbl
    dm = dflat.reshape(m.shape)
    da = F.max_pool2d_backward(dm, a, 2)
    yield "max_pool2d_backward", da
    yield "avg_pool2d_backward", F.avg_pool2d_backward(F.avg_pool2d(a, 2, padding=1), a, 2, padding=1)
    dy = F.relu_backward(da, y)
    yield "relu_backward", dy
    yield "leaky_relu_backward", F.leaky_relu_backward(da, y)
    yield "sigmoid_backward", F.sigmoid_backward(da, F.sigmoid(y))
    yield "tanh_backward", F.tanh_backward(da, F.tanh(y))
    dx, dw, db = F.conv2d_backward(dy, x, w, padding=1)
    yield "conv2d_backward dx", dx
    yield "conv2d_backward dw", dw
    yield "conv2d_backward db", db


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("algo", ALGOS + ["auto"])
def test_every_intermediate_keeps_the_dtype(xp, rng, dtype, algo):
    x = xp.asarray(rng.standard_normal((4, 3, 8, 8)).astype(dtype))
    w = xp.asarray(rng.standard_normal((16, 3, 3, 3)).astype(dtype))
    b = xp.asarray(rng.standard_normal(16).astype(dtype))
    dense_w = xp.asarray(0.1 * rng.standard_normal((10, 16 * 4 * 4)).astype(dtype))
    labels = xp.asarray(np.array([0, 3, 9, 1]))
    seen = 0
    for name, arr in _intermediates(x, w, b, dense_w, labels, algo):
        assert arr.dtype == np.dtype(dtype), f"{name} returned {arr.dtype} for {dtype} input"
        seen += 1
    assert seen == 26
