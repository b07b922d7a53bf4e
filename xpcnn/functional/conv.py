"""2-D convolution (cross-correlation, as in PyTorch) and its gradients.

Layout NCHW; weights ``(O, C // groups, KH, KW)``. Four algorithms compute
the same numbers:

``"einsum"``
    A strided window view of the padded input contracted with the weights by
    ``xp.einsum(..., optimize=True)``. Shortest code; the contraction copies
    the windows into an im2col-sized buffer internally.
``"gemm"``
    An explicit im2col buffer ``(N, G, C/G*KH*KW, OH*OW)`` and one batched
    matrix product (BLAS / cuBLAS), written straight into the NCHW output.
``"shift"``
    One matrix product per kernel offset, accumulated; no im2col buffer:
    each offset reads a shifted, contiguous slice of the flattened padded
    image (see :class:`_Phases`), so no data is copied per offset.
``"rows"``
    Between the two: the ``KW`` column shifts are copied once (a buffer of
    ``KW`` times the input, not ``KH * KW``), then one matrix product per
    kernel row, accumulated. Deeper products than ``"shift"``, a third of
    the copying of ``"gemm"`` for 3x3 kernels.
``"tiles"``
    One image at a time, in tiles of whole output rows: the tile's exact
    im2col (no junk columns) and one matrix product written straight into
    the output. With few output channels each im2col column serves several
    output rows (stacked filters: a taller product, less copying). The
    fastest for a single image (the tutorial's layers).
``"auto"``
    Picks by a rule from measurements, or, with ``config.conv_autotune``,
    times ``"gemm"``, ``"rows"``, ``"shift"`` and ``"tiles"`` on the first call with a
    geometry and keeps the fastest (see :func:`choose_algo`).

Every algorithm processes the batch in chunks so that its temporary buffers
stay within ``xpcnn.config.workspace_bytes``.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import NamedTuple

from .. import config
from ..backend import Array, get_array_module, is_device, synchronize
from ._utils import check_float, check_ndim, check_same, int_arg, memo_plain, out_size, pair

ALGOS = ("auto", "einsum", "gemm", "shift", "rows", "tiles")


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


@memo_plain(trusted=2)
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
    groups = int_arg(groups, "groups", 1)
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
    """Backends, dtypes and the bias, once `x` and `w` are known to be float arrays."""
    check_same(x, w, "x and w")
    if b is not None:
        check_float(b, "b")
        check_same(x, b, "x and b")
        if tuple(b.shape) != (O,):
            raise ValueError(f"b must have shape ({O},) (one value per output channel), got {tuple(b.shape)}")


def rule_algo(g: ConvGeometry, xp=None) -> str:
    """The algorithm a fixed rule picks for geometry `g` on module `xp` (no timing).

    ``"gemm"`` for strided convolutions (its im2col reads each stride phase
    once), for batches with at most 6 input channels per group (one GEMM
    with all taps is deeper than ``"rows"``' per-row GEMMs; with 6, LeNet-5's
    second layer, the two tie alone, but a training step ran 3.5-5% faster
    with ``"gemm"``) and on a GPU (one cuBLAS call per chunk, the fewest
    launches); ``"tiles"`` for a single image
    (the tutorial's three layers: 1.05-1.5x faster than ``"rows"``, the
    fastest of the others; on batches its per-image products were up to
    1.8x slower); ``"rows"`` elsewhere. It was fitted
    on one CPU; on another it picked an algorithm 6-18% slower than the best
    for one shape of six, which ``config.conv_autotune`` avoids by timing.
    """
    if (xp is not None and is_device(xp)) or max(g.SH, g.SW) > 1:
        return "gemm"
    if g.N > 1 and g.C // g.G <= 6:
        return "gemm"
    if g.N == 1:
        return "tiles"
    return "rows"


#: What ``"auto"`` times on first use of a geometry. ``"einsum"`` is left out:
#: it copies as much as ``"gemm"`` and never came within 2x of the best.
CANDIDATES = ("gemm", "rows", "shift", "tiles")

#: Timed calls per candidate in a trial, back to back after one untimed call
#: (as the winner will run: with its own buffers in the caches); the fastest
#: counts, so one call slowed by another process does not decide.
TRIAL_ROUNDS = 3

_tuned: dict = {}  # (backend, device, geometry, dtype) -> the trial's winner


def _tune_key(g: ConvGeometry, xp, dtype) -> tuple:
    device = xp.cuda.Device().id if is_device(xp) else None
    return (xp.__name__, device, tuple(g), xp.dtype(dtype).name)


def choose_algo(g: ConvGeometry, xp=None, dtype="float32") -> str:
    """The algorithm ``algo="auto"`` runs for geometry `g` on module `xp`.

    With ``config.conv_autotune`` (off by default, like cuDNN's benchmark
    mode), the winner of the trial that timed every algorithm of
    :data:`CANDIDATES` on the first ``"auto"`` call with this geometry, dtype
    and device; otherwise, or before that trial, :func:`rule_algo`'s pick.
    """
    if xp is not None and config.conv_autotune:
        tuned = _tuned.get(_tune_key(g, xp, dtype))
        if tuned is not None:
            return tuned
    return rule_algo(g, xp)


def _trial(x: Array, w: Array, g: ConvGeometry, y: Array) -> str:
    """Time each candidate on the actual arrays (writing `y`) and remember the fastest."""
    xp = get_array_module(x)
    best = {}
    for algo in CANDIDATES:
        _FORWARD[algo](x, w, g, y)  # untimed: workspaces, plans, CuPy's kernel compilation
        synchronize(xp)
        for _ in range(TRIAL_ROUNDS):
            t0 = time.perf_counter()
            _FORWARD[algo](x, w, g, y)
            synchronize(xp)
            best[algo] = min(best.get(algo, float("inf")), time.perf_counter() - t0)
    winner = min(best, key=best.get)
    _tuned[_tune_key(g, xp, x.dtype)] = winner
    return winner


def clear_autotune_cache() -> None:
    """Forget every trial: the next ``"auto"`` call of each geometry times the candidates again."""
    _tuned.clear()


def _pad(x: Array, g: ConvGeometry) -> Array:
    """Zero-pad the spatial dims."""
    if g.PH == g.PW == 0:
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (g.PH, g.PH), (g.PW, g.PW)))


def _windows(xpad: Array, g: ConvGeometry) -> Array:
    """View ``(N, G, C/G, OH, OW, KH, KW)`` of every receptive field (overlapping: never write to it)."""
    xp = get_array_module(xpad)
    # Strides by hand, not sliding_window_view: CuPy's checks the window shape
    # on the device, a device-to-host sync per dimension on every call.
    Cg = g.C // g.G
    sN, sC, sH, sW = xpad.strides
    shape = (xpad.shape[0], g.G, Cg, g.OH, g.OW, g.KH, g.KW)
    strides = (sN, sC * Cg, sC, sH * g.SH, sW * g.SW, sH * g.DH, sW * g.DW)
    return xp.lib.stride_tricks.as_strided(xpad, shape, strides)


#: Per-chunk temporaries that fit the CPU's caches: measured faster than one
#: large chunk on NumPy (the im2col copy and the GEMM stay in L2/L3). 8 MiB
#: was the best on an AVX2 machine; on an AVX-512 one (1 MiB of L2 per core)
#: 4 MiB ran 0.65-0.99x the time of 8 MiB in 9 of 11 forward and backward
#: cases (shapes C-F, both OpenBLAS kernel sets), 1.05-1.10x in two.
CACHE_CHUNK_BYTES = 4 * 2**20


def _chunk(g: ConvGeometry, per_sample_bytes: int, xp=None) -> int:
    """Batch chunk size that keeps temporaries under ``config.workspace_bytes``.

    Given a host module `xp`, also under :data:`CACHE_CHUNK_BYTES` (on a GPU,
    larger chunks mean fewer kernel launches).
    """
    limit = int(config.workspace_bytes)
    if xp is not None and not is_device(xp):
        limit = min(limit, CACHE_CHUNK_BYTES)
    return max(1, min(g.N, limit // max(1, per_sample_bytes)))


def _grouped_weights(w: Array, g: ConvGeometry) -> Array:
    return w.reshape(g.G, g.O // g.G, g.C // g.G, g.KH, g.KW)


def _forward_einsum(x, w, g, y, bias=None):
    xp = get_array_module(x)
    wg = _grouped_weights(w, g)
    Hp, Wp = g.H + 2 * g.PH, g.W + 2 * g.PW
    # einsum copies the windows (im2col-sized, once more for its own reordering) and its output.
    per_sample = x.itemsize * (g.C * Hp * Wp + 2 * g.C * g.KH * g.KW * g.L + 2 * g.O * g.L)
    step = _chunk(g, per_sample)
    for n0 in range(0, g.N, step):
        win = _windows(_pad(x[n0 : n0 + step], g), g)
        out = xp.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True)
        _store(y[n0 : n0 + step], out.reshape(out.shape[0], g.O, g.OH, g.OW), bias)
        del win, out  # free before the next chunk allocates its own


class _Phases:
    """The padded input as flattened polyphase images, one per stride phase a tap reads.

    Phase ``(a, b)`` holds the padded rows ``a, a + SH, ...`` and columns
    ``b, b + SW, ...``, flattened row-major with row length ``Wph`` and one
    spare zero row. Kernel tap ``(i, j)`` then reads, for all output positions
    at once, the *contiguous* slice ``[s0, s0 + OH * Wph)`` of one phase: each
    output row is followed by ``Wph - OW`` junk columns, cropped at the end.
    So an im2col row is one contiguous copy, and a per-tap matrix product
    needs no copy at all. With stride 1 there is a single phase. Only the
    phases some tap reads are kept (at most ``KH * KW`` of the ``SH * SW``),
    so neither time nor memory grows with the stride; ``rows[a]`` and
    ``cols[b]`` give a phase's index in the buffer.
    """

    def __init__(self, g: ConvGeometry):
        self.g = g
        Hp, Wp = g.H + 2 * g.PH, g.W + 2 * g.PW
        self.Hph, self.Wph = -(-Hp // g.SH), -(-Wp // g.SW)
        self.L = g.OH * self.Wph  # output positions per image, junk columns included
        self.rows = {a: k for k, a in enumerate(sorted({i * g.DH % g.SH for i in range(g.KH)}))}
        self.cols = {b: k for k, b in enumerate(sorted({j * g.DW % g.SW for j in range(g.KW)}))}
        self.size = g.C * len(self.rows) * len(self.cols) * (self.Hph + 1) * self.Wph  # elements per image
        self.taps = []  # (t, a, b, s0): tap index i*KW + j, its phase's buffer index and slice start
        for i in range(g.KH):
            for j in range(g.KW):
                a, r = divmod(i * g.DH, g.SH)[::-1]
                b, c = divmod(j * g.DW, g.SW)[::-1]
                self.taps.append((i * g.KW + j, self.rows[a], self.cols[b], r * self.Wph + c))
        self.fills = []  # (a, b, phase rows, phase cols, input rows, input cols), a and b buffer indices
        covered = 0
        for a, ka in self.rows.items():
            xr0 = (a - g.PH) % g.SH  # first input row whose padded row is in phase a
            nr = len(range(xr0, g.H, g.SH))
            for b, kb in self.cols.items():
                xc0 = (b - g.PW) % g.SW
                nc = len(range(xc0, g.W, g.SW))
                if nr and nc:
                    k0, c0 = (xr0 + g.PH - a) // g.SH, (xc0 + g.PW - b) // g.SW
                    self.fills.append((ka, kb, slice(k0, k0 + nr), slice(c0, c0 + nc), slice(xr0, None, g.SH), slice(xc0, None, g.SW)))
                    covered += nr * nc
        self.partial = covered < g.H * g.W  # some input pixels are read by no tap

    def shape(self, n: int) -> tuple:
        return (len(self.rows), len(self.cols), n, self.g.C, self.Hph + 1, self.Wph)

    def split(self, x: Array, out: Array) -> Array:
        """Write chunk `x` ``(n, C, H, W)`` into `out` (``shape(n)``); return the flat view."""
        out[...] = 0
        for a, b, pr, pc, xr, xc in self.fills:
            out[a, b, :, :, pr, pc] = x[:, :, xr, xc]
        return out.reshape(*self.shape(x.shape[0])[:4], -1)

    def merge(self, grad: Array, dx: Array) -> None:
        """Inverse of :meth:`split` for gradients: read `grad` (``shape(n)``) into `dx`."""
        if self.partial:
            dx[...] = 0  # pixels no tap reads get no gradient
        for a, b, pr, pc, xr, xc in self.fills:
            dx[:, :, xr, xc] = grad[a, b, :, :, pr, pc]

    def slice(self, flat: Array, tap) -> Array:
        """``(n, C, L)`` view of the input values that `tap` multiplies."""
        _, a, b, s0 = tap
        return flat[a, b, :, :, s0 : s0 + self.L]


@functools.lru_cache(maxsize=256)
def _phases(g: ConvGeometry) -> _Phases:
    """The :class:`_Phases` of `g`, built once per geometry: its tap tables
    cost a small layer (LeNet-5's) more time than its copies."""
    return _Phases(g)


class _Crop(NamedTuple):
    """A convolution whose outer taps read only padding, on the frame its other taps read."""

    taps: tuple  # (rows, cols) slices of the kernel taps kept; () if no tap reads the input
    pads: tuple  # ((top, bottom), (left, right)) zeros around the input's read part
    inside: tuple  # (rows, cols) slices of the input that the kept taps read
    read: tuple  # the same rows and columns in the frame


@functools.lru_cache(maxsize=256)
def _reach(g: ConvGeometry) -> _Crop | None:
    """None when every tap reads the input (the usual case); else the smaller equivalent problem.

    A tap whose strided rows (or columns) all fall in the padding only adds
    zeros. Dropping those taps, and the padding only they read, keeps the
    frame within the input plus the output's span: huge padding with a
    matching dilation costs what the input and the output do.
    """
    axes = []
    for size, k, s, d, p, o in ((g.H, g.KH, g.SH, g.DH, g.PH, g.OH), (g.W, g.KW, g.SW, g.DW, g.PW, g.OW)):
        span = s * (o - 1)  # a tap reads padded rows i*d .. i*d + span
        t0 = max(0, -(-(p - span) // d))  # first tap reaching row p (the input's first)
        t1 = min(k, (p + size - 1) // d + 1)  # taps starting at or before the input's last row
        axes.append((size, d, p, span, t0, t1))
    if all(t0 == 0 and t1 == k for (_, _, _, _, t0, t1), k in zip(axes, (g.KH, g.KW))):
        return None
    if any(t1 <= t0 for *_, t0, t1 in axes):
        return _Crop((), (), (), ())
    taps, pads, inside, read = [], [], [], []
    for size, d, p, span, t0, t1 in axes:
        first, last = t0 * d - p, (t1 - 1) * d + span - p  # input rows of the frame's ends (may be outside)
        lo, hi = max(0, first), min(size, last + 1)
        taps.append(slice(t0, t1))
        pads.append((lo - first, last + 1 - hi))
        inside.append(slice(lo, hi))
        read.append(slice(lo - first, hi - first))
    return _Crop(tuple(taps), tuple(pads), tuple(inside), tuple(read))


def _frame(x: Array, crop: _Crop) -> Array:
    """The part of `x` the kept taps read, zero-padded as they read it."""
    xp = get_array_module(x)
    part = x[:, :, crop.inside[0], crop.inside[1]]
    return xp.pad(part, ((0, 0), (0, 0), *crop.pads))


_buffers = threading.local()


def _workspace(xp, role: str, shape: tuple, dtype) -> Array:
    """A scratch array kept between calls (per thread, backend, role and dtype).

    Reusing buffers avoids the page faults of fresh large allocations, which
    cost NumPy more than the copy into them. Contents are undefined. On a GPU
    the buffers are also per device and per CUDA stream: work queued on one
    stream may still be reading a buffer when another stream's work would
    overwrite it. Each stream used keeps its own buffers.
    """
    cache = getattr(_buffers, "cache", None)
    if cache is None:
        cache = _buffers.cache = {}
    size = 1
    for s in shape:
        size *= s
    device = (xp.cuda.Device().id, xp.cuda.get_current_stream().ptr) if is_device(xp) else None
    key = (xp.__name__, device, role, dtype)  # a dtype object hashes faster than its str()
    buf = cache.get(key)
    if buf is None or buf.size < size:
        cache.pop(key, None)  # free the old buffer before taking a larger one
        buf = cache[key] = xp.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def _fill_col(ph: _Phases, flat: Array, col: Array, images_inner: bool) -> None:
    """im2col: tap `t`'s contiguous slice of every image goes to row block `t`.

    With `images_inner`, `col` is ``(C, KH*KW, n, L)``: images side by side,
    so one matrix product per group covers the whole chunk (a wide,
    multithreaded GEMM; the GPU's layout, and the backward's above 4 input
    channels per group). Otherwise ``(n, C, KH*KW, L)``: one block per image,
    for per-image products in one batched call. With one phase (stride 1) all taps are one strided view of
    the phases, copied in one call rather than one per tap.
    """
    g = ph.g
    if len(ph.rows) == len(ph.cols) == 1:
        xp = get_array_module(flat)
        src = flat[0, 0]  # (n, C, frame)
        sn, sc, s = src.strides
        n = src.shape[0]
        taps = (g.KH, g.KW)
        # One phase: every tap's offset i*DH (j*DW) is a multiple of the stride.
        tap_strides = (g.DH // g.SH * ph.Wph * s, g.DW // g.SW * s)
        if images_inner:
            view = xp.lib.stride_tricks.as_strided(src, (g.C, *taps, n, ph.L), (sc, *tap_strides, sn, s))
        else:
            view = xp.lib.stride_tricks.as_strided(src, (n, g.C, *taps, ph.L), (sn, sc, *tap_strides, s))
        col.reshape(view.shape)[...] = view
        return
    for tap in ph.taps:
        if images_inner:
            col[:, tap[0]] = ph.slice(flat, tap).transpose(1, 0, 2)
        else:
            col[:, :, tap[0]] = ph.slice(flat, tap)


def _gemm_chunk(g: ConvGeometry, ph: _Phases, xp, itemsize: int) -> int:
    # Temporaries per image: the phases, the im2col matrix and the uncropped output.
    per_sample = itemsize * (ph.size + g.C * g.KH * g.KW * ph.L + g.O * ph.L)
    return _chunk(g, per_sample, xp)


def _forward_gemm(x, w, g, y, bias=None):
    xp = get_array_module(x)
    ph = _phases(g)
    KK = g.KH * g.KW
    G, Og = g.G, g.O // g.G
    wk = w.reshape(G, Og, g.K)
    # On a GPU the chunk's images lie side by side: one cuBLAS call per chunk.
    # On NumPy one block per image, the products in one batched call: its
    # output is already NCHW, where the side-by-side one needed a transposing
    # copy (1.1-1.8x slower in all on LeNet-5's layers and shape C).
    inner = is_device(xp)
    step = _gemm_chunk(g, ph, xp, x.itemsize)
    for n0 in range(0, g.N, step):
        xc = x[n0 : n0 + step]
        n = xc.shape[0]
        flat = ph.split(xc, _workspace(xp, "phases", ph.shape(n), x.dtype))
        col = _workspace(xp, "col", (g.C, KK, n, ph.L) if inner else (n, g.C, KK, ph.L), x.dtype)
        _fill_col(ph, flat, col, images_inner=inner)
        if inner:
            out = _workspace(xp, "out", (G, Og, n * ph.L), x.dtype)
            xp.matmul(wk, col.reshape(G, g.K, n * ph.L), out=out)
            _store(y[n0 : n0 + step], out.reshape(g.O, n, g.OH, ph.Wph)[..., : g.OW].transpose(1, 0, 2, 3), bias)
        else:
            out = _workspace(xp, "out", (n, G, Og, ph.L), x.dtype)
            xp.matmul(wk, col.reshape(n, G, g.K, ph.L), out=out)
            _store(y[n0 : n0 + step], out.reshape(n, g.O, g.OH, ph.Wph)[..., : g.OW], bias)


def _forward_shift(x, w, g, y, bias=None):
    xp = get_array_module(x)
    ph = _phases(g)
    G, Og, Cg = g.G, g.O // g.G, g.C // g.G
    # Per-tap weights (KH, KW, G, Og, Cg), C-ordered on a GPU: CuPy would copy a
    # strided operand of a batched matmul on every call. It copies the tap's
    # input view (rows of L out of Wph-strided rows) anyway: counted below.
    wt = _grouped_weights(w, g).transpose(3, 4, 0, 1, 2)
    device = is_device(xp)
    if device:
        wt = xp.ascontiguousarray(wt)
    per_sample = x.itemsize * (ph.size + 2 * g.O * ph.L + (g.C * ph.L if device else 0))
    step = _chunk(g, per_sample, xp)
    for n0 in range(0, g.N, step):
        xc = x[n0 : n0 + step]
        n = xc.shape[0]
        flat = ph.split(xc, _workspace(xp, "phases", ph.shape(n), x.dtype))
        acc = _workspace(xp, "out", (n, G, Og, ph.L), x.dtype)
        tmp = _workspace(xp, "tmp", (n, G, Og, ph.L), x.dtype)
        for k, tap in enumerate(ph.taps):
            i, j = divmod(tap[0], g.KW)
            xs = ph.slice(flat, tap).reshape(n, G, Cg, ph.L)
            xp.matmul(wt[i, j], xs, out=acc if k == 0 else tmp)
            if k:
                acc += tmp
        _store(y[n0 : n0 + step], acc.reshape(n, g.O, g.OH, ph.Wph)[..., : g.OW], bias)


def _forward_rows(x, w, g, y, bias=None):
    xp = get_array_module(x)
    ph = _phases(g)
    G, Og, Cg = g.G, g.O // g.G, g.C // g.G
    # Kernel row i reads row phase a_i at row offset r_i; column tap j reads column
    # phase b_j at offset c_j. Copy, per used row phase, the KW column-shifted
    # slices long enough for every row offset; each kernel row is then one view.
    rows = [divmod(i * g.DH, g.SH)[::-1] for i in range(g.KH)]  # (a_i, r_i)
    cols = [divmod(j * g.DW, g.SW)[::-1] for j in range(g.KW)]  # (b_j, c_j)
    used = sorted({a for a, _ in rows})
    span = (max(r for _, r in rows) + g.OH) * ph.Wph
    wr = xp.ascontiguousarray(w.transpose(2, 0, 1, 3)).reshape(g.KH, G, Og, Cg * g.KW)
    # On a GPU, CuPy copies each kernel row's view of `shifted` (strided rows) for its matmul.
    device_copy = g.C * g.KW * ph.L if is_device(xp) else 0
    per_sample = x.itemsize * (ph.size + len(used) * g.C * g.KW * span + 2 * g.O * ph.L + device_copy)
    step = _chunk(g, per_sample, xp)
    for n0 in range(0, g.N, step):
        xc = x[n0 : n0 + step]
        n = xc.shape[0]
        flat = ph.split(xc, _workspace(xp, "phases", ph.shape(n), x.dtype))
        shifted = _workspace(xp, "col", (len(used), n, g.C, g.KW, span), x.dtype)
        for k, a in enumerate(used):
            for j, (b, c) in enumerate(cols):
                shifted[k, :, :, j, :] = flat[ph.rows[a], ph.cols[b], :, :, c : c + span]
        acc = _workspace(xp, "out", (n, G, Og, ph.L), x.dtype)
        tmp = _workspace(xp, "tmp", (n, G, Og, ph.L), x.dtype)
        for i, (a, r) in enumerate(rows):
            xs = shifted[used.index(a), :, :, :, r * ph.Wph : r * ph.Wph + ph.L].reshape(n, G, Cg * g.KW, ph.L)
            xp.matmul(wr[i], xs, out=acc if i == 0 else tmp)
            if i:
                acc += tmp
        _store(y[n0 : n0 + step], acc.reshape(n, g.O, g.OH, ph.Wph)[..., : g.OW], bias)


#: ``"tiles"`` computes ``R`` output rows per im2col column when a group
#: has fewer output channels than this: ``R * O/G`` rows in the matrix
#: product, at least this many (measured on the tutorial's layers, 4 to 24
#: tried: 8 was the best for 1 and 2 channels; for 3 channels, 9 and 12 ran
#: 1.2-1.4x faster than 8's 6 rows).
STACK_ROWS = 8


def _stacked_weights(w: Array, g: ConvGeometry, R: int) -> Array:
    """Filters for ``R`` output rows at once: ``(G, O/G * R, C/G * P * KW)``.

    Output row ``a`` of a block reads input rows ``a*SH + i*DH`` of the
    block's ``P = (R-1)*SH + DH*(KH-1) + 1``; the other rows get zeros.
    """
    xp = get_array_module(w)
    G, Og, Cg = g.G, g.O // g.G, g.C // g.G
    P = (R - 1) * g.SH + g.DH * (g.KH - 1) + 1
    wg = _grouped_weights(w, g)
    ws = xp.zeros((G, Og, R, Cg, P, g.KW), dtype=w.dtype)
    for a in range(R):
        ws[:, :, a, :, a * g.SH : a * g.SH + g.DH * (g.KH - 1) + 1 : g.DH] = wg
    return ws.reshape(G, Og * R, Cg * P * g.KW)


def _forward_tiles(x, w, g, y, bias=None):
    xp = get_array_module(x)
    G, Og, Cg = g.G, g.O // g.G, g.C // g.G
    # Few output channels make a thin matrix product, which BLAS runs slowly:
    # then each im2col column serves R output rows (a taller product, and a
    # copy of (R-1)*SH + eKH input rows per R output rows instead of KH each).
    R = min(-(-STACK_ROWS // Og), g.OH) if Cg <= 4 and Og < STACK_ROWS else 1
    limit = min(CACHE_CHUNK_BYTES, int(config.workspace_bytes))
    stacked = _stacked_weights(w, g, R) if R > 1 else None  # once per call, not per image
    blocks = g.OH // R
    if g.PH or g.PW:
        xpad = _workspace(xp, "phases", (g.C, g.H + 2 * g.PH, g.W + 2 * g.PW), x.dtype)
        xpad[...] = 0  # the border stays zero: each image writes only the inside
    for n in range(g.N):
        xn = x[n]
        if g.PH or g.PW:
            xpad[:, g.PH : g.PH + g.H, g.PW : g.PW + g.W] = xn
            xn = xpad
        # Blocks of R rows, then the rows left over one at a time.
        for r_first, r_stop, step in ((0, blocks * R, R), (blocks * R, g.OH, 1)):
            if r_first == r_stop:
                continue
            sc, sr, s = xn.strides
            if step > 1:  # every input row of the block, for the stacked filters
                ws, P, pr = stacked, (step - 1) * g.SH + g.DH * (g.KH - 1) + 1, sr
            else:  # the kernel's rows only
                ws, P, pr = w.reshape(G, Og, g.K), g.KH, g.DH * sr
            # Tiles of m blocks: their im2col (C, P, KW, m, OW) and, when stacked, the product.
            per_block = x.itemsize * g.OW * (g.C * P * g.KW + (g.O * step if step > 1 else 0))
            m_max = max(1, limit // per_block)
            for r0 in range(r_first, r_stop, m_max * step):
                m = min(m_max, (r_stop - r0) // step)
                col = _workspace(xp, "col", (G, Cg, P, g.KW, m, g.OW), x.dtype)
                col[...] = xp.lib.stride_tricks.as_strided(
                    xn[:, r0 * g.SH :],
                    (G, Cg, P, g.KW, m, g.OW),
                    (Cg * sc, sc, pr, g.DW * s, step * g.SH * sr, g.SW * s),
                )
                cols = col.reshape(G, -1, m * g.OW)
                rows = y[n, :, r0 : r0 + m * step]  # contiguous per channel
                if step == 1:
                    xp.matmul(ws, cols, out=rows.reshape(G, Og, m * g.OW))
                else:
                    out = _workspace(xp, "out", (G, Og, step, m, g.OW), x.dtype)
                    xp.matmul(ws, cols, out=out.reshape(G, Og * step, m * g.OW))
                    rows.reshape(G, Og, m, step, g.OW)[...] = out.transpose(0, 1, 3, 2, 4)
    if bias is not None:  # the products write straight into y: no copy to add the bias in
        y += bias.reshape(1, g.O, 1, 1)


def _store(y: Array, out: Array, b: Array | None) -> None:
    """``y[...] = out``, plus the bias `b` per channel if given.

    The bias is added in this copy out of the workspace rather than in
    another pass over ``y``.
    """
    if b is None:
        y[...] = out
    else:
        get_array_module(y).add(out, b.reshape(1, -1, 1, 1), out=y)


_FORWARD = {"einsum": _forward_einsum, "gemm": _forward_gemm, "shift": _forward_shift, "rows": _forward_rows,
            "tiles": _forward_tiles}


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
    algo : {"auto", "einsum", "gemm", "shift", "rows", "tiles"}
        Which algorithm computes the result (all give the same numbers up to
        rounding). ``"auto"`` picks by shape (:func:`choose_algo`); with
        ``config.conv_autotune`` it times the candidates on the first call
        with each geometry, dtype and device, which then takes about 16
        times as long, and keeps the fastest.

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
    crop = _reach(g)
    if crop is not None:  # some taps read only padding: the same convolution on a smaller frame
        y = xp.zeros((g.N, g.O, g.OH, g.OW), dtype=x.dtype)
        if crop.taps:
            y = conv2d(_frame(x, crop), w[:, :, crop.taps[0], crop.taps[1]], stride=(g.SH, g.SW),
                       dilation=(g.DH, g.DW), groups=g.G, algo=algo)
        if b is not None:
            y += b.reshape(1, g.O, 1, 1)
        return y
    y = xp.empty((g.N, g.O, g.OH, g.OW), dtype=x.dtype)
    if algo == "auto":
        if config.conv_autotune and _tune_key(g, xp, x.dtype) not in _tuned:
            # The trial leaves the last candidate's result in y; the winner runs
            # once more below, so the first call rounds exactly as later ones.
            _trial(x, w, g, y)
        algo = choose_algo(g, xp, x.dtype)
    _FORWARD[algo](x, w, g, y, b)
    return y


def conv2d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1, need_dx=True):
    """Gradients of :func:`conv2d` with respect to its input, weights and bias.

    Parameters
    ----------
    dy : array, shape (N, O, OH, OW)
        Gradient of the loss with respect to the output of ``conv2d``.
    x, w : arrays
        The input and weights given to ``conv2d``.
    stride, padding, dilation, groups
        As given to ``conv2d``.
    need_dx : bool, default True
        False skips the input gradient (half the work), for a network's
        first layer, whose input needs none.

    Returns
    -------
    dx : array, shape of `x`, or None if `need_dx` is False
    dw : array, shape of `w`
    db : array, shape (O,)
        The bias gradient (whether or not the forward pass used a bias).

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d`, and if `dy` does not have the output's shape.

    Examples
    --------
    A 2x2 kernel of ones over a 3x3 image of ones: each input pixel's
    gradient counts the windows that cover it.

    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    >>> dx, dw, db = F.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> dx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> dw[0, 0], db
    (array([[4., 4.],
           [4., 4.]]), array([4.]))
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
    crop = _reach(g)
    if crop is not None:  # as in conv2d: taps that read only padding get a zero gradient
        dx = xp.zeros_like(x) if need_dx else None
        dw = xp.zeros_like(w)
        if crop.taps:
            fdx, fdw, _ = conv2d_backward(dy, _frame(x, crop), w[:, :, crop.taps[0], crop.taps[1]],
                                          stride=(g.SH, g.SW), dilation=(g.DH, g.DW), groups=g.G, need_dx=need_dx)
            dw[:, :, crop.taps[0], crop.taps[1]] = fdw
            if need_dx:
                dx[:, :, crop.inside[0], crop.inside[1]] = fdx[:, :, crop.read[0], crop.read[1]]
        return dx, dw, _channel_sums(dy)
    G, Og, KK = g.G, g.O // g.G, g.KH * g.KW
    ph = _phases(g)
    # With more than 4 input channels per group, and on a GPU, the chunk's
    # images lie side by side in the im2col (the GPU forward's layout): the
    # weight gradient is then one matrix product per group and chunk, wide
    # enough for BLAS to spread over its threads (LeNet-5's second layer and
    # shapes D-F: 1.07-1.5x faster than one product per image). With fewer,
    # one block per image: thin chunk-wide products ran 1.5x slower (shape
    # C), and the per-image copies stay in the cache. Side by side, the
    # input gradient has a layout of its own (_input_grad).
    side = is_device(xp) or g.C // g.G > 4
    by_conv = need_dx and _dx_is_conv(g)
    dx = xp.empty_like(x) if need_dx and not by_conv else None
    if dx is not None and side:  # w.T with rows (tap, input channel) per group: see _input_grad
        wt = xp.ascontiguousarray(w.reshape(G, Og, g.C // G, KK).transpose(0, 3, 2, 1)).reshape(G, -1, Og)
    dwT = xp.empty((G, g.K, Og), dtype=x.dtype)  # transposed: see the products below
    dwT_n = None  # a later chunk's part, added to the first's
    # Temporaries per image: phases of x and of dx, the im2col matrix (reused for its gradient: side by
    # side over whole phase frames), dy framed like the output (side by side, also like the phases)
    # and, one block per image, its weight gradient.
    frame = ph.Hph * ph.Wph if side else ph.L
    per_sample = x.itemsize * (2 * ph.size + g.C * KK * max(ph.L, frame) + g.O * (ph.L + frame)
                               + (0 if side else g.K * g.O))
    step = _chunk(g, per_sample, xp)
    for n0 in range(0, g.N, step):
        xc = x[n0 : n0 + step]
        n = xc.shape[0]
        flat = ph.split(xc, _workspace(xp, "phases", ph.shape(n), x.dtype))
        col = _workspace(xp, "col", (g.C, KK, n, ph.L) if side else (n, g.C, KK, ph.L), x.dtype)
        _fill_col(ph, flat, col, images_inner=side)
        # dy in the output's uncropped frame: zero junk columns add nothing to dw.
        dyf = _workspace(xp, "out", (g.O, n, g.OH, ph.Wph) if side else (n, g.O, g.OH, ph.Wph), x.dtype)
        dyf[..., g.OW :] = 0
        dyf[..., : g.OW] = dy[n0 : n0 + step].transpose(1, 0, 2, 3) if side else dy[n0 : n0 + step]
        # dw.T = col @ dy.T: OpenBLAS ran it 1.2-1.5x faster than dw = dy @ col.T
        # (the large operand transposed). A 2-D transposed view is read in place.
        if n0:
            dwT_n = xp.empty_like(dwT) if dwT_n is None else dwT_n
        part = dwT_n if n0 else dwT
        if side:
            colg, dyg = col.reshape(G, g.K, n * ph.L), dyf.reshape(G, Og, n * ph.L)
            for k in range(G):
                xp.matmul(colg[k], dyg[k].T, out=part[k])
        else:  # one product per image, in one call, then their sum
            colg, dyg = col.reshape(n, G, g.K, ph.L), dyf.reshape(n, G, Og, ph.L)
            per_image = _workspace(xp, "dw", (n, G, g.K, Og), x.dtype)
            xp.matmul(colg, dyg.transpose(0, 1, 3, 2), out=per_image)
            per_image.sum(axis=0, out=part)
        if n0:
            dwT += dwT_n
        if dx is None:
            continue
        if side:
            _input_grad(dy[n0 : n0 + step], wt, g, ph, dx[n0 : n0 + step])
            continue
        # One block per image, dy framed as for dw: the im2col gradient, in the im2col buffer, and
        # each tap's add into the phases of its images. (Side by side, dy framed again and moved
        # to images inside channels cost shape C 1.2x the time of the whole backward.)
        xp.matmul(w.reshape(G, Og, g.K).transpose(0, 2, 1), dyg, out=colg)
        grad = _workspace(xp, "grad_phases", ph.shape(n), x.dtype)
        grad[...] = 0
        gflat = grad.reshape(*ph.shape(n)[:4], -1)
        for t, a, b, s0 in ph.taps:
            gflat[a, b, :, :, s0 : s0 + ph.L] += col[:, :, t, :]
        ph.merge(grad, dx[n0 : n0 + step])
    if by_conv:
        dx = _dx_by_conv(dy, w, g)
    db = _channel_sums(dy)
    return dx, xp.ascontiguousarray(dwT.transpose(0, 2, 1)).reshape(w.shape), db


def _input_grad(dy: Array, wt: Array, g: ConvGeometry, ph: _Phases, dx: Array) -> None:
    """col2im: the input gradient of one chunk, written into `dx`.

    ``wt`` is ``(G, KH*KW*C/G, O/G)``: the weights transposed, rows ordered
    (tap, input channel). Tap ``t`` read each phase image at offset ``s0``
    of its flattened frame, so its rows of ``wt @ dy`` go back to that
    phase, shifted by ``s0``. The product runs over whole phase frames, with
    dy zero outside the output (the junk columns and the rows below): the
    chunk's images then lie one above the other (channel, image, frame), a
    tap's nonzero values land inside their own image, and its add is one
    contiguous range for the whole chunk. On LeNet-5's second layer the adds
    alone ran 2.4x faster than per image and channel; the product grows by
    the junk rows (1.4x), and a training step took 0.95-1.02x the time.
    """
    xp = get_array_module(dy)
    n = dy.shape[0]
    G, Og, frames = g.G, g.O // g.G, n * ph.Hph * ph.Wph
    size = g.C // G * frames  # one group's images, stacked
    dyf = _workspace(xp, "dy_frames", (g.O, n, ph.Hph, ph.Wph), dy.dtype)
    dyf[...] = 0  # the junk columns and the rows below the output
    dyf[:, :, : g.OH, : g.OW] = dy.transpose(1, 0, 2, 3)
    col = _workspace(xp, "col", (G, g.KH * g.KW, size), dy.dtype)
    xp.matmul(wt, dyf.reshape(G, Og, frames), out=col.reshape(G, -1, frames))
    grad = _workspace(xp, "grad_phases", (len(ph.rows), len(ph.cols), g.C, n, ph.Hph, ph.Wph), dy.dtype)
    grad[...] = 0
    stacked = grad.reshape(len(ph.rows), len(ph.cols), G, size)
    for t, a, b, s0 in ph.taps:
        stacked[a, b, :, s0:] += col[:, t, : size - s0]
    ph.merge(grad.transpose(0, 1, 3, 2, 4, 5), dx)


def _channel_sums(dy: Array) -> Array:
    """The bias gradient ``dy.sum(axis=(0, 2, 3))``.

    On NumPy as a batched product with ones, then a sum over images: BLAS
    sums 3-4x faster than NumPy's reduction over three axes (LeNet-5's
    layers). A GPU reduces in one kernel.
    """
    xp = get_array_module(dy)
    if is_device(xp):
        return dy.sum(axis=(0, 2, 3))
    N, O = dy.shape[:2]
    return (dy.reshape(N, O, -1) @ xp.ones(dy.shape[2] * dy.shape[3], dtype=dy.dtype)).sum(axis=0)


def _dx_is_conv(g: ConvGeometry) -> bool:
    """Whether :func:`_dx_by_conv` computes the input gradient.

    It applies with stride 1 and padding below the (dilated) kernel size. It
    is used with at least 16 input channels per group: measured 1.1-1.4x
    faster than the im2col gradient and its scatter-adds on 32 and 64
    channels, even on 16, but 1.4x slower on 3 and 1.55x on 6 (LeNet-5's
    second layer), where its products have 3 or 6 rows.
    """
    eKH, eKW = g.DH * (g.KH - 1) + 1, g.DW * (g.KW - 1) + 1
    return g.SH == g.SW == 1 and g.PH < eKH and g.PW < eKW and g.C // g.G >= 16


def _dx_by_conv(dy: Array, w: Array, g: ConvGeometry) -> Array:
    """The input gradient of a stride-1 convolution, as a convolution of `dy`.

    ``dx`` is the 'full' correlation of ``dy`` with the filters flipped in
    both spatial axes, input and output channels swapped within each group:
    ``conv2d`` with padding ``eK - 1 - P``. So it runs on the fastest forward
    algorithm for its shape, with no col2im scatter-adds.
    """
    xp = get_array_module(w)
    G, Og, Cg = g.G, g.O // g.G, g.C // g.G
    wf = w.reshape(G, Og, Cg, g.KH, g.KW)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    wf = xp.ascontiguousarray(wf).reshape(g.C, Og, g.KH, g.KW)
    eKH, eKW = g.DH * (g.KH - 1) + 1, g.DW * (g.KW - 1) + 1
    return conv2d(dy, wf, padding=(eKH - 1 - g.PH, eKW - 1 - g.PW), dilation=(g.DH, g.DW), groups=G)
