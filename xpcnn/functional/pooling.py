"""Max and average pooling over NCHW batches, and their gradients.

Both loop over the ``KH * KW`` offsets of the window and combine strided
slices of the (padded) input: one vectorised pass per offset, no window
buffer, which is the fastest form on NumPy and CuPy alike. On NumPy the
passes run over cache-sized blocks of whole planes.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import Array, get_array_module, is_device
from . import _blocks
from ._utils import check_float, check_ndim, check_same, memo_plain, out_size, pair


class PoolGeometry(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    OH: int
    OW: int
    I0: int  # the window offsets that can reach the input: rows [I0, I1), columns [J0, J1)
    I1: int
    J0: int
    J1: int

    def window(self, i: int, j: int) -> tuple[slice, slice]:
        """Rows and columns of the padded input that window offset (i, j) reads."""
        return (
            slice(i, i + self.SH * (self.OH - 1) + 1, self.SH),
            slice(j, j + self.SW * (self.OW - 1) + 1, self.SW),
        )


def pool_geometry(x: Array, kernel_size, stride=None, padding=0) -> PoolGeometry:
    """Check pooling arguments and compute the output size (PyTorch's floor formula).

    Raises
    ------
    TypeError
        `x` is not a float32/float64 array, or a size is not an int or a pair.
    ValueError
        `x` is not 4-D, kernel or stride < 1, padding > kernel // 2 (as in
        PyTorch), or the window is larger than the padded input.
    """
    check_float(x, "x")
    check_ndim(x, 4, "x", "(N, C, H, W)")
    return _pool_geometry(tuple(x.shape), kernel_size, stride, padding)


@memo_plain(trusted=1)
def _pool_geometry(shape: tuple, kernel_size, stride, padding) -> PoolGeometry:
    N, C, H, W = shape
    if min(N, C, H, W) < 1:
        raise ValueError(f"empty pooling input: x.shape={shape} (N, C, H, W must all be >= 1)")
    KH, KW = pair(kernel_size, "kernel_size", 1)
    SH, SW = (KH, KW) if stride is None else pair(stride, "stride", 1)
    PH, PW = pair(padding, "padding", 0)
    if PH > KH // 2 or PW > KW // 2:
        raise ValueError(f"padding {(PH, PW)} must be at most half the kernel size {(KH, KW)}")
    if KH > H + 2 * PH or KW > W + 2 * PW:
        raise ValueError(f"pooling window {(KH, KW)} is larger than the padded input {(H + 2 * PH, W + 2 * PW)}")
    OH, OW = out_size(H, KH, SH, PH), out_size(W, KW, SW, PW)
    (PH, I0, I1), (PW, J0, J1) = _reach(H, KH, SH, PH, OH), _reach(W, KW, SW, PW, OW)
    return PoolGeometry(N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, I0, I1, J0, J1)


def _reach(size: int, k: int, s: int, p: int, o: int) -> tuple[int, int, int]:
    """``(padding, first offset, end offset)`` along one axis, keeping only what reaches the input.

    A window offset whose strided slice reads only padding adds nothing
    (``-inf`` to a max, 0 to a sum), nor does padding no kept offset reads:
    both are dropped, so a huge kernel with huge padding costs what the
    input and output do, not ``k * k`` passes over a ``(size + 2p)``-wide frame.
    Offsets are counted in the frame padded by the returned padding.
    """
    span = s * (o - 1)  # rows between the first and the last window's starts
    lo, hi = max(0, p - span), min(k, p + size)
    pad = max(min(p, span), span + min(0, k - p - size))
    return pad, lo - (p - pad), hi - (p - pad)


def _pad(x: Array, g: PoolGeometry, value: float) -> Array:
    if g.PH == g.PW == 0:
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (g.PH, g.PH), (g.PW, g.PW)), constant_values=value)


def _fold_windows(xpad: Array, g: PoolGeometry, op, out: Array) -> None:
    """Combine the ``KH * KW`` strided slices of `xpad` with the ufunc `op` into `out`."""
    for i in range(g.I0, g.I1):
        for j in range(g.J0, g.J1):
            s = xpad[(slice(None), slice(None)) + g.window(i, j)]
            if i == g.I0 and j == g.J0:
                out[...] = s
            else:
                op(out, s, out=out)


def _by_planes(fn, g: PoolGeometry, *arrays: Array) -> None:
    """``fn(*blocks)`` over cache-sized blocks of whole ``(H, W)`` planes of the NCHW `arrays`.

    Each array is seen as ``(1, N*C, h, w)`` and cut along the planes: the
    windows of one plane never reach another, so each block is a complete
    pooling problem whose passes stay in the cache (see ``_blocks``).
    Device and non-contiguous arrays go whole, in one call.
    """
    if is_device(get_array_module(arrays[0])) or not all(a.flags.c_contiguous for a in arrays):
        fn(*arrays)
        return
    planes = [a.reshape(1, g.N * g.C, *a.shape[2:]) for a in arrays]
    plane_bytes = sum(a[0, 0].nbytes for a in planes)
    _blocks.for_blocks(lambda lo, hi: fn(*(a[:, lo:hi] for a in planes)), g.N * g.C, _blocks.BLOCK_BYTES // plane_bytes)


def _check_dy(dy: Array, x: Array, g: PoolGeometry) -> None:
    check_float(dy, "dy")
    check_same(x, dy, "x and dy")
    if tuple(dy.shape) != (g.N, g.C, g.OH, g.OW):
        raise ValueError(f"dy must have the output's shape {(g.N, g.C, g.OH, g.OW)}, got {tuple(dy.shape)}")


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling, as ``torch.nn.functional.max_pool2d`` (floor mode).

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to `kernel_size`.
    padding : int or (int, int)
        Implicit ``-inf`` padding on each side, at most ``kernel_size // 2``.

    Returns
    -------
    array, shape (N, C, OH, OW), dtype of `x`

    Raises
    ------
    TypeError, ValueError
        See :func:`pool_geometry`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.max_pool2d(x, 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> F.max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2)[0, 0]  # to each window's maximum
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """
    g = pool_geometry(x, kernel_size, stride, padding)
    xp = get_array_module(x)
    y = xp.empty((g.N, g.C, g.OH, g.OW), dtype=x.dtype)
    _by_planes(lambda xb, yb: _fold_windows(_pad(xb, g, float("-inf")), g, xp.maximum, yb), g, x, y)
    return y


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, *, y=None):
    """Gradient of :func:`max_pool2d` with respect to `x`.

    Each output's gradient goes to the position of its window's maximum; when
    several positions tie, the first in row-major window order wins (one
    winner, so the gradient's total is preserved).

    Parameters
    ----------
    dy : array, shape (N, C, OH, OW)
    x : array, shape (N, C, H, W)
        The input given to ``max_pool2d``.
    kernel_size, stride, padding
        As given to ``max_pool2d``.
    y : array, shape (N, C, OH, OW), optional
        ``max_pool2d``'s output, if kept; otherwise it is recomputed.

    Returns
    -------
    dx : array, shape of `x`
    """
    xp = get_array_module(x)
    g = pool_geometry(x, kernel_size, stride, padding)
    _check_dy(dy, x, g)
    if y is None:
        y = max_pool2d(x, kernel_size, stride, padding)
    elif tuple(y.shape) != tuple(dy.shape):
        raise ValueError(f"y must be max_pool2d's output, shape {tuple(dy.shape)}, got {tuple(y.shape)}")
    dx = xp.empty_like(x)
    _by_planes(lambda *blocks: _max_pool_backward_block(g, *blocks), g, dy, x, y, dx)
    return dx


def _max_pool_backward_block(g: PoolGeometry, dy: Array, x: Array, y: Array, dx: Array) -> None:
    xp = get_array_module(x)
    xpad = _pad(x, g, float("-inf"))
    overlapping = g.SH < g.KH or g.SW < g.KW
    # Windows that tile the input write every position once: no need to clear it first.
    tiled = (g.SH, g.SW) == (g.KH, g.KW) and g.OH * g.KH == g.H and g.OW * g.KW == g.W
    dxpad = _grad_frame(dx, g, clear=not tiled)
    offsets = [(i, j) for i in range(g.I0, g.I1) for j in range(g.J0, g.J1)]
    free = None  # outputs whose winner is not found yet; None before the first offset: all
    for k, (i, j) in enumerate(offsets):
        win = (slice(None), slice(None)) + g.window(i, j)
        hit = xpad[win] == y
        if free is not None:
            hit &= free
        if k + 1 < len(offsets):  # later offsets skip the outputs won here
            if free is None:
                free = ~hit
            else:
                free ^= hit  # hit is a subset of free
        if overlapping:
            dxpad[win] += dy * hit
        else:  # each input position is in one window only
            xp.multiply(dy, hit, out=dxpad[win])
    _crop_into(dxpad, dx, g)


def _grad_frame(dx: Array, g: PoolGeometry, clear: bool = True) -> Array:
    """Where a block's input gradient is gathered: `dx` itself, or a zeroed padded copy.

    Give the result to :func:`_crop_into` when done.
    """
    if g.PH or g.PW:
        xp = get_array_module(dx)
        return xp.zeros((dx.shape[0], dx.shape[1], g.H + 2 * g.PH, g.W + 2 * g.PW), dtype=dx.dtype)
    if clear:
        dx[...] = 0
    return dx


def _crop_into(dxpad: Array, dx: Array, g: PoolGeometry) -> None:
    if dxpad is not dx:
        dx[...] = dxpad[:, :, g.PH : g.PH + g.H, g.PW : g.PW + g.W]


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling, as ``torch.nn.functional.avg_pool2d`` (floor mode).

    Padded zeros count in the average (PyTorch's ``count_include_pad=True``).

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    kernel_size, stride, padding
        As :func:`max_pool2d` (zero padding).

    Returns
    -------
    array, shape (N, C, OH, OW), dtype of `x`

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.avg_pool2d(x, 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    >>> F.avg_pool2d(np.ones((1, 1, 2, 2)), 2, padding=1)[0, 0]  # padded zeros count
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    g = pool_geometry(x, kernel_size, stride, padding)
    xp = get_array_module(x)
    y = xp.empty((g.N, g.C, g.OH, g.OW), dtype=x.dtype)
    scale = x.dtype.type(1.0 / (g.KH * g.KW))

    def block(xb, yb):
        _fold_windows(_pad(xb, g, 0.0), g, xp.add, yb)
        yb *= scale

    _by_planes(block, g, x, y)
    return y


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """Gradient of :func:`avg_pool2d`: each output's gradient spread evenly over its window.

    Parameters
    ----------
    dy : array, shape (N, C, OH, OW)
    x : array, shape (N, C, H, W)
        The input given to ``avg_pool2d`` (only its shape and dtype are used).

    Returns
    -------
    dx : array, shape of `x`
    """
    xp = get_array_module(x)
    g = pool_geometry(x, kernel_size, stride, padding)
    _check_dy(dy, x, g)
    scale = x.dtype.type(1.0 / (g.KH * g.KW))
    dx = xp.empty_like(x)

    def block(dyb, dxb):
        share = dyb * scale
        dxpad = _grad_frame(dxb, g)
        for i in range(g.I0, g.I1):
            for j in range(g.J0, g.J1):
                dxpad[(slice(None), slice(None)) + g.window(i, j)] += share
        _crop_into(dxpad, dxb, g)

    _by_planes(block, g, dy, dx)
    return dx
