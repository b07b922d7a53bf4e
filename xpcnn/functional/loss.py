"""Softmax cross-entropy on integer class labels, mean over the batch."""

from __future__ import annotations

import numbers

from ..backend import get_array_module
from ._utils import check_float, check_ndim
from .activations import log_softmax, softmax


def check_labels(labels, num_classes: int, *, check_range: bool = True) -> None:
    """Check that `labels` is a 1-D integer array of class ids in ``[0, num_classes)``.

    The range check reads two numbers back from the array (a device sync on
    CuPy); pass ``check_range=False`` inside training loops that checked
    their labels once up front.

    Raises
    ------
    TypeError
        If `labels` is not an integer array.
    ValueError
        If it is not 1-D or a label lies outside ``[0, num_classes)``; the
        message names the offending label and the range.
    """
    if not hasattr(labels, "dtype") or labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array of class ids, got {getattr(labels, 'dtype', type(labels).__name__)}")
    check_ndim(labels, 1, "labels", "(N,)")
    if check_range and labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"label {bad} is outside the range [0, {num_classes}) of the {num_classes} classes")


def _check(logits, labels, check_range):
    check_float(logits, "logits")
    check_ndim(logits, 2, "logits", "(N, classes)")
    check_labels(labels, logits.shape[1], check_range=check_range)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} rows but labels has {labels.shape[0]}")


def cross_entropy(logits, labels, *, check_range=True):
    """Mean softmax cross-entropy, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    logits : array, shape (N, classes), float32 or float64
        Unnormalised scores.
    labels : integer array, shape (N,)
        Class ids in ``[0, classes)``.
    check_range : bool
        Check the label range (see :func:`check_labels`). Without the check
        (no device sync), a label outside ``[0, classes)`` makes the loss
        NaN, on every backend (CuPy would otherwise wrap the index silently).

    Returns
    -------
    0-d array of the dtype of `logits`
        ``-mean(log_softmax(logits)[n, labels[n]])``; stays on the device.

    Raises
    ------
    TypeError, ValueError
        Non-float logits, non-integer labels, shape mismatch, label out of range.

    Examples
    --------
    Equal scores for four classes give ``log(4)`` whatever the labels:

    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> loss = F.cross_entropy(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(float(loss), 6), round(float(np.log(4)), 6)
    (1.386294, 1.386294)
    >>> F.cross_entropy(np.zeros((1, 4)), np.array([4]))
    Traceback (most recent call last):
    ...
    ValueError: ...
    """
    return _forward(logits, labels, check_range)[0]


def _forward(logits, labels, check_range):
    """The loss, the log-probabilities, the label indices and where labels were in range (None: all)."""
    _check(logits, labels, check_range)
    xp = get_array_module(logits)
    logp = log_softmax(logits, axis=1)
    rows = xp.arange(logits.shape[0])
    if check_range:
        return -logp[rows, labels].mean(), logp, labels, None
    index, valid = _unchecked(labels, logits.shape[1], xp)
    return -xp.where(valid, logp[rows, index], xp.nan).mean(), logp, index, valid


def _unchecked(labels, num_classes: int, xp):
    """Labels clipped into range, and where they were in range (no device sync).

    An index out of range wraps silently on CuPy (and a negative one on
    NumPy): the clipped index reads a real row, and the mask turns the
    result into NaN, the same on every backend.
    """
    return xp.clip(labels, 0, num_classes - 1), (labels >= 0) & (labels < num_classes)


def cross_entropy_backward(logits, labels, dloss=1.0, *, check_range=True):
    """Gradient of :func:`cross_entropy` with respect to `logits`.

    Returns ``dloss * (softmax(logits) - onehot(labels)) / N``, shape and
    dtype of `logits`.
    """
    _check(logits, labels, check_range)
    index, valid = (labels, None) if check_range else _unchecked(labels, logits.shape[1], get_array_module(logits))
    return _grad(softmax(logits, axis=1), index, valid, dloss)


def _grad(probs, index, valid, dloss):
    """``dloss * (probs - onehot(index)) / N``, NaN in rows where `valid` is False; `probs` is overwritten."""
    xp = get_array_module(probs)
    n = probs.shape[0]
    probs[xp.arange(n), index] -= 1
    if valid is not None:
        probs = xp.where(valid[:, None], probs, xp.nan).astype(probs.dtype, copy=False)
    probs *= _grad_scale(dloss, 1 / n, probs.dtype)
    return probs


def _grad_scale(dloss, factor: float, dtype):
    """``dloss * factor`` in `dtype`, to multiply a gradient of that dtype.

    `dloss` is a Python or NumPy scalar (made a scalar of `dtype` on the
    host) or a 0-d array on any backend (cast there: no device read). Under
    NEP 50 (NumPy 2, CuPy 14) a float64 NumPy scalar or 0-d array times a
    float32 array is float64, so the dtype is made explicit here.
    """
    if isinstance(dloss, numbers.Real):
        return dtype.type(float(dloss) * factor)
    xp = get_array_module(dloss)
    return xp.asarray(dloss, dtype=dtype) * dtype.type(factor)
