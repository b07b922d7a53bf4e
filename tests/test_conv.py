"""Tests for F.conv2d and F.conv2d_backward, every algorithm.

References: hand-computed cases, scipy.signal.correlate, float64 central
differences, PyTorch as an optional oracle.
"""

import numpy as np
import pytest
from scipy.signal import correlate

from conftest import to_host, to_xp
from gradcheck import assert_grad_close, numerical_grad, rel_error

from xpcnn import config
from xpcnn import functional as F
from xpcnn.functional import conv as conv_module

ALGOS = list(F.ALGOS)  # every algorithm, "auto" included
FLOATS = [np.float32, np.float64]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Float64 convolution from scipy.signal.correlate, one (image, output channel) at a time."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    SH, SW = _pair(stride)
    PH, PW = _pair(padding)
    DH, DW = _pair(dilation)
    N = x.shape[0]
    O, Cg, KH, KW = w.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    wd = np.zeros((O, Cg, DH * (KH - 1) + 1, DW * (KW - 1) + 1))
    wd[:, :, ::DH, ::DW] = w  # the dilated kernel, written out
    Og = O // groups
    out = []
    for n in range(N):
        maps = []
        for o in range(O):
            g = o // Og
            acc = sum(correlate(xpad[n, g * Cg + c], wd[o, c], mode="valid") for c in range(Cg))
            acc = acc[::SH, ::SW]
            maps.append(acc + (0.0 if b is None else float(b[o])))
        out.append(maps)
    return np.array(out)


def out_shape(x_shape, w_shape, stride, padding, dilation):
    """PyTorch's floor formula."""
    (SH, SW), (PH, PW), (DH, DW) = _pair(stride), _pair(padding), _pair(dilation)
    H, W = x_shape[2:]
    KH, KW = w_shape[2:]
    return (
        x_shape[0],
        w_shape[0],
        (H + 2 * PH - DH * (KH - 1) - 1) // SH + 1,
        (W + 2 * PW - DW * (KW - 1) - 1) // SW + 1,
    )


# (x shape, w shape, stride, padding, dilation, groups)
CASES = [
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 3, 8, 6), (5, 3, 3, 2), 2, 1, 1, 1),  # non-square image and kernel, stride 2
    ((1, 4, 9, 9), (6, 2, 3, 3), 1, 1, 1, 2),  # groups
    ((2, 6, 7, 8), (6, 1, 3, 3), 1, 1, 1, 6),  # depthwise
    ((2, 2, 9, 9), (3, 2, 3, 3), 1, 2, 2, 1),  # dilation 2
    ((1, 3, 10, 7), (2, 3, 2, 3), (2, 3), (1, 0), (2, 1), 1),  # every size a different pair
    ((3, 2, 5, 5), (4, 2, 1, 1), 1, 0, 1, 1),  # 1x1 kernel
    ((1, 2, 5, 6), (3, 2, 1, 1), 2, 0, 1, 1),  # 1x1 kernel, stride 2
    ((2, 1, 4, 4), (2, 1, 4, 4), 1, 0, 1, 1),  # kernel equal to the input
    ((1, 2, 3, 2), (2, 2, 5, 4), 1, 1, 1, 1),  # kernel equal to the padded input
    ((2, 2, 5, 5), (2, 2, 2, 2), 3, 0, 1, 1),  # stride larger than the kernel
    ((1, 3, 6, 6), (2, 3, 3, 3), 4, 2, 1, 1),  # stride 4, padding 2
    ((1, 20, 6, 6), (4, 20, 3, 3), 1, 1, 1, 1),  # many channels ("auto" may pick "shift")
    ((2, 32, 5, 5), (4, 16, 3, 3), 1, 1, 1, 2),  # many channels per group
    ((1, 16, 8, 7), (2, 16, 3, 2), 1, (0, 1), (2, 3), 1),  # many channels, dilation
    ((1, 16, 8, 8), (3, 16, 2, 2), 2, 1, 1, 1),  # many channels, stride 2
    ((1, 3, 1, 9), (2, 3, 1, 3), 1, 0, 1, 1),  # a single row
    ((2, 8, 6, 6), (3, 8, 3, 3), 1, 2, 1, 1),  # many channels, padding 2: dx is a convolution without padding
    ((1, 8, 5, 5), (3, 8, 1, 1), 1, 1, 1, 1),  # padding beyond a 1x1 kernel: dx is not a convolution
]
CASE_IDS = [f"x{c[0]}-w{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-g{c[5]}".replace(" ", "") for c in CASES]


def random_case(rng, case, dtype=np.float64):
    xs, ws, *_ = case
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    return x, w, b


def kwargs_of(case):
    _, _, s, p, d, g = case
    return dict(stride=s, padding=p, dilation=d, groups=g)


# --------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------

X3 = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)  # [[0 1 2] [3 4 5] [6 7 8]]
W2 = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)


@pytest.mark.parametrize("algo", ALGOS)
def test_known_answers(xp, algo):
    def conv(x, w, b=None, **kw):
        return to_host(F.conv2d(to_xp(xp, x), to_xp(xp, w), None if b is None else to_xp(xp, b), algo=algo, **kw))

    # y[i, j] = x[i, j] + 2 x[i, j+1] + 3 x[i+1, j] + 4 x[i+1, j+1]
    np.testing.assert_array_equal(conv(X3, W2)[0, 0], [[27, 37], [57, 67]])
    padded = [[0, 4, 11, 6], [12, 27, 37, 17], [30, 57, 67, 29], [12, 20, 23, 8]]
    np.testing.assert_array_equal(conv(X3, W2, padding=1)[0, 0], padded)
    np.testing.assert_array_equal(conv(X3, W2, padding=1, stride=2)[0, 0], [[0, 11], [30, 67]])
    # dilation 2: taps at x[0,0], x[0,2], x[2,0], x[2,2]
    np.testing.assert_array_equal(conv(X3, W2, dilation=2)[0, 0], [[0 + 2 * 2 + 3 * 6 + 4 * 8]])
    # bias
    np.testing.assert_array_equal(conv(X3, W2, np.array([0.5]))[0, 0], [[27.5, 37.5], [57.5, 67.5]])
    # groups=2: channel 0 with W2, channel 1 (x reversed) with [[1, 0], [0, -1]]
    x2 = np.concatenate([X3, X3[:, :, ::-1, ::-1]], axis=1)
    w2 = np.stack([W2[0], np.array([[[1.0, 0.0], [0.0, -1.0]]])])
    y = conv(x2, w2, groups=2)
    np.testing.assert_array_equal(y[0, 0], [[27, 37], [57, 67]])
    np.testing.assert_array_equal(y[0, 1], [[4, 4], [4, 4]])
    # groups=1: both channels summed into one output
    y = conv(x2, w2.reshape(1, 2, 2, 2))
    np.testing.assert_array_equal(y[0, 0], [[31, 41], [61, 71]])
    # non-square: a 1x2 kernel with stride (1, 2) on the padded image
    np.testing.assert_array_equal(
        conv(X3, np.array([[[[1.0, -1.0]]]]), stride=(1, 2), padding=(0, 1))[0, 0], [[0, -1], [-3, -1], [-6, -1]]
    )


def test_docstring_example(xp):
    x = to_xp(xp, np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    w = to_xp(xp, np.ones((1, 1, 2, 2), dtype=np.float32))
    np.testing.assert_array_equal(to_host(F.conv2d(x, w))[0, 0], [[10, 14, 18], [26, 30, 34], [42, 46, 50]])


# --------------------------------------------------------------------------
# scipy reference, shapes, dtypes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_scipy(xp, rng, case, algo):
    x, w, b = random_case(rng, case)
    kw = kwargs_of(case)
    ref = conv_ref(x, w, b, **kw)
    assert ref.shape == out_shape(x.shape, w.shape, kw["stride"], kw["padding"], kw["dilation"])
    y = F.conv2d(to_xp(xp, x), to_xp(xp, w), to_xp(xp, b), algo=algo, **kw)
    assert y.shape == ref.shape and y.dtype == np.float64
    np.testing.assert_allclose(to_host(y), ref, rtol=1e-11, atol=1e-11)
    y32 = F.conv2d(*(to_xp(xp, a.astype(np.float32)) for a in (x, w, b)), algo=algo, **kw)
    assert y32.dtype == np.float32
    assert rel_error(to_host(y32), ref) < 1e-5


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_dtype_preserved(xp, rng, algo, dtype):
    for case in CASES[:6]:
        x, w, b = (to_xp(xp, a) for a in random_case(rng, case, dtype))
        kw = kwargs_of(case)
        y = F.conv2d(x, w, b, algo=algo, **kw)
        assert y.dtype == dtype
        dx, dw, db = F.conv2d_backward(xp.ones_like(y), x, w, **kw)
        assert (dx.dtype, dw.dtype, db.dtype) == (dtype, dtype, dtype)
        assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, b.shape)


@pytest.mark.parametrize("algo", ALGOS)
def test_non_contiguous_inputs(xp, rng, algo):
    # views made on the backend itself, so that both lanes see non-contiguous arrays
    X = to_xp(xp, rng.standard_normal((3, 5, 6, 2))).transpose(0, 3, 1, 2)  # (3, 2, 5, 6)
    Wt = to_xp(xp, rng.standard_normal((3, 3, 2, 4))).transpose(3, 2, 0, 1)[:, :, ::-1]  # (4, 2, 3, 3), negative strides
    assert not X.flags.c_contiguous and not Wt.flags.c_contiguous
    x, w = to_host(X), to_host(Wt)
    kw = dict(stride=(1, 2), padding=1)
    y = F.conv2d(X, Wt, algo=algo, **kw)
    np.testing.assert_allclose(to_host(y), conv_ref(x, w, **kw), rtol=1e-11, atol=1e-11)
    DY = to_xp(xp, rng.standard_normal(y.shape[::-1])).T  # (N, O, OH, OW), transposed layout
    expected = F.conv2d_backward(xp.ascontiguousarray(DY), xp.ascontiguousarray(X), xp.ascontiguousarray(Wt), **kw)
    for mine, ref in zip(F.conv2d_backward(DY, X, Wt, **kw), expected):
        np.testing.assert_allclose(to_host(mine), to_host(ref), rtol=1e-13, atol=1e-13)


def test_bias_is_added_per_channel(xp, rng):
    x, w, b = random_case(rng, CASES[0])
    X, Wt = to_xp(xp, x), to_xp(xp, w)
    y0 = to_host(F.conv2d(X, Wt))
    y1 = to_host(F.conv2d(X, Wt, to_xp(xp, b)))
    np.testing.assert_allclose(y1 - y0, np.broadcast_to(b[None, :, None, None], y0.shape), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------

# small configurations: finite differences cost two forwards per element
GRAD_CASES = [
    ((2, 2, 5, 5), (3, 2, 3, 3), 1, 0, 1, 1),
    ((1, 2, 6, 5), (2, 2, 3, 2), 2, 1, 1, 1),  # stride 2, padding, non-square kernel
    ((1, 2, 7, 7), (2, 2, 2, 3), 1, 2, 2, 1),  # dilation 2, padding 2
    ((2, 4, 5, 5), (4, 2, 3, 3), 1, 1, 1, 2),  # groups
    ((1, 3, 6, 7), (3, 1, 2, 2), (2, 3), (1, 0), (1, 2), 3),  # depthwise, every size a pair
    ((1, 2, 7, 7), (2, 2, 2, 2), 3, 0, 1, 1),  # stride > kernel: some inputs unused
    ((1, 2, 4, 3), (2, 2, 4, 3), 1, 0, 1, 1),  # kernel equal to the input
    ((1, 16, 4, 4), (2, 16, 2, 2), 1, 1, 1, 1),  # many channels
]
GRAD_IDS = [f"x{c[0]}-w{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-g{c[5]}".replace(" ", "") for c in GRAD_CASES]


@pytest.mark.parametrize("case", GRAD_CASES, ids=GRAD_IDS)
def test_backward_finite_differences(xp, rng, case):
    x, w, b = random_case(rng, case)
    kw = kwargs_of(case)
    X, Wt, B = to_xp(xp, x), to_xp(xp, w), to_xp(xp, b)
    dy = to_xp(xp, rng.standard_normal(out_shape(x.shape, w.shape, kw["stride"], kw["padding"], kw["dilation"])))
    dx, dw, db = F.conv2d_backward(dy, X, Wt, **kw)
    # the gradient of sum(conv(x, w, b) * dy), through the reference algorithm "einsum"
    # so that the check does not lean on the "gemm" code the backward shares
    def loss(xa, wa, ba):
        return (F.conv2d(xa, wa, ba, algo="einsum", **kw) * dy).sum()

    assert_grad_close(dx, numerical_grad(lambda a: loss(to_xp(xp, a), Wt, B), x), name="dx")
    assert_grad_close(dw, numerical_grad(lambda a: loss(X, to_xp(xp, a), B), w), name="dw")
    assert_grad_close(db, numerical_grad(lambda a: loss(X, Wt, to_xp(xp, a)), b), name="db")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backward_adjoint_identity(xp, rng, case):
    # conv is bilinear: <conv(x, w), dy> = <x, dx> = <w, dw> for any dy.
    x, w, _ = random_case(rng, case)
    kw = kwargs_of(case)
    X, Wt = to_xp(xp, x), to_xp(xp, w)
    y = conv_ref(x, w, **kw)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = (to_host(a) for a in F.conv2d_backward(to_xp(xp, dy), X, Wt, **kw))
    inner = np.vdot(y, dy)
    np.testing.assert_allclose(np.vdot(x, dx), inner, rtol=1e-10)
    np.testing.assert_allclose(np.vdot(w, dw), inner, rtol=1e-10)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_backward_unused_inputs_get_zero(xp, rng):
    # stride 3 with a 2x2 kernel never reads rows/columns 2, 5 (and row/col 6 is cut off)
    x, w, _ = random_case(rng, ((1, 1, 7, 7), (1, 1, 2, 2), 3, 0, 1, 1))
    dy = to_xp(xp, np.ones((1, 1, 2, 2)))
    dx = to_host(F.conv2d_backward(dy, to_xp(xp, x), to_xp(xp, w), stride=3)[0])[0, 0]
    for r in (2, 5, 6):
        np.testing.assert_array_equal(dx[r], 0.0)
        np.testing.assert_array_equal(dx[:, r], 0.0)
    np.testing.assert_array_equal(dx[0:2, 0:2], w[0, 0])


# --------------------------------------------------------------------------
# PyTorch oracle
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_torch(xp, rng, case):
    torch = pytest.importorskip("torch")
    x, w, b = random_case(rng, case)
    kw = kwargs_of(case)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    X, Wt, B = to_xp(xp, x), to_xp(xp, w), to_xp(xp, b)
    for algo in ALGOS:
        y = F.conv2d(X, Wt, B, algo=algo, **kw)
        np.testing.assert_allclose(to_host(y), ty.detach().numpy(), rtol=1e-11, atol=1e-11, err_msg=algo)
    dx, dw, db = F.conv2d_backward(to_xp(xp, dy), X, Wt, **kw)
    for mine, theirs in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(to_host(mine), theirs.grad.numpy(), rtol=1e-11, atol=1e-11)


# --------------------------------------------------------------------------
# Workspace limit: chunking through the batch gives the same numbers
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[4], CASES[5], CASES[13]], ids=str)
def test_tiny_workspace_same_results(xp, rng, monkeypatch, case):
    case = ((5,) + case[0][1:],) + case[1:]  # a batch of 5 to split
    x, w, b = (to_xp(xp, a) for a in random_case(rng, case))
    kw = kwargs_of(case)
    dy = to_xp(xp, rng.standard_normal(out_shape(x.shape, w.shape, kw["stride"], kw["padding"], kw["dilation"])))
    big = {a: to_host(F.conv2d(x, w, b, algo=a, **kw)) for a in ALGOS}
    big_grads = [to_host(g) for g in F.conv2d_backward(dy, x, w, **kw)]

    monkeypatch.setattr(config, "workspace_bytes", 1024)
    for a in ALGOS:
        small = to_host(F.conv2d(x, w, b, algo=a, **kw))
        np.testing.assert_allclose(small, big[a], rtol=1e-13, atol=1e-13, err_msg=a)
    for g_small, g_big in zip(F.conv2d_backward(dy, x, w, **kw), big_grads):
        np.testing.assert_allclose(to_host(g_small), g_big, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("algo", ALGOS)
def test_results_do_not_alias_reused_buffers(xp, rng, algo):
    # Later calls (same shapes, or poisoned with NaN) must not change earlier results
    # nor leak into later ones.
    case = CASES[1]
    kw = kwargs_of(case)
    x1, w, b = random_case(rng, case)
    x2 = rng.standard_normal(x1.shape)
    X1, X2, Wt, B = (to_xp(xp, a) for a in (x1, x2, w, b))
    dy = rng.standard_normal(out_shape(x1.shape, w.shape, kw["stride"], kw["padding"], kw["dilation"]))
    DY = to_xp(xp, dy)
    y1 = F.conv2d(X1, Wt, B, algo=algo, **kw)
    g1 = F.conv2d_backward(DY, X1, Wt, **kw)
    keep = [to_host(a).copy() for a in (y1, *g1)]
    F.conv2d(X2, Wt, B, algo=algo, **kw)
    F.conv2d_backward(DY * 2, X2, Wt, **kw)
    for now, before in zip((y1, *g1), keep):
        np.testing.assert_array_equal(to_host(now), before)
    nan = to_xp(xp, np.full(x1.shape, np.nan))
    F.conv2d(nan, Wt, B, algo=algo, **kw)
    F.conv2d_backward(DY, nan, Wt, **kw)
    y = to_host(F.conv2d(X1, Wt, B, algo=algo, **kw))
    np.testing.assert_allclose(y, conv_ref(x1, w, b, **kw), rtol=1e-11, atol=1e-11)
    for mine, before in zip(F.conv2d_backward(DY, X1, Wt, **kw), keep[1:]):
        np.testing.assert_allclose(to_host(mine), before, rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------
# Errors: raised before any heavy work, naming expected and actual values
# --------------------------------------------------------------------------

@pytest.fixture
def no_heavy_work(monkeypatch):
    """Make any padding, window view or algorithm call fail the test."""

    def boom(*args, **kwargs):
        raise AssertionError("heavy work started before the arguments were checked")

    # Internal names, as of this writing; test_error_guard_is_armed fails if they change.
    for name in ("_pad", "_windows", "_im2col", "_Phases", "_phases", "_workspace", "_fill_col"):
        if hasattr(conv_module, name):
            monkeypatch.setattr(conv_module, name, boom)
    for algo in list(getattr(conv_module, "_FORWARD", {})):
        monkeypatch.setitem(conv_module._FORWARD, algo, boom)


def _arrays(xp, xs=(1, 3, 5, 5), ws=(2, 3, 3, 3), dtype=np.float64, wdtype=None):
    return xp.zeros(xs, dtype=dtype), xp.zeros(ws, dtype=wdtype or dtype)


ERROR_CASES = [
    # id, x shape, w shape, kwargs, exception, message pattern
    ("3-D input", (3, 5, 5), (2, 3, 3, 3), {}, ValueError, r"4-D.*\(3, 5, 5\)"),
    ("3-D weights", (1, 3, 5, 5), (3, 3, 3), {}, ValueError, r"4-D.*\(3, 3, 3\)"),
    ("channel mismatch", (1, 3, 5, 5), (2, 2, 3, 3), {}, ValueError, r"(?s)2.*3"),
    ("channel mismatch groups", (1, 4, 5, 5), (2, 4, 3, 3), {"groups": 2}, ValueError, r"(?s)(8.*4|4.*8)"),
    ("groups vs in-channels", (1, 3, 5, 5), (2, 1, 3, 3), {"groups": 2}, ValueError, r"groups=2.*\(3\)"),
    ("groups vs out-channels", (1, 4, 5, 5), (3, 2, 3, 3), {"groups": 2}, ValueError, r"groups=2.*\(3\)"),
    ("groups 0", (1, 3, 5, 5), (2, 3, 3, 3), {"groups": 0}, ValueError, r"groups.*0"),
    ("kernel too large", (1, 3, 3, 3), (2, 3, 4, 4), {}, ValueError, r"\(4, 4\).*\(3, 3\)"),
    ("kernel too large padded", (1, 3, 3, 3), (2, 3, 6, 1), {"padding": 1}, ValueError, r"\(6, 1\).*\(5, 5\)"),
    ("dilated too large", (1, 3, 4, 4), (2, 3, 2, 2), {"dilation": 4}, ValueError, r"\(5, 5\).*\(4, 4\)"),
    ("stride 0", (1, 3, 5, 5), (2, 3, 3, 3), {"stride": 0}, ValueError, r"stride.*0"),
    ("stride (1, 0)", (1, 3, 5, 5), (2, 3, 3, 3), {"stride": (1, 0)}, ValueError, r"stride.*\(1, 0\)"),
    ("dilation 0", (1, 3, 5, 5), (2, 3, 3, 3), {"dilation": 0}, ValueError, r"dilation.*0"),
    ("negative padding", (1, 3, 5, 5), (2, 3, 3, 3), {"padding": -1}, ValueError, r"padding.*-1"),
    ("stride float", (1, 3, 5, 5), (2, 3, 3, 3), {"stride": 1.5}, TypeError, r"stride.*1\.5"),
    ("padding triple", (1, 3, 5, 5), (2, 3, 3, 3), {"padding": (1, 1, 1)}, TypeError, r"padding.*\(1, 1, 1\)"),
]


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("xs, ws, kw, exc, pattern", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_argument_errors(xp, no_heavy_work, xs, ws, kw, exc, pattern, backward):
    x, w = _arrays(xp, xs, ws)
    with pytest.raises(exc, match=pattern):
        if backward:
            F.conv2d_backward(xp.zeros((1, 2, 3, 3)), x, w, **kw)
        else:
            F.conv2d(x, w, **kw)


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize(
    "xdt, wdt, pattern",
    [
        (np.int64, np.int64, "int64"),
        (np.float64, np.int32, "int32"),
        (np.complex128, np.complex128, "complex128"),
        (np.float32, np.complex64, "complex64"),
        (np.float32, np.float64, r"float32.*float64"),
        (np.float64, np.float32, r"float64.*float32"),
        (np.float16, np.float16, "float16"),
    ],
)
def test_dtype_errors(xp, no_heavy_work, xdt, wdt, pattern, backward):
    x, w = _arrays(xp, dtype=xdt, wdtype=wdt)
    with pytest.raises(TypeError, match=pattern):
        if backward:
            F.conv2d_backward(xp.zeros((1, 2, 3, 3), dtype=xdt), x, w)
        else:
            F.conv2d(x, w)


def test_not_an_array(xp, no_heavy_work):
    x, w = _arrays(xp)
    with pytest.raises(TypeError, match="list"):
        F.conv2d(x.tolist(), w)


def test_unknown_algo(xp, no_heavy_work):
    x, w = _arrays(xp)
    with pytest.raises(ValueError, match=r"(?s)'fft'.*einsum|einsum.*'fft'"):
        F.conv2d(x, w, algo="fft")


def test_bias_errors(xp, no_heavy_work):
    x, w = _arrays(xp)
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        F.conv2d(x, w, xp.zeros(3))
    with pytest.raises(ValueError, match=r"\(2,\).*\(1, 2\)"):
        F.conv2d(x, w, xp.zeros((1, 2)))
    with pytest.raises(TypeError, match=r"float64.*float32"):
        F.conv2d(x, w, xp.zeros(2, dtype=np.float32))
    with pytest.raises(TypeError, match="int64"):
        F.conv2d(x, w, xp.zeros(2, dtype=np.int64))


def test_backward_dy_errors(xp, no_heavy_work):
    x, w = _arrays(xp)  # output (1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 3\).*\(1, 2, 3, 4\)"):
        F.conv2d_backward(xp.zeros((1, 2, 3, 4)), x, w)
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 2\).*\(1, 2, 3, 3\)"):
        F.conv2d_backward(xp.zeros((1, 2, 3, 3)), x, w, stride=2)
    with pytest.raises(TypeError, match=r"float64.*float32"):
        F.conv2d_backward(xp.zeros((1, 2, 3, 3), dtype=np.float32), x, w)
    with pytest.raises(TypeError, match="int64"):
        F.conv2d_backward(xp.zeros((1, 2, 3, 3), dtype=np.int64), x, w)


@pytest.mark.parametrize("algo", ALGOS + ["backward"])
def test_error_guard_is_armed(xp, no_heavy_work, algo):
    # The guard that the error tests rely on really stops a valid call.
    x, w = _arrays(xp, xs=(2, 3, 5, 5))
    with pytest.raises(AssertionError, match="heavy work"):
        if algo == "backward":
            F.conv2d_backward(xp.zeros((2, 2, 3, 3)), x, w, padding=0)
        else:
            F.conv2d(x, w, algo=algo)


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 0, 2)])
def test_backward_without_dx_gives_the_same_weight_gradients(xp, rng, stride, padding, groups):
    x = to_xp(xp, rng.standard_normal((3, 4, 9, 8)))
    w = to_xp(xp, rng.standard_normal((6, 4 // groups, 3, 3)))
    y = F.conv2d(x, w, stride=stride, padding=padding, groups=groups)
    dy = to_xp(xp, rng.standard_normal(y.shape))
    kw = dict(stride=stride, padding=padding, groups=groups)
    dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
    none, dw2, db2 = F.conv2d_backward(dy, x, w, need_dx=False, **kw)
    assert none is None
    np.testing.assert_array_equal(to_host(dw2), to_host(dw))
    np.testing.assert_array_equal(to_host(db2), to_host(db))
