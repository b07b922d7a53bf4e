"""Large element-wise ops and pooling, computed block by block.

The arrays here are larger than one block, so the blocked path runs (the
other tests use small arrays, which go whole), with several block sizes. The
references are whole-array formulas computed here (NumPy, scipy.special in
float64, a reshape for tiled pooling, a loop over windows) and the same op
unblocked: the blocking must not change a single bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

from xpcnn import functional as F
from xpcnn.functional import _blocks

# 2 x 32 x 128 x 129 float32 = 4.03 MiB: two default blocks and a short one.
SHAPE = (2, 32, 128, 129)


@pytest.fixture
def big(rng):
    assert np.prod(SHAPE) * 4 > 2 * _blocks.BLOCK_BYTES
    return rng.standard_normal(SHAPE).astype(np.float32) * 30  # wide enough to overflow exp(-x) somewhere


def _set_block_bytes(monkeypatch, size):
    monkeypatch.setattr(_blocks, "BLOCK_BYTES", size)


@pytest.fixture(params=[4096, 20000, None], ids=["4KiB", "20000B", "default"])
def blocks(request, monkeypatch):
    """Block sizes: smaller than one plane, a few planes with a ragged end, the default."""
    if request.param is not None:
        _set_block_bytes(monkeypatch, request.param)


def _sigmoid_ref(x):
    # float64 expit rounded once to float32: the best float32 answer.
    return sps.expit(x.astype(np.float64)).astype(np.float32)


ELEMENTWISE = {
    "relu": (F.relu, lambda x: np.maximum(x, 0)),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, x * np.float32(0.1))),
    "leaky_relu(-2)": (lambda x: F.leaky_relu(x, -2.0), lambda x: np.where(x > 0, x, x * np.float32(-2.0))),
    "tanh": (F.tanh, np.tanh),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_blocks_equal_whole_array(big, blocks, name):
    op, ref = ELEMENTWISE[name]
    np.testing.assert_array_equal(op(big), ref(big))


def test_sigmoid_blocks_close_to_float64_and_silent(big, blocks):
    with np.errstate(over="raise"):  # the op must silence its own overflow, in every thread
        y = F.sigmoid(big)
    assert y.dtype == np.float32
    ref = _sigmoid_ref(big)
    normal = ref >= np.finfo(np.float32).tiny
    np.testing.assert_allclose(y[normal], ref[normal], rtol=3e-7, atol=0)
    # Below the normal range the answer is subnormal; where exp(-x) overflows the op gives 0.
    tiny = np.finfo(np.float32).tiny
    assert (np.abs(y[~normal] - ref[~normal]) < tiny).all()
    overflow = -big.astype(np.float64) > np.log(np.finfo(np.float32).max)
    assert overflow.any() and (y[overflow] == 0).all()


@pytest.mark.parametrize(
    "backward, ref",
    [
        (F.relu_backward, lambda dy, x: dy * (x > 0)),
        (lambda dy, x: F.leaky_relu_backward(dy, x, 0.1), lambda dy, x: dy * np.where(x > 0, 1, np.float32(0.1))),
        (F.sigmoid_backward, lambda dy, y: dy * (y * (1 - y))),
        (F.tanh_backward, lambda dy, y: dy * (1 - y * y)),
    ],
    ids=["relu", "leaky_relu", "sigmoid", "tanh"],
)
def test_elementwise_backward_blocks(big, rng, blocks, backward, ref):
    x = big / 30
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    got = backward(dy, x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref(dy, x), rtol=1e-6, atol=1e-7)


def test_blocking_gives_identical_bits(big, rng, monkeypatch):
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    ops = [F.relu, F.sigmoid, F.tanh, lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: F.avg_pool2d(x, 2),
           lambda x: F.max_pool2d_backward(F.max_pool2d(dy, 2), x, 2), lambda x: F.sigmoid_backward(dy, x / 30)]
    blocked = [op(big) for op in ops]
    _set_block_bytes(monkeypatch, 2**40)  # one block: the ufuncs see whole arrays
    for a, b in zip(blocked, [op(big) for op in ops]):
        np.testing.assert_array_equal(a, b)


def test_non_contiguous_input(big, blocks):
    xt = big.transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(F.relu(xt), np.maximum(xt, 0))
    np.testing.assert_array_equal(F.max_pool2d(xt, 2), xt[:, :, :128, :128].reshape(2, 32, 64, 2, 64, 2).max(axis=(3, 5)))


# ---------------------------------------------------------------- pooling


def test_tiled_pooling_blocks_match_reshape(rng, blocks):
    x = rng.standard_normal((4, 24, 64, 64)).astype(np.float32)
    r = x.reshape(4, 24, 32, 2, 32, 2)
    np.testing.assert_array_equal(F.max_pool2d(x, 2), r.max(axis=(3, 5)))
    np.testing.assert_allclose(F.avg_pool2d(x, 2), r.astype(np.float64).mean(axis=(3, 5)), rtol=1e-6, atol=1e-7)


def _window_loop_backward(dy, x, k, s, p, mode):
    """Pooling gradient by a loop over output positions (vectorised over N and C), float64."""
    N, C, H, W = x.shape
    OH, OW = dy.shape[2:]
    fill = -np.inf if mode == "max" else 0.0
    xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    dxpad = np.zeros_like(xpad)
    n_idx, c_idx = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
    for oh in range(OH):
        for ow in range(OW):
            win = xpad[:, :, oh * s : oh * s + k, ow * s : ow * s + k].reshape(N, C, -1)
            if mode == "max":
                i, j = np.divmod(win.argmax(axis=2), k)  # first maximum: the one winner
                dxpad[n_idx, c_idx, oh * s + i, ow * s + j] += dy[:, :, oh, ow]
            else:
                dxpad[:, :, oh * s : oh * s + k, ow * s : ow * s + k] += dy[:, :, oh, ow, None, None] / (k * k)
    return dxpad[:, :, p : p + H, p : p + W]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 2, 1)])
def test_pooling_backward_blocks_match_loop(rng, blocks, mode, k, s, p):
    x = rng.standard_normal((2, 40, 40, 41)).astype(np.float32)  # 0.5 MiB in, dx 0.5 MiB: 1 MiB together
    fwd, bwd = (F.max_pool2d, F.max_pool2d_backward) if mode == "max" else (F.avg_pool2d, F.avg_pool2d_backward)
    y = fwd(x, k, s, p)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = bwd(dy, x, k, s, p)
    assert dx.dtype == np.float32 and dx.flags.c_contiguous
    np.testing.assert_allclose(dx, _window_loop_backward(dy, x, k, s, p, mode), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the machinery


def test_for_blocks_covers_range_once():
    seen = np.zeros(1001, dtype=int)
    _blocks.for_blocks(lambda lo, hi: seen.__setitem__(slice(lo, hi), seen[lo:hi] + 1), 1001, 64)
    assert (seen == 1).all()


def test_zeros_for_is_read_only_and_sized(big):
    out = np.empty(1000, dtype=np.float32)
    z = _blocks.zeros_for(out)
    assert z.shape == out.shape and z.dtype == out.dtype and not z.any()
    with pytest.raises(ValueError):
        z[0] = 1  # shared between calls: must never be written
    assert _blocks.zeros_for(big) == 0  # larger than a block: a scalar


def test_transposed_arrays_are_blocked_in_memory_order(big, blocks, monkeypatch):
    """A transposed input (the tutorial's (H, W, F) maps) is cut in memory order; the output keeps its layout."""
    hwf = big.transpose(2, 3, 0, 1)
    calls = []
    real = _blocks.for_blocks

    def counting(fn, n, block):
        calls.append(n)
        return real(fn, n, block)

    monkeypatch.setattr(_blocks, "for_blocks", counting)
    y = F.relu(hwf)
    assert calls == [hwf.size]  # blocked, not handed over whole
    assert y.strides == np.empty_like(hwf).strides
    np.testing.assert_array_equal(y, np.maximum(hwf, 0))
    mixed = F.relu_backward(np.ascontiguousarray(hwf), hwf)  # layouts differ: whole, still right
    np.testing.assert_array_equal(mixed, hwf * (hwf > 0))
