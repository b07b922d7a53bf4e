"""2-D convolution (cross-correlation, as in PyTorch) and its gradients.

Layout NCHW; weights ``(O, C // groups, KH, KW)``. Three algorithms compute
the same numbers:

``"einsum"``
    A strided window view of the padded input contracted with the weights by
    ``xp.einsum(..., optimize=True)``. Shortest code; the contraction copies
    the windows into an im2col-sized buffer internally.
``"gemm"``
    An explicit im2col buffer ``(N, G, C/G*KH*KW, OH*OW)`` and one batched
    matrix product (BLAS / cuBLAS), written straight into the NCHW output.
``"shift"``
    One matrix product per kernel offset, accumulated; no im2col buffer. For
    stride 1 each offset is a shifted, contiguous slice of the flattened
    padded image, so no data is copied per offset.
``"auto"``
    Chooses by shape (see :func:`choose_algo`).

Every algorithm processes the batch in chunks so that its temporary buffers
stay within ``xpcnn.config.workspace_bytes``.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import config
from ..backend import Array, get_array_module
from ._utils import check_float, check_ndim, check_same, out_size, pair

ALGOS = ("auto", "einsum", "gemm", "shift")


class ConvGeometry(NamedTuple):
    """Every size of one convolution, named as in the code that uses them."""

    N: int
    C: int
    H: int
    W: int
    O: int  # noqa: E741 -- PyTorch's name for the output channels
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    DH: int
    DW: int
    G: int
    OH: int
    OW: int

    @property
    def K(self) -> int:
        """Length of one im2col column: ``C/G * KH * KW``."""
        return self.C // self.G * self.KH * self.KW

    @property
    def L(self) -> int:
        """Output positions per image: ``OH * OW``."""
        return self.OH * self.OW


def conv_geometry(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1) -> ConvGeometry:
    """Check the arguments of a convolution and compute its output size.

    Raises
    ------
    ValueError
        If a shape, channel count, group count, stride, padding or dilation is
        inconsistent; the message names the expected and the actual value.
    TypeError
        If `groups` is not an int or a size is not an int or a pair.
    """
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x_shape)} ({len(x_shape)}-D)")
    if len(w_shape) != 4:
        raise ValueError(f"w must be 4-D (O, C // groups, KH, KW), got shape {tuple(w_shape)} ({len(w_shape)}-D)")
    N, C, H, W = (int(s) for s in x_shape)
    O, Cg, KH, KW = (int(s) for s in w_shape)  # noqa: E741
    SH, SW = pair(stride, "stride", 1)
    PH, PW = pair(padding, "padding", 0)
    DH, DW = pair(dilation, "dilation", 1)
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if C % groups or O % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels ({C}) and the output channels ({O})"
        )
    if Cg != C // groups:
        raise ValueError(
            f"w expects {Cg * groups} input channels (w.shape[1]={Cg} x groups={groups}), "
            f"but x has {C} (x.shape={tuple(x_shape)}, w.shape={tuple(w_shape)})"
        )
    if min(N, C, H, W, O, KH, KW) < 1:
        raise ValueError(f"empty convolution: x.shape={tuple(x_shape)}, w.shape={tuple(w_shape)}")
    eKH, eKW = DH * (KH - 1) + 1, DW * (KW - 1) + 1
    if eKH > H + 2 * PH or eKW > W + 2 * PW:
        raise ValueError(
            f"kernel ({eKH}, {eKW}) (with dilation {(DH, DW)}) is larger than the padded input "
            f"({H + 2 * PH}, {W + 2 * PW}) (input {(H, W)}, padding {(PH, PW)})"
        )
    OH, OW = out_size(H, KH, SH, PH, DH), out_size(W, KW, SW, PW, DW)
    return ConvGeometry(N, C, H, W, O, KH, KW, SH, SW, PH, PW, DH, DW, groups, OH, OW)


def _check_arrays(x: Array, w: Array, b: Array | None, O: int) -> None:  # noqa: E741
    check_float(x, "x")
    check_float(w, "w")
    check_same(x, w, "x and w")
    if b is not None:
        check_float(b, "b")
        check_same(x, b, "x and b")
        if tuple(b.shape) != (O,):
            raise ValueError(f"b must have shape ({O},) (one value per output channel), got {tuple(b.shape)}")


def choose_algo(g: ConvGeometry, xp=None) -> str:
    """The algorithm ``algo="auto"`` runs for a convolution of geometry `g`.

    The rule comes from measurements (see the README's Performance section):
    the shift algorithm needs enough input channels per group to make each
    per-offset matrix product worth a BLAS call; below that, one im2col GEMM
    with the channels and offsets together wins.
    """
    if g.C // g.G >= 16 and g.SH == g.SW == 1:
        return "shift"
    return "gemm"


def _pad(x: Array, g: ConvGeometry, extra_rows: int = 0) -> Array:
    """Zero-pad the spatial dims (and add `extra_rows` at the bottom)."""
    if g.PH == g.PW == extra_rows == 0:
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (g.PH, g.PH + extra_rows), (g.PW, g.PW)))


def _windows(xpad: Array, g: ConvGeometry) -> Array:
    """Read-only view ``(N, G, C/G, OH, OW, KH, KW)`` of every receptive field."""
    xp = get_array_module(xpad)
    eKH, eKW = g.DH * (g.KH - 1) + 1, g.DW * (g.KW - 1) + 1
    win = xp.lib.stride_tricks.sliding_window_view(xpad, (eKH, eKW), axis=(2, 3))
    win = win[:, :, :: g.SH, :: g.SW, :: g.DH, :: g.DW][:, :, : g.OH, : g.OW]
    n = xpad.shape[0]
    return win.reshape(n, g.G, g.C // g.G, g.OH, g.OW, g.KH, g.KW)


def _im2col(xpad: Array, g: ConvGeometry) -> Array:
    """Contiguous ``(N, G, C/G*KH*KW, OH*OW)`` im2col matrix of a padded chunk."""
    xp = get_array_module(xpad)
    cols = _windows(xpad, g).transpose(0, 1, 2, 5, 6, 3, 4)
    return xp.ascontiguousarray(cols).reshape(xpad.shape[0], g.G, g.K, g.L)


def _offset_slice(g: ConvGeometry, i: int, j: int) -> tuple[slice, slice]:
    """Rows and columns of the padded input that kernel offset (i, j) reads."""
    r0, c0 = i * g.DH, j * g.DW
    return (slice(r0, r0 + g.SH * (g.OH - 1) + 1, g.SH), slice(c0, c0 + g.SW * (g.OW - 1) + 1, g.SW))


def _chunk(g: ConvGeometry, per_sample_bytes: int) -> int:
    """Batch chunk size that keeps temporaries under ``config.workspace_bytes``."""
    return max(1, min(g.N, int(config.workspace_bytes) // max(1, per_sample_bytes)))


def _grouped_weights(w: Array, g: ConvGeometry) -> Array:
    return w.reshape(g.G, g.O // g.G, g.C // g.G, g.KH, g.KW)


def _forward_einsum(x, w, g, y):
    xp = get_array_module(x)
    wg = _grouped_weights(w, g)
    Hp, Wp = g.H + 2 * g.PH, g.W + 2 * g.PW
    # einsum copies the windows (im2col-sized, once more for its own reordering) and its output.
    per_sample = x.itemsize * (g.C * Hp * Wp + 2 * g.C * g.KH * g.KW * g.L + 2 * g.O * g.L)
    step = _chunk(g, per_sample)
    for n0 in range(0, g.N, step):
        win = _windows(_pad(x[n0 : n0 + step], g), g)
        out = xp.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True)
        y[n0 : n0 + step] = out.reshape(out.shape[0], g.O, g.OH, g.OW)
        del win, out  # free before the next chunk allocates its own


def _forward_gemm(x, w, g, y):
    xp = get_array_module(x)
    wk = w.reshape(g.G, g.O // g.G, g.K)
    Hp, Wp = g.H + 2 * g.PH, g.W + 2 * g.PW
    per_sample = x.itemsize * (g.C * Hp * Wp + g.G * g.K * g.L)
    step = _chunk(g, per_sample)
    for n0 in range(0, g.N, step):
        col = _im2col(_pad(x[n0 : n0 + step], g), g)
        yc = y[n0 : n0 + step].reshape(col.shape[0], g.G, g.O // g.G, g.L)
        xp.matmul(wk, col, out=yc)
        del col  # free before the next chunk allocates its own


def _forward_shift(x, w, g, y):
    xp = get_array_module(x)
    G, Og, Cg = g.G, g.O // g.G, g.C // g.G
    wg = _grouped_weights(w, g)
    Hp, Wp = g.H + 2 * g.PH, g.W + 2 * g.PW
    flat = g.SH == g.SW == 1
    if flat:
        # Output row r, column c of offset (i, j) reads flat[(r + i*DH) * Wp + c + j*DW]:
        # one contiguous slice per offset, computed over all Wp columns and cropped
        # to OW at the end. The extra bottom row keeps the last slice in bounds.
        span = g.OH * Wp
        per_sample = x.itemsize * (g.C * (Hp + 1) * Wp + 2 * g.O * span)
    else:
        span = g.L
        per_sample = x.itemsize * (g.C * Hp * Wp + 2 * g.C * span + 2 * g.O * span)
    step = _chunk(g, per_sample)
    for n0 in range(0, g.N, step):
        xc = x[n0 : n0 + step]
        n = xc.shape[0]
        xpad = _pad(xc, g, extra_rows=1 if flat else 0)
        if flat:
            xflat = xpad.reshape(n, G, Cg, -1)
        acc = xp.zeros((n, G, Og, span), dtype=x.dtype)
        tmp = xp.empty_like(acc)
        for i in range(g.KH):
            for j in range(g.KW):
                if flat:
                    s = i * g.DH * Wp + j * g.DW
                    xs = xflat[..., s : s + span]
                else:
                    rows, cols = _offset_slice(g, i, j)
                    xs = xp.ascontiguousarray(xpad[:, :, rows, cols]).reshape(n, G, Cg, span)
                xp.matmul(wg[:, :, :, i, j], xs, out=tmp)
                acc += tmp
        if flat:
            y[n0 : n0 + step] = acc.reshape(n, g.O, g.OH, Wp)[..., : g.OW]
        else:
            y[n0 : n0 + step] = acc.reshape(n, g.O, g.OH, g.OW)
        del xpad, acc, tmp  # free before the next chunk allocates its own


_FORWARD = {"einsum": _forward_einsum, "gemm": _forward_gemm, "shift": _forward_shift}


def conv2d(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, algo="auto"):
    """2-D convolution of a batch of images, as ``torch.nn.functional.conv2d``.

    Computes a cross-correlation: the kernel is *not* flipped.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
        Input batch (NumPy or CuPy).
    w : array, shape (O, C // groups, KH, KW), same dtype and backend as `x`
        Filters.
    b : array, shape (O,), optional
        Bias added to every output position of each channel.
    stride, padding, dilation : int or (int, int)
        Step between windows (>= 1), zeros added on each side (>= 0), and
        spacing between kernel taps (>= 1).
    groups : int
        Split input and output channels into `groups` independent convolutions.
    algo : {"auto", "einsum", "gemm", "shift"}
        Which algorithm computes the result (all give the same numbers up to
        rounding); ``"auto"`` chooses by shape with :func:`choose_algo`.

    Returns
    -------
    y : array, shape (N, O, OH, OW), dtype of `x`
        ``OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1``, likewise ``OW``.

    Raises
    ------
    TypeError
        Non-float dtypes, mismatched dtypes or backends.
    ValueError
        Wrong dimensions, channel or group mismatch, kernel larger than the
        padded input, stride or dilation < 1, unknown `algo`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2), dtype=np.float32)
    >>> F.conv2d(x, w)[0, 0]
    array([[10., 14., 18.],
           [26., 30., 34.],
           [42., 46., 50.]], dtype=float32)
    """
    check_float(x, "x")
    check_ndim(x, 4, "x", "(N, C, H, W)")
    check_float(w, "w")
    g = conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    _check_arrays(x, w, b, g.O)
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {', '.join(ALGOS)}, got {algo!r}")
    xp = get_array_module(x)
    if algo == "auto":
        algo = choose_algo(g, xp)
    y = xp.empty((g.N, g.O, g.OH, g.OW), dtype=x.dtype)
    _FORWARD[algo](x, w, g, y)
    if b is not None:
        y += b.reshape(1, g.O, 1, 1)
    return y


def conv2d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of :func:`conv2d` with respect to its input, weights and bias.

    Parameters
    ----------
    dy : array, shape (N, O, OH, OW)
        Gradient of the loss with respect to the output of ``conv2d``.
    x, w : arrays
        The input and weights given to ``conv2d``.
    stride, padding, dilation, groups
        As given to ``conv2d``.

    Returns
    -------
    dx : array, shape of `x`
    dw : array, shape of `w`
    db : array, shape (O,)
        The bias gradient (whether or not the forward pass used a bias).

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d`, and if `dy` does not have the output's shape.
    """
    check_float(x, "x")
    check_ndim(x, 4, "x", "(N, C, H, W)")
    check_float(w, "w")
    g = conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    _check_arrays(x, w, None, g.O)
    check_float(dy, "dy")
    check_same(x, dy, "x and dy")
    if tuple(dy.shape) != (g.N, g.O, g.OH, g.OW):
        raise ValueError(f"dy must have the output's shape {(g.N, g.O, g.OH, g.OW)}, got {tuple(dy.shape)}")
    xp = get_array_module(x)
    G, Og = g.G, g.O // g.G
    wk = w.reshape(G, Og, g.K)
    wkT = wk.transpose(0, 2, 1)
    Hp, Wp = g.H + 2 * g.PH, g.W + 2 * g.PW
    dx = xp.empty_like(x)
    dw = xp.zeros((G, Og, g.K), dtype=x.dtype)
    per_sample = x.itemsize * (2 * g.C * Hp * Wp + 2 * G * g.K * g.L)
    step = _chunk(g, per_sample)
    for n0 in range(0, g.N, step):
        xc = x[n0 : n0 + step]
        n = xc.shape[0]
        col = _im2col(_pad(xc, g), g)
        dyc = dy[n0 : n0 + step].reshape(n, G, Og, g.L)
        dw += xp.matmul(dyc, col.transpose(0, 1, 3, 2)).sum(axis=0)
        del col
        dcol = xp.matmul(wkT, dyc).reshape(n, g.C, g.KH, g.KW, g.OH, g.OW)
        dxpad = xp.zeros((n, g.C, Hp, Wp), dtype=x.dtype)
        for i in range(g.KH):
            for j in range(g.KW):
                rows, cols = _offset_slice(g, i, j)
                dxpad[:, :, rows, cols] += dcol[:, :, i, j]
        dx[n0 : n0 + step] = dxpad[:, :, g.PH : g.PH + g.H, g.PW : g.PW + g.W]
        del dcol, dxpad  # free before the next chunk allocates its own
    db = dy.sum(axis=(0, 2, 3))
    return dx, dw.reshape(w.shape), db
