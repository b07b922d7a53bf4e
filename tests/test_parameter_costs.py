"""Work that grows with the data, not with a parameter: huge strides in conv2d
(its stride phases) cost what a small stride costs for the same output, and
pooling windows far larger than the input cost what the input does."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate

from xpcnn import functional as F
from xpcnn.functional import conv as conv_module
from xpcnn.functional import pooling as pooling_module


def test_stride_phases_do_not_grow_with_the_stride():
    # One output position either way: only the phases the 3x3 taps read are kept.
    small = conv_module._Phases(F.conv_geometry((1, 1, 5, 5), (1, 1, 3, 3), stride=7))
    large = conv_module._Phases(F.conv_geometry((1, 1, 5, 5), (1, 1, 3, 3), stride=1000))
    assert large.size == small.size
    assert len(large.fills) == len(small.fills) <= 9


@pytest.mark.parametrize("algo", ["gemm", "shift", "rows", "auto"])
def test_huge_stride_gives_the_first_window(rng, algo):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    y = F.conv2d(x, w, stride=100_000, algo=algo)
    ref = np.array([[correlate(x[n], w[o], mode="valid")[0, 0, 0] for o in range(4)] for n in range(2)])
    np.testing.assert_allclose(y[:, :, 0, 0], ref, rtol=1e-5, atol=1e-5)
    assert y.shape == (2, 4, 1, 1)


def test_huge_stride_backward_matches_a_small_stride_with_the_same_output(rng):
    # Stride 4 and stride 100000 give one output row and column here: same gradients.
    x = rng.standard_normal((1, 2, 4, 4))
    w = rng.standard_normal((3, 2, 2, 2))
    dy = rng.standard_normal((1, 3, 1, 1))
    for a, b in zip(F.conv2d_backward(dy, x, w, stride=(3, 100_000)), F.conv2d_backward(dy, x, w, stride=3)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


# ---------------------------------------------------------------- pooling: kernel and padding
def _pool_ref(x, k, s, p, op):
    """Naive float64 pooling with explicit padding, one output position at a time."""
    n, c, h, w = x.shape
    fill = -np.inf if op == "max" else 0.0
    xp_ = np.full((n, c, h + 2 * p, w + 2 * p), fill)
    xp_[:, :, p : p + h, p : p + w] = x
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    y = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp_[:, :, i * s : i * s + k, j * s : j * s + k]
            y[:, :, i, j] = win.max(axis=(2, 3)) if op == "max" else win.sum(axis=(2, 3)) / (k * k)
    return y


def _pool_grad_ref(x, dy, k, s, p, op):
    n, c, h, w = x.shape
    fill = -np.inf if op == "max" else 0.0
    xp_ = np.full((n, c, h + 2 * p, w + 2 * p), fill)
    xp_[:, :, p : p + h, p : p + w] = x
    g = np.zeros_like(xp_)
    for a in range(n):
        for b in range(c):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    win = xp_[a, b, i * s : i * s + k, j * s : j * s + k]
                    if op == "max":
                        r, q = np.unravel_index(np.argmax(win), win.shape)  # first maximum, row-major
                        g[a, b, i * s + r, j * s + q] += dy[a, b, i, j]
                    else:
                        g[a, b, i * s : i * s + k, j * s : j * s + k] += dy[a, b, i, j] / (k * k)
    return g[:, :, p : p + h, p : p + w]


@pytest.mark.parametrize("op", ["max", "avg"])
def test_pooling_matches_a_naive_reference_on_random_geometries(rng, op):
    fwd, bwd = (F.max_pool2d, F.max_pool2d_backward) if op == "max" else (F.avg_pool2d, F.avg_pool2d_backward)
    for _ in range(60):
        k = int(rng.integers(1, 10))
        p = int(rng.integers(0, k // 2 + 1))
        s = int(rng.integers(1, 6))
        h, w = (int(rng.integers(max(1, k - 2 * p), k + 6)) for _ in range(2))
        x = rng.standard_normal((2, 2, h, w))
        y = fwd(x, k, s, p)
        np.testing.assert_allclose(y, _pool_ref(x, k, s, p, op), rtol=1e-12, atol=1e-12)
        dy = rng.standard_normal(y.shape)
        dx = bwd(dy, x, k, s, p)
        np.testing.assert_allclose(dx, _pool_grad_ref(x, dy, k, s, p, op), rtol=1e-12, atol=1e-12,
                                   err_msg=f"k={k} s={s} p={p} h={h} w={w}")


@pytest.mark.parametrize("stride", [None, 1, 3])
def test_huge_pooling_window_reads_only_what_reaches_the_input(rng, stride):
    # A window of 10**6 with padding 5 * 10**5 over an 8x8 input: every window
    # holds the whole input. The old code padded to 10**6 x 10**6 and looped 10**12 times.
    x = rng.standard_normal((2, 3, 8, 8))
    k, p = 10**6, 5 * 10**5
    g = pooling_module.pool_geometry(x, k, stride, p)
    assert (g.I1 - g.I0) * (g.J1 - g.J0) <= 16 * 16 and g.PH <= 8
    y = F.max_pool2d(x, k, stride, p)
    assert y.shape[2:] == (g.OH, g.OW)
    np.testing.assert_array_equal(y, np.broadcast_to(x.max(axis=(2, 3))[:, :, None, None], y.shape))
    a = F.avg_pool2d(x, k, stride, p)
    np.testing.assert_allclose(a, np.broadcast_to(x.sum(axis=(2, 3))[:, :, None, None] / k**2, a.shape), rtol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx = F.max_pool2d_backward(dy, x, k, stride, p)
    assert np.isclose(dx.sum(), dy.sum()) and np.count_nonzero(dx) <= 2 * 3
    dxa = F.avg_pool2d_backward(dy, x, k, stride, p)
    np.testing.assert_allclose(dxa, np.broadcast_to(dy.sum(axis=(2, 3))[:, :, None, None] / k**2, x.shape), rtol=1e-12)
