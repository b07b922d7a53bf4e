"""Tests for the non-convolution functional ops: activations, linear, loss, pooling.

References: hand-computed cases, float64 formulas (scipy.special), explicit
loops written here, float64 central differences for every backward, and
PyTorch as an optional oracle.
"""

import warnings

import numpy as np
import pytest
import scipy.special as sps

from conftest import to_host, to_xp
from gradcheck import assert_grad_close, numerical_grad

from xpcnn import functional as F

FLOATS = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-6, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def away_from_zero(rng, shape, gap=0.1):
    """Random values with |x| >= gap, so finite differences never cross a kink at 0."""
    u = rng.standard_normal(shape)
    return np.sign(u) * (gap + np.abs(u))


def distinct(rng, shape, spacing=0.01):
    """A random arrangement of distinct values `spacing` apart (no ties, no near-ties)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) - n / 2).reshape(shape) * spacing


# ==========================================================================
# Activations
# ==========================================================================

# name -> (forward(x), backward(dy, x, y), float64 reference(x))
ACTS = {
    "relu": (F.relu, lambda dy, x, y: F.relu_backward(dy, x), lambda x: np.maximum(x, 0)),
    "leaky_relu": (
        lambda x: F.leaky_relu(x, 0.2),
        lambda dy, x, y: F.leaky_relu_backward(dy, x, 0.2),
        lambda x: np.where(x > 0, x, 0.2 * x),
    ),
    "sigmoid": (F.sigmoid, lambda dy, x, y: F.sigmoid_backward(dy, y), sps.expit),
    "tanh": (F.tanh, lambda dy, x, y: F.tanh_backward(dy, y), np.tanh),
}
for _ax in (-1, 0, 1):
    ACTS[f"softmax[{_ax}]"] = (
        lambda x, a=_ax: F.softmax(x, axis=a),
        lambda dy, x, y, a=_ax: F.softmax_backward(dy, y, axis=a),
        lambda x, a=_ax: sps.softmax(x, axis=a),
    )
    ACTS[f"log_softmax[{_ax}]"] = (
        lambda x, a=_ax: F.log_softmax(x, axis=a),
        lambda dy, x, y, a=_ax: F.log_softmax_backward(dy, y, axis=a),
        lambda x, a=_ax: sps.log_softmax(x, axis=a),
    )


def test_relu_known_answer(xp):
    x = to_xp(xp, np.array([-2.0, -0.5, 0.0, 0.5, 3.0]))
    np.testing.assert_array_equal(to_host(F.relu(x)), [0.0, 0.0, 0.0, 0.5, 3.0])
    dy = to_xp(xp, np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_array_equal(to_host(F.relu_backward(dy, x)), [0.0, 0.0, 0.0, 4.0, 5.0])


def test_leaky_relu_known_answer(xp):
    x = to_xp(xp, np.array([-2.0, -0.5, 0.0, 0.5, 3.0]))
    np.testing.assert_allclose(to_host(F.leaky_relu(x, 0.1)), [-0.2, -0.05, 0.0, 0.5, 3.0], rtol=1e-15)
    np.testing.assert_allclose(to_host(F.leaky_relu(x)), [-0.02, -0.005, 0.0, 0.5, 3.0], rtol=1e-15)
    dy = to_xp(xp, np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_allclose(to_host(F.leaky_relu_backward(dy, x, 0.1)), [0.1, 0.2, 0.3, 4.0, 5.0], rtol=1e-15)
    np.testing.assert_allclose(to_host(F.leaky_relu_backward(dy, x)), [0.01, 0.02, 0.03, 4.0, 5.0], rtol=1e-15)


def test_sigmoid_tanh_known_answers(xp):
    x = to_xp(xp, np.array([0.0, np.log(3.0), -np.log(3.0)]))
    np.testing.assert_allclose(to_host(F.sigmoid(x)), [0.5, 0.75, 0.25], rtol=1e-15)
    np.testing.assert_allclose(to_host(F.tanh(x)), [0.0, 0.8, -0.8], rtol=1e-15, atol=1e-16)  # (3-1/3)/(3+1/3)


def test_softmax_known_answer(xp):
    x = to_xp(xp, np.log(np.array([[1.0, 2.0, 5.0], [3.0, 3.0, 2.0]])))
    np.testing.assert_allclose(to_host(F.softmax(x)), [[0.125, 0.25, 0.625], [0.375, 0.375, 0.25]], rtol=1e-15)
    np.testing.assert_allclose(
        to_host(F.log_softmax(x)), np.log([[0.125, 0.25, 0.625], [0.375, 0.375, 0.25]]), rtol=1e-14
    )
    # along axis 0: columns (1, 3), (2, 3), (5, 2)
    np.testing.assert_allclose(to_host(F.softmax(x, axis=0)), [[0.25, 0.4, 5 / 7], [0.75, 0.6, 2 / 7]], rtol=1e-14)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(ACTS))
def test_activation_matches_float64_formula(xp, rng, name, dtype):
    fwd, _, ref = ACTS[name]
    x = (rng.standard_normal((3, 4, 5)) * 4).astype(dtype)
    y = fwd(to_xp(xp, x))
    assert y.dtype == dtype
    assert y.shape == x.shape
    np.testing.assert_allclose(to_host(y), ref(x.astype(np.float64)), **TOL[dtype])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(ACTS))
def test_activation_dtypes_preserved(xp, rng, name, dtype):
    fwd, bwd, _ = ACTS[name]
    x = to_xp(xp, rng.standard_normal((2, 3, 4)).astype(dtype))
    dy = to_xp(xp, rng.standard_normal((2, 3, 4)).astype(dtype))
    y = fwd(x)
    dx = bwd(dy, x, y)
    assert y.dtype == dtype and dx.dtype == dtype
    assert dx.shape == x.shape


@pytest.mark.parametrize("name", sorted(ACTS))
def test_activation_gradient_finite_differences(xp, rng, name):
    fwd, bwd, _ = ACTS[name]
    x = away_from_zero(rng, (3, 4, 5))
    dy = rng.standard_normal(x.shape)
    dyx = to_xp(xp, dy)

    def f(a):
        return (fwd(to_xp(xp, a)) * dyx).sum()

    xx = to_xp(xp, x)
    assert_grad_close(bwd(dyx, xx, fwd(xx)), numerical_grad(f, x), name=name)


def test_sigmoid_large_inputs_without_warnings(xp):
    for dtype in FLOATS:
        big = np.finfo(dtype).max
        x = np.array([-big, -1e4, -800.0, -100.0, 100.0, 800.0, 1e4, big, -np.inf, np.inf], dtype=dtype)
        with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
            warnings.simplefilter("error")
            y = to_host(F.sigmoid(to_xp(xp, x)))
            dx = to_host(F.sigmoid_backward(to_xp(xp, np.ones_like(x)), to_xp(xp, y)))
        assert y.dtype == dtype
        assert np.all((y >= 0) & (y <= 1))
        np.testing.assert_allclose(y, sps.expit(x.astype(np.float64)), rtol=1e-6, atol=1e-30)
        np.testing.assert_array_equal(y[[0, 1, 7, 8, 9]], [0, 0, 1, 0, 1])
        np.testing.assert_allclose(dx, 0.0, atol=1e-30)
        assert np.all(np.isfinite(dx))


def test_sigmoid_relative_accuracy_in_the_negative_tail(xp):
    # expit(-20) = 2.06e-9 and expit(-80) = 1.8e-35 are normal float32 numbers;
    # PyTorch and scipy give them to full relative precision.
    for dtype, rtol in ((np.float32, 1e-6), (np.float64, 1e-14)):
        x = np.array([-80.0, -40.0, -20.0, -10.0], dtype=dtype)
        y = to_host(F.sigmoid(to_xp(xp, x)))
        np.testing.assert_allclose(y, sps.expit(x.astype(np.float64)), rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_large_logits_without_warnings(xp, dtype):
    x = np.array([[1e4, 0.0, -1e4], [-3e4, -3e4, -3e4]], dtype=dtype)
    xx = to_xp(xp, x)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        p = to_host(F.softmax(xx))
        lp = to_host(F.log_softmax(xx))
        loss = to_host(F.cross_entropy(xx, to_xp(xp, np.array([1, 2]))))
    np.testing.assert_allclose(p, [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6, atol=0)
    np.testing.assert_allclose(lp, [[0.0, -1e4, -2e4], [-np.log(3)] * 3], rtol=1e-6)
    np.testing.assert_allclose(loss, (1e4 + np.log(3)) / 2, rtol=1e-6)


def test_softmax_rows_sum_to_one(xp, rng):
    x = to_xp(xp, rng.standard_normal((5, 7)) * 10)
    for axis in (0, 1, -1):
        p = to_host(F.softmax(x, axis=axis))
        assert np.all(p > 0)
        np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=1e-14)


# ==========================================================================
# Linear
# ==========================================================================

def test_linear_known_answer(xp):
    x = to_xp(xp, np.array([[1.0, 2.0], [3.0, -1.0]]))
    w = to_xp(xp, np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    b = to_xp(xp, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(to_host(F.linear(x, w, b)), [[2.0, 4.0, 6.0], [4.0, 1.0, 5.0]])
    np.testing.assert_array_equal(to_host(F.linear(x, w)), [[1.0, 2.0, 3.0], [3.0, -1.0, 2.0]])
    dy = to_xp(xp, np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]))
    dx, dw, db = F.linear_backward(dy, x, w)
    np.testing.assert_array_equal(to_host(dx), [[3.0, 2.0], [0.0, 1.0]])
    np.testing.assert_array_equal(to_host(dw), [[1.0, 2.0], [3.0, -1.0], [2.0, 4.0]])
    np.testing.assert_array_equal(to_host(db), [1.0, 1.0, 2.0])


@pytest.mark.parametrize("dtype", FLOATS)
def test_linear_matches_float64_and_keeps_dtype(xp, rng, dtype):
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((6, 5), (4, 5), (4,)))
    y = F.linear(to_xp(xp, x), to_xp(xp, w), to_xp(xp, b))
    assert y.dtype == dtype and y.shape == (6, 4)
    ref = x.astype(np.float64) @ w.astype(np.float64).T + b
    np.testing.assert_allclose(to_host(y), ref, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-5)
    dy = to_xp(xp, rng.standard_normal((6, 4)).astype(dtype))
    for g in F.linear_backward(dy, to_xp(xp, x), to_xp(xp, w)):
        assert g.dtype == dtype


def test_linear_gradient_finite_differences(xp, rng):
    x, w, b, dy = (rng.standard_normal(s) for s in ((4, 5), (3, 5), (3,), (4, 3)))
    X, Wt, B, DY = (to_xp(xp, a) for a in (x, w, b, dy))
    dx, dw, db = F.linear_backward(DY, X, Wt)
    assert_grad_close(dx, numerical_grad(lambda a: (F.linear(to_xp(xp, a), Wt, B) * DY).sum(), x), name="dx")
    assert_grad_close(dw, numerical_grad(lambda a: (F.linear(X, to_xp(xp, a), B) * DY).sum(), w), name="dw")
    assert_grad_close(db, numerical_grad(lambda a: (F.linear(X, Wt, to_xp(xp, a)) * DY).sum(), b), name="db")


def test_linear_errors(xp):
    x = to_xp(xp, np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"5.*4|4.*5"):
        F.linear(x, to_xp(xp, np.ones((3, 4))))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        F.linear(x, to_xp(xp, np.ones((3, 5))), to_xp(xp, np.ones(2)))
    with pytest.raises(ValueError, match="2-D"):
        F.linear(to_xp(xp, np.ones(5)), to_xp(xp, np.ones((3, 5))))
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        F.linear(x, to_xp(xp, np.ones((3, 5), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        F.linear_backward(to_xp(xp, np.ones((2, 4))), x, to_xp(xp, np.ones((3, 5))))


# ==========================================================================
# Cross-entropy
# ==========================================================================

def ce_loop(logits, labels):
    """Mean softmax cross-entropy by an explicit float64 loop (log-sum-exp per row)."""
    logits = np.asarray(logits, dtype=np.float64)
    total = 0.0
    for row, k in zip(logits, labels):
        m = max(row)
        lse = m + np.log(sum(np.exp(v - m) for v in row))
        total += lse - row[k]
    return total / len(labels)


def ce_grad_loop(logits, labels):
    logits = np.asarray(logits, dtype=np.float64)
    n = len(labels)
    g = np.empty_like(logits)
    for i, (row, k) in enumerate(zip(logits, labels)):
        e = np.exp(row - row.max())
        g[i] = e / e.sum()
        g[i, k] -= 1.0
    return g / n


def test_cross_entropy_known_answer(xp):
    logits = to_xp(xp, np.array([[0.0, np.log(3.0)], [np.log(4.0), 0.0], [0.0, 0.0]]))
    labels = to_xp(xp, np.array([1, 0, 0]))
    expected = -(np.log(0.75) + np.log(0.8) + np.log(0.5)) / 3
    loss = F.cross_entropy(logits, labels)
    assert loss.ndim == 0 and loss.shape == ()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-14)
    grad = to_host(F.cross_entropy_backward(logits, labels))
    np.testing.assert_allclose(grad, np.array([[0.25, -0.25], [-0.2, 0.2], [-0.5, 0.5]]) / 3, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_matches_loop(xp, rng, dtype):
    logits = (rng.standard_normal((7, 5)) * 3).astype(dtype)
    labels = rng.integers(0, 5, size=7)
    for lab_dtype in (np.int64, np.int32, np.uint8):
        L, Y = to_xp(xp, logits), to_xp(xp, labels.astype(lab_dtype))
        loss = F.cross_entropy(L, Y)
        assert loss.dtype == dtype and loss.ndim == 0
        np.testing.assert_allclose(to_host(loss), ce_loop(logits, labels), rtol=1e-5 if dtype == np.float32 else 1e-13)
        grad = F.cross_entropy_backward(L, Y)
        assert grad.dtype == dtype and grad.shape == logits.shape
        np.testing.assert_allclose(
            to_host(grad), ce_grad_loop(logits, labels), rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-7
        )


@pytest.mark.parametrize("dloss", [1.0, 2.5, 3])
@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_backward_scales_by_dloss(xp, rng, dtype, dloss):
    logits = rng.standard_normal((4, 3)).astype(dtype)
    labels = np.array([0, 2, 1, 2])
    grad = F.cross_entropy_backward(to_xp(xp, logits), to_xp(xp, labels), dloss)
    assert grad.dtype == dtype
    np.testing.assert_allclose(to_host(grad), dloss * ce_grad_loop(logits, labels), rtol=1e-5, atol=1e-7)


def test_cross_entropy_backward_dtype_with_numpy_scalar_dloss(xp, rng):
    logits = to_xp(xp, rng.standard_normal((4, 3)).astype(np.float32))
    labels = to_xp(xp, np.array([0, 2, 1, 2]))
    for dloss in (np.float64(2.0), np.float64(1.0)):
        assert F.cross_entropy_backward(logits, labels, dloss).dtype == np.float32


@pytest.mark.parametrize("dloss", [1.0, 0.7])
def test_cross_entropy_gradient_finite_differences(xp, rng, dloss):
    logits = rng.standard_normal((5, 4)) * 2
    labels = to_xp(xp, rng.integers(0, 4, size=5))
    analytic = F.cross_entropy_backward(to_xp(xp, logits), labels, dloss)
    numeric = numerical_grad(lambda a: dloss * F.cross_entropy(to_xp(xp, a), labels), logits)
    assert_grad_close(analytic, numeric, name="dlogits")


@pytest.mark.parametrize("fn", ["cross_entropy", "cross_entropy_backward", "check_labels"])
@pytest.mark.parametrize("labels, bad", [([0, 3, 1], "3"), ([0, -1, 2], "-1"), ([7, 7, 7], "7")])
def test_labels_out_of_range(xp, fn, labels, bad):
    logits = to_xp(xp, np.zeros((3, 3)))
    y = to_xp(xp, np.array(labels))
    with pytest.raises(ValueError, match=rf"label {bad}\b.*\[0, 3\)"):
        if fn == "check_labels":
            F.check_labels(y, 3)
        else:
            getattr(F, fn)(logits, y)


def test_labels_range_check_can_be_skipped(xp):
    F.check_labels(to_xp(xp, np.array([0, 5])), 3, check_range=False)  # no error, no device sync
    F.check_labels(to_xp(xp, np.array([0, 2])), 3)


@pytest.mark.parametrize("fn", ["cross_entropy", "cross_entropy_backward"])
def test_labels_must_be_integers(xp, fn):
    logits = to_xp(xp, np.zeros((2, 3)))
    for bad in (np.array([0.0, 1.0]), np.array([True, False]), np.array([1 + 0j, 0j])):
        with pytest.raises(TypeError, match="integer"):
            getattr(F, fn)(logits, to_xp(xp, bad))
    with pytest.raises(TypeError):
        getattr(F, fn)(logits, [0, 1])


def test_cross_entropy_shape_errors(xp):
    with pytest.raises(ValueError, match=r"3.*2|2.*3"):
        F.cross_entropy(to_xp(xp, np.zeros((3, 4))), to_xp(xp, np.array([0, 1])))
    with pytest.raises(ValueError, match="1-D"):
        F.cross_entropy(to_xp(xp, np.zeros((2, 4))), to_xp(xp, np.array([[0], [1]])))
    with pytest.raises(ValueError, match="2-D"):
        F.cross_entropy(to_xp(xp, np.zeros(4)), to_xp(xp, np.array([0])))


# ==========================================================================
# Pooling
# ==========================================================================

def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def pool_ref(x, kernel_size, stride, padding, mode):
    """Max / average pooling by explicit loops (padding: -inf for max, zeros for avg)."""
    KH, KW = _pair(kernel_size)
    SH, SW = _pair(kernel_size if stride is None else stride)
    PH, PW = _pair(padding)
    N, C, H, W = x.shape
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    out = np.empty((N, C, OH, OW))
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    vals = []
                    for i in range(KH):
                        for j in range(KW):
                            r, s = oh * SH - PH + i, ow * SW - PW + j
                            inside = 0 <= r < H and 0 <= s < W
                            vals.append(float(x[n, c, r, s]) if inside else (-np.inf if mode == "max" else 0.0))
                    out[n, c, oh, ow] = max(vals) if mode == "max" else sum(vals) / (KH * KW)
    return out


def max_pool_backward_ref(dy, x, kernel_size, stride, padding):
    """Each window's gradient to its first maximum in row-major window order."""
    KH, KW = _pair(kernel_size)
    SH, SW = _pair(kernel_size if stride is None else stride)
    PH, PW = _pair(padding)
    N, C, H, W = x.shape
    dx = np.zeros(x.shape)
    for n, c, oh, ow in np.ndindex(*dy.shape):
        best, where = -np.inf, None
        for i in range(KH):
            for j in range(KW):
                r, s = oh * SH - PH + i, ow * SW - PW + j
                if 0 <= r < H and 0 <= s < W and x[n, c, r, s] > best:
                    best, where = x[n, c, r, s], (r, s)
        dx[n, c, where[0], where[1]] += dy[n, c, oh, ow]
    return dx


# (kernel_size, stride, padding) on a (2, 3, 7, 6) input
POOL_CASES = [
    (2, None, 0),
    (3, 2, 1),
    (3, 1, 1),  # overlapping windows
    (2, 1, 0),  # overlapping windows
    ((2, 3), (1, 2), (1, 1)),  # non-square everything
    ((3, 2), (2, 1), (0, 1)),
    ((1, 3), None, (0, 1)),
    (1, 1, 0),
    (3, 3, 1),
    ((7, 6), None, 0),  # window equal to the input
    (4, 3, 2),
]
POOL_IDS = [f"k{k}-s{s}-p{p}" for k, s, p in POOL_CASES]
POOLS = {"max": (F.max_pool2d, F.max_pool2d_backward), "avg": (F.avg_pool2d, F.avg_pool2d_backward)}


def test_pool_known_answers(xp):
    x = to_xp(xp, np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4))
    np.testing.assert_array_equal(to_host(F.max_pool2d(x, 2))[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(to_host(F.avg_pool2d(x, 2))[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(to_host(F.max_pool2d(x, 3, 2, 1))[0, 0], [[5, 7], [13, 15]])
    # padded zeros count in the average: window sums 10, 24, 51, 90 over 9 cells
    np.testing.assert_allclose(to_host(F.avg_pool2d(x, 3, 2, 1))[0, 0], [[10 / 9, 24 / 9], [51 / 9, 10]], rtol=1e-15)
    # max pooling pads with -inf, not zeros: an all-negative input keeps its maxima
    neg = to_xp(xp, -np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4))
    np.testing.assert_array_equal(to_host(F.max_pool2d(neg, 3, 2, 1))[0, 0], [[-1, -2], [-5, -6]])
    # rectangular kernel, stride (1, 2)
    np.testing.assert_array_equal(to_host(F.max_pool2d(x, (3, 2), (1, 2)))[0, 0], [[9, 11], [13, 15]])


def test_avg_pool_counts_padding(xp):
    x = to_xp(xp, np.ones((1, 1, 2, 2)))
    y = to_host(F.avg_pool2d(x, 2, stride=1, padding=1))[0, 0]
    np.testing.assert_array_equal(y, [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    dx = to_host(F.avg_pool2d_backward(to_xp(xp, np.ones((1, 1, 3, 3))), x, 2, 1, 1))
    np.testing.assert_array_equal(dx, np.ones((1, 1, 2, 2)))  # each input cell is in 4 windows, 1/4 each


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("k, s, p", POOL_CASES, ids=POOL_IDS)
def test_pool_matches_loop(xp, rng, mode, k, s, p, dtype):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    y = POOLS[mode][0](to_xp(xp, x), k, s, p)
    assert y.dtype == dtype
    ref = pool_ref(x, k, s, p, mode)
    assert y.shape == ref.shape
    np.testing.assert_allclose(to_host(y), ref, **TOL[dtype])
    dy = to_xp(xp, rng.standard_normal(ref.shape).astype(dtype))
    assert POOLS[mode][1](dy, to_xp(xp, x), k, s, p).dtype == dtype


@pytest.mark.parametrize("k, s, p", POOL_CASES, ids=POOL_IDS)
def test_max_pool_backward_ties_match_loop(xp, rng, k, s, p):
    x = rng.integers(0, 3, size=(2, 3, 7, 6)).astype(np.float64)  # many ties
    y = pool_ref(x, k, s, p, "max")
    dy = rng.standard_normal(y.shape)
    dx = to_host(F.max_pool2d_backward(to_xp(xp, dy), to_xp(xp, x), k, s, p))
    np.testing.assert_allclose(dx, max_pool_backward_ref(dy, x, k, s, p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 3, 1), (2, 1, 0), (3, 1, 1), ((2, 3), (1, 2), (1, 0))])
def test_max_pool_backward_constant_input_one_winner(xp, rng, k, s, p):
    # Every cell of every window ties. Each window must send its gradient to exactly
    # one cell: with positive dy, a window counted twice or dropped changes the total.
    x = to_xp(xp, np.full((2, 2, 6, 6), 0.5))
    y = F.max_pool2d(x, k, s, p)
    np.testing.assert_array_equal(to_host(y), 0.5)
    dy = rng.uniform(1.0, 2.0, size=y.shape)
    dx = to_host(F.max_pool2d_backward(to_xp(xp, dy), x, k, s, p))
    assert np.all(dx >= 0)
    np.testing.assert_allclose(dx.sum(axis=(2, 3)), dy.sum(axis=(2, 3)), rtol=1e-13)
    if _pair(k) == _pair(s):  # disjoint windows: one distinct winner cell each
        assert np.count_nonzero(dx) == dy.size


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("k, s, p", POOL_CASES, ids=POOL_IDS)
def test_pool_gradient_finite_differences(xp, rng, mode, k, s, p):
    fwd, bwd = POOLS[mode]
    x = distinct(rng, (1, 2, 7, 6))  # no ties: max is differentiable here
    dyx = to_xp(xp, rng.standard_normal(fwd(x, k, s, p).shape))
    numeric = numerical_grad(lambda a: (fwd(to_xp(xp, a), k, s, p) * dyx).sum(), x)
    assert_grad_close(bwd(dyx, to_xp(xp, x), k, s, p), numeric, name=f"{mode} pool dx")


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_errors(xp, mode):
    fwd, bwd = POOLS[mode]
    x = to_xp(xp, np.zeros((1, 2, 5, 5)))
    with pytest.raises(ValueError, match=r"padding.*2.*kernel.*2"):
        fwd(x, 2, 1, 2)  # padding > kernel // 2, as PyTorch
    with pytest.raises(ValueError, match=r"\(6, 6\).*\(5, 5\)"):
        fwd(x, 6)
    with pytest.raises(ValueError, match=r"stride.*0"):
        fwd(x, 2, 0)
    with pytest.raises(ValueError, match=r"kernel_size.*0"):
        fwd(x, 0)
    with pytest.raises(ValueError, match=r"padding.*-1"):
        fwd(x, 2, 2, -1)
    with pytest.raises(ValueError, match=r"4-D.*\(2, 5, 5\)"):
        fwd(to_xp(xp, np.zeros((2, 5, 5))), 2)
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 2\).*\(1, 2, 3, 3\)"):
        bwd(to_xp(xp, np.zeros((1, 2, 3, 3))), x, 2)
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        bwd(to_xp(xp, np.zeros((1, 2, 2, 2), dtype=np.float32)), x, 2)


def test_non_integral_sizes_are_rejected(xp):
    x = to_xp(xp, np.zeros((1, 1, 6, 6)))
    with pytest.raises(TypeError):
        F.max_pool2d(x, (2.5, 2))
    with pytest.raises(TypeError):
        F.avg_pool2d(x, 2, stride=(1, 1.5))


# ==========================================================================
# dtypes: integer and complex inputs are rejected by every op
# ==========================================================================

def _forward_calls(xp, a):
    """Each op called with `a` (bad dtype) as its main float input; the rest well-formed."""
    w = to_xp(xp, np.ones((3, 4)))
    return {
        "relu": lambda: F.relu(a),
        "leaky_relu": lambda: F.leaky_relu(a),
        "sigmoid": lambda: F.sigmoid(a),
        "tanh": lambda: F.tanh(a),
        "softmax": lambda: F.softmax(a),
        "log_softmax": lambda: F.log_softmax(a),
        "linear": lambda: F.linear(a, w),
        "cross_entropy": lambda: F.cross_entropy(a, to_xp(xp, np.zeros(2, dtype=np.int64))),
        "max_pool2d": lambda: F.max_pool2d(a.reshape(1, 2, 2, 2), 2),
        "avg_pool2d": lambda: F.avg_pool2d(a.reshape(1, 2, 2, 2), 2),
        "relu_backward": lambda: F.relu_backward(a, to_xp(xp, np.ones((2, 4)))),
        "sigmoid_backward": lambda: F.sigmoid_backward(to_xp(xp, np.ones((2, 4))), a),
        "softmax_backward": lambda: F.softmax_backward(a, to_xp(xp, np.ones((2, 4)))),
        "linear_backward": lambda: F.linear_backward(to_xp(xp, np.ones((2, 3))), a, w),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(
            to_xp(xp, np.ones((1, 2, 1, 1))), a.reshape(1, 2, 2, 2), 2
        ),
    }


@pytest.mark.parametrize("op", sorted(_forward_calls(np, np.ones((2, 4)))))
@pytest.mark.parametrize("bad_dtype", [np.int32, np.int64, np.complex64, np.complex128])
def test_non_float_inputs_raise_type_error(xp, op, bad_dtype):
    a = to_xp(xp, np.ones((2, 4), dtype=bad_dtype))
    with pytest.raises(TypeError, match=np.dtype(bad_dtype).name):  # names the dtype it got
        _forward_calls(xp, a)[op]()


# ==========================================================================
# PyTorch as an extra oracle
# ==========================================================================

@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("k, s, p", POOL_CASES, ids=POOL_IDS)
def test_pool_matches_torch(xp, rng, mode, k, s, p):
    torch = pytest.importorskip("torch")
    x = distinct(rng, (2, 3, 7, 6))
    fwd, bwd = POOLS[mode]
    t = torch.tensor(x, requires_grad=True)
    if mode == "max":
        ty = torch.nn.functional.max_pool2d(t, k, s, p)
    else:
        ty = torch.nn.functional.avg_pool2d(t, k, s, p, count_include_pad=True)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    y = fwd(to_xp(xp, x), k, s, p)
    np.testing.assert_allclose(to_host(y), ty.detach().numpy(), rtol=1e-13, atol=1e-15)
    dx = bwd(to_xp(xp, dy), to_xp(xp, x), k, s, p)
    np.testing.assert_allclose(to_host(dx), t.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_matches_torch(xp, rng, dtype):
    torch = pytest.importorskip("torch")
    logits = (rng.standard_normal((9, 6)) * 3).astype(dtype)
    labels = rng.integers(0, 6, size=9)
    t = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    tl.backward()
    L, Y = to_xp(xp, logits), to_xp(xp, labels)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(to_host(F.cross_entropy(L, Y)), tl.item(), **tol)
    np.testing.assert_allclose(to_host(F.cross_entropy_backward(L, Y)), t.grad.numpy(), **tol)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu", "softmax", "log_softmax"])
def test_activations_match_torch(xp, rng, name):
    torch = pytest.importorskip("torch")
    x = away_from_zero(rng, (4, 5))
    dy = rng.standard_normal((4, 5))
    t = torch.tensor(x, requires_grad=True)
    tf = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky_relu": lambda a: torch.nn.functional.leaky_relu(a, 0.2),
        "softmax": lambda a: torch.softmax(a, dim=1),
        "log_softmax": lambda a: torch.log_softmax(a, dim=1),
    }[name]
    ty = tf(t)
    ty.backward(torch.tensor(dy))
    fwd, bwd, _ = ACTS[{"softmax": "softmax[1]", "log_softmax": "log_softmax[1]"}.get(name, name)]
    X = to_xp(xp, x)
    y = fwd(X)
    np.testing.assert_allclose(to_host(y), ty.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(to_host(bwd(to_xp(xp, dy), X, y)), t.grad.numpy(), rtol=1e-12, atol=1e-14)
