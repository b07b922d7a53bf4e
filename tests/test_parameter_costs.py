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


# ---------------------------------------------------------------- conv: padding with dilation
def _explicit(x, w, s, p, d, dy=None):
    """conv2d and its gradients with the padding written out as zeros (no tap is ever dropped)."""
    (ph, pw) = p
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = F.conv2d(xpad, w, stride=s, dilation=d, algo="einsum")
    if dy is None:
        return y
    dx, dw, db = F.conv2d_backward(dy, xpad, w, stride=s, dilation=d)
    return dx[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]], dw, db


def test_conv_with_taps_in_the_padding_matches_explicit_padding(rng):
    checked = 0
    while checked < 60:
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        d = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        p = (int(rng.integers(0, 12)), int(rng.integers(0, 12)))
        h, w_ = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        if d[0] * (k[0] - 1) + 1 > h + 2 * p[0] or d[1] * (k[1] - 1) + 1 > w_ + 2 * p[1]:
            continue
        g = F.conv_geometry((2, 2, h, w_), (3, 2, *k), s, p, d)
        x = rng.standard_normal((2, 2, h, w_))
        w = rng.standard_normal((3, 2, *k))
        b = rng.standard_normal(3)
        y = F.conv2d(x, w, b, stride=s, padding=p, dilation=d)
        ref = _explicit(x, w, s, p, d) + b[None, :, None, None]
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12, err_msg=str((k, d, s, p, h, w_)))
        dy = rng.standard_normal(y.shape)
        for got, want in zip(F.conv2d_backward(dy, x, w, stride=s, padding=p, dilation=d), _explicit(x, w, s, p, d, dy)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=str((k, d, s, p, h, w_)))
        checked += conv_module._reach(g) is not None  # count the cases that take the cropped path


def test_huge_padding_with_matching_dilation_costs_the_input(rng):
    # Padding 10**5 and dilation 10**5: the middle tap reads the input, the
    # outer ones only zeros. The old code built a (2*10**5)^2 frame per channel.
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    g = F.conv_geometry(x.shape, w.shape, 1, 10**5, 10**5)
    crop = conv_module._reach(g)
    assert crop is not None and crop.taps == (slice(1, 2), slice(1, 2))
    y = F.conv2d(x, w, padding=10**5, dilation=10**5)
    np.testing.assert_allclose(y, np.einsum("nchw,oc->nohw", x, w[:, :, 1, 1]), rtol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = F.conv2d_backward(dy, x, w, padding=10**5, dilation=10**5)
    np.testing.assert_allclose(dx, np.einsum("nohw,oc->nchw", dy, w[:, :, 1, 1]), rtol=1e-12)
    assert not dw[:, :, [0, 2]].any() and not dw[:, :, :, [0, 2]].any()


def test_conv_whose_taps_all_read_padding_gives_the_bias(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 2, 2))
    b = rng.standard_normal(3)
    y = F.conv2d(x, w, b, padding=50, dilation=100)  # tap 0 reads rows 0..4, tap 1 rows 100..104: all zeros
    assert y.shape == (1, 3, 5, 5)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], y.shape))
    dx, dw, db = F.conv2d_backward(np.ones_like(y), x, w, padding=50, dilation=100)
    assert not dx.any() and not dw.any() and np.array_equal(db, np.full(3, 25.0))
