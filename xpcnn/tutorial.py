"""The tutorial's own API, vectorised: ``conv``, ``relu``, ``pooling``.

xpcnn grew out of the classic "Building Convolutional Neural Network using
NumPy from Scratch" tutorial (Ahmed Fawzy Gad, 2018). Code written against
that tutorial ports by changing one import::

    from xpcnn.tutorial import conv, relu, pooling

The layouts are the tutorial's: an image is ``(H, W)`` (gray) or
``(H, W, C)``; a filter bank is ``(F, KH, KW)`` or ``(F, KH, KW, C)``; feature
maps are ``(H', W', F)``. Every function runs on the backend of its input (a
CuPy image gives a CuPy result) and calls :mod:`xpcnn.functional`, so a whole
layer is one convolution instead of Python loops over pixels.

The numbers are the mathematically correct ones, which differ from the
tutorial's loops in three places (see ``benchmarks/tutorial_loops.py`` for a
faithful copy of those loops):

* its convolution writes the response of the window starting at ``(r + K//2,
  c + K//2)`` at ``(r, c)``: the map is shifted up and left by ``K // 2``
  pixels (one pixel for the 3x3 edge filters), and its last three rows and
  columns stay zero;
* its pooling loop stops one window early (``arange(0, H - size - 1,
  stride)``), so the last row and column of windows are dropped or left at
  zero;
* its pooling takes each window's maximum across *all* feature maps at once,
  so every pooled map is the same.

Here :func:`conv` is the 'valid' cross-correlation (as ``scipy.signal.
correlate2d(img, k, 'valid')`` summed over channels, and as PyTorch's
``conv2d``), and :func:`pooling` is floor-mode max pooling of each map on its
own (as PyTorch's ``max_pool2d``). So on chelsea (300 x 451 pixels) the
shapes are ``(298, 449, 2) -> (149, 224, 2) -> (145, 220, 3) -> (72, 110, 3)
-> (66, 104, 1) -> (33, 52, 1)``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Sequence

from . import functional as F
from .backend import Array, get_array_module, synchronize
from .functional._utils import int_arg

__all__ = ["Stage", "conv", "pipeline", "pooling", "relu"]


def _as_float(x: Any, xp) -> Array:
    """`x` as an array of `xp`, float32/float64 kept, anything else real -> float64.

    float16 becomes float32 (the functional ops compute in float32 or float64).
    """
    a = xp.asarray(x)
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"expected a real array, got dtype {a.dtype}")
    if kind not in "biuf":
        raise TypeError(f"expected a numeric array, got dtype {a.dtype}")
    if kind == "f" and a.dtype.itemsize in (4, 8):
        return a
    # float16 -> float32; long double (which F does not compute in) and integers -> float64
    return a.astype(xp.float32 if kind == "f" and a.dtype.itemsize < 4 else xp.float64)


def conv(img: Any, conv_filter: Any) -> Array:
    """Cross-correlate an image with every filter of a bank ('valid' mode).

    Parameters
    ----------
    img : array, shape (H, W) or (H, W, C)
        Gray or multi-channel image (or the feature maps of a previous
        layer). NumPy or CuPy; any real dtype.
    conv_filter : array, shape (F, KH, KW) or (F, KH, KW, C)
        Filter bank: `F` filters. A multi-channel image needs the depth axis,
        equal to its `C`; a gray image takes a depth-less bank or depth 1.
        Rectangular and even-sized filters are allowed.

    Returns
    -------
    array, shape (H - KH + 1, W - KW + 1, F)
        ``out[i, j, f] = sum_{u, v, c} img[i + u, j + v, c] *
        conv_filter[f, u, v, c]``: filters are not flipped (cross-correlation,
        as in the tutorial and in PyTorch). The dtype is the image's if it is
        float32 or float64 (float16 -> float32), else float64; the filters
        are cast to it. The backend is CuPy if either argument is a CuPy
        array, else NumPy. A new array, stored map by map (a transposed view
        of an ``(F, H', W')`` array, so ``out[:, :, f]`` is contiguous).

    Raises
    ------
    ValueError
        If a shape is not one of the layouts above, the filter depth does not
        match the image's channels, a multi-channel image gets a depth-less
        bank, a size is zero, or a filter is larger than the image; the
        message names both shapes.
    TypeError
        If an argument has a complex or non-numeric dtype.

    Notes
    -----
    The tutorial's ``conv`` loops shift each map up and left by ``K // 2``
    pixels (one pixel for 3x3 filters) and leave its last three rows and
    columns at zero; it also requires square, odd-sized filters. This
    function returns the exact 'valid' cross-correlation instead, computed by
    one call to :func:`xpcnn.functional.conv2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.tutorial import conv
    >>> img = np.arange(20.0).reshape(4, 5)
    >>> conv(img, np.ones((2, 3, 3))).shape
    (2, 3, 2)
    """
    xp = get_array_module(img, conv_filter)
    img = xp.asarray(img)
    conv_filter = xp.asarray(conv_filter)
    shapes = f"image shape {tuple(img.shape)}, filter bank shape {tuple(conv_filter.shape)}"
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C); got {shapes}")
    if conv_filter.ndim not in (3, 4):
        raise ValueError(f"filter bank must be (F, KH, KW) or (F, KH, KW, C); got {shapes}")
    C = 1 if img.ndim == 2 else img.shape[2]
    if conv_filter.ndim == 3:
        if C != 1:
            raise ValueError(
                f"a {C}-channel image needs a filter bank with a depth axis (F, KH, KW, {C}); got {shapes}"
            )
        depth = 1
    else:
        depth = conv_filter.shape[3]
        if depth != C:
            raise ValueError(
                f"filter depth {depth} does not match the image's {C} channel(s); got {shapes}"
            )
    H, W = img.shape[:2]
    n_filters, KH, KW = conv_filter.shape[:3]
    if min(H, W, C, n_filters, KH, KW) < 1:
        raise ValueError(f"empty image or filter bank; got {shapes}")
    if KH > H or KW > W:
        raise ValueError(f"filter ({KH}, {KW}) is larger than the image ({H}, {W}); got {shapes}")

    x = _as_float(img, xp)
    w = _as_float(conv_filter, xp).astype(x.dtype, copy=False)
    # tutorial HWC / (F, KH, KW, C) -> functional NCHW / (F, C, KH, KW)
    x = x.reshape(H, W, C).transpose(2, 0, 1)[None]
    w = w.reshape(n_filters, KH, KW, depth).transpose(0, 3, 1, 2)
    # A transposed view, not a copy: its memory stays map-major (F, H', W'),
    # so the next conv or pooling transposes back to NCHW for free.
    return F.conv2d(x, w)[0].transpose(1, 2, 0)


def relu(feature_map: Any) -> Array:
    """Rectified linear unit, ``maximum(feature_map, 0)`` element-wise.

    Parameters
    ----------
    feature_map : array, any shape
        Usually ``(H, W, F)``. NumPy or CuPy; any real dtype.

    Returns
    -------
    array, same shape
        float32/float64 input keeps its dtype (float16 -> float32); other
        dtypes give float64. Same backend as the input. NaN stays NaN.

    Raises
    ------
    TypeError
        If `feature_map` has a complex or non-numeric dtype.

    Notes
    -----
    Same numbers as the tutorial's ``relu``, without its three nested loops.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.tutorial import relu
    >>> relu(np.array([[-1, 2], [3, -4]]))  # integers become float64
    array([[0., 2.],
           [3., 0.]])
    """
    xp = get_array_module(feature_map)
    return F.relu(_as_float(feature_map, xp))


def pooling(feature_map: Any, size: int = 2, stride: int = 2) -> Array:
    """Max pooling of each feature map on its own (floor mode, no padding).

    Parameters
    ----------
    feature_map : array, shape (H, W, F) or (H, W)
        NumPy or CuPy; any real dtype. A 2-D array is pooled as one map.
    size : int
        Side of the square pooling window.
    stride : int
        Step between windows.

    Returns
    -------
    array, shape ((H - size) // stride + 1, (W - size) // stride + 1, F)
        (or without the last axis for 2-D input). ``out[i, j, f]`` is the
        maximum of ``feature_map[i*stride : i*stride + size, j*stride :
        j*stride + size, f]``. float32/float64 keep their dtype, others give
        float64. Same backend as the input.

    Raises
    ------
    ValueError
        If `feature_map` is not 2-D or 3-D, is empty, `size` or `stride` is
        below 1, or the window is larger than the map (the message names the
        shapes).
    TypeError
        If `size` or `stride` is not an int, or the dtype is complex or
        non-numeric.

    Notes
    -----
    The tutorial's ``pooling`` differs in two ways: its loop bound
    ``arange(0, H - size - 1, stride)`` stops early, dropping the last window
    of each row and column (the output has ``int((H - size + 1) / stride)``
    rows, some left at zero); and it takes the maximum over the window of
    *all* maps at once, so every pooled map equals the others. Here every
    window that fits is pooled, each map separately, as
    :func:`xpcnn.functional.max_pool2d` (and PyTorch's ``max_pool2d``) does.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.tutorial import pooling
    >>> fm = np.arange(25.0).reshape(5, 5)
    >>> pooling(fm, size=2, stride=2)  # floor mode: the last row and column fit no window
    array([[ 6.,  8.],
           [16., 18.]])
    >>> pooling(np.stack([fm, 100 - fm], axis=-1), 2, 2)[:, :, 1]  # each map on its own
    array([[100.,  98.],
           [ 90.,  88.]])
    """
    size = int_arg(size, "size", 1)
    stride = int_arg(stride, "stride", 1)
    xp = get_array_module(feature_map)
    fm = xp.asarray(feature_map)
    if fm.ndim not in (2, 3):
        raise ValueError(f"feature_map must be (H, W, F) or (H, W), got shape {tuple(fm.shape)}")
    if fm.size == 0:
        raise ValueError(f"feature_map is empty, shape {tuple(fm.shape)}")
    H, W = fm.shape[:2]
    if size > H or size > W:
        raise ValueError(
            f"pooling window ({size}, {size}) is larger than the feature map: shape {tuple(fm.shape)}"
        )
    x = _as_float(fm, xp)
    x = x.reshape(H, W, -1).transpose(2, 0, 1)[None]  # (1, F, H, W)
    y = F.max_pool2d(x, size, stride)[0].transpose(1, 2, 0)  # a view, as in conv
    return y[:, :, 0] if fm.ndim == 2 else y


class Stage(NamedTuple):
    """One step of :func:`pipeline`: which layer, which stage, its output, its time."""

    layer: int
    """1-based layer number."""
    stage: str
    """``"conv"``, ``"relu"`` or ``"pool"``."""
    output: Array
    """The stage's feature maps, ``(H', W', F)``, on the input's backend."""
    ms: float
    """Wall time of the stage in milliseconds (device synchronised before and after)."""


def pipeline(img: Any, filter_banks: Sequence[Any], *, size: int = 2, stride: int = 2) -> list[Stage]:
    """The tutorial's network: per filter bank, conv -> ReLU -> max pool.

    Parameters
    ----------
    img : array, shape (H, W) or (H, W, C)
        Input image, on the backend to compute on.
    filter_banks : sequence of arrays
        One bank per layer, each as :func:`conv` takes it; the depth of a
        bank must equal the number of maps the previous layer gives. The
        pipeline runs on the device if the image or any bank is a CuPy
        array; host arrays are moved there first (outside the timings).
    size, stride : int
        Pooling window and step, as in :func:`pooling`.

    Returns
    -------
    list of Stage
        Three entries per layer, in order. Each ``ms`` is the wall time of
        that stage alone, measured between two device synchronisations, so
        CuPy's asynchronous launches are counted fully.

    Raises
    ------
    ValueError, TypeError
        As :func:`conv` and :func:`pooling`, at the first layer whose shapes
        do not fit.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.tutorial import pipeline
    >>> img = np.random.default_rng(0).random((32, 40))
    >>> banks = [np.ones((2, 3, 3)), np.ones((1, 5, 5, 2))]
    >>> [(s.layer, s.stage, s.output.shape) for s in pipeline(img, banks)]  # doctest: +NORMALIZE_WHITESPACE
    [(1, 'conv', (30, 38, 2)), (1, 'relu', (30, 38, 2)), (1, 'pool', (15, 19, 2)),
     (2, 'conv', (11, 15, 1)), (2, 'relu', (11, 15, 1)), (2, 'pool', (5, 7, 1))]
    """
    xp = get_array_module(img, *filter_banks)  # a device bank puts the whole pipeline on the device
    x = xp.asarray(img)
    banks = [xp.asarray(b) for b in filter_banks]
    steps = (("conv", None), ("relu", relu), ("pool", lambda a: pooling(a, size, stride)))
    stages: list[Stage] = []
    for layer, bank in enumerate(banks, start=1):
        for name, fn in steps:
            synchronize(xp)
            t0 = time.perf_counter()
            x = conv(x, bank) if fn is None else fn(x)
            synchronize(xp)
            stages.append(Stage(layer, name, x, (time.perf_counter() - t0) * 1e3))
    return stages
