"""Fully connected layer: ``y = x @ w.T + b`` with PyTorch's weight layout ``(out, in)``."""

from __future__ import annotations

from ._utils import check_float, check_ndim, check_same


def _check(x, w, b=None):
    check_float(x, "x")
    check_float(w, "w")
    check_same(x, w, "x and w")
    check_ndim(x, 2, "x", "(N, in_features)")
    check_ndim(w, 2, "w", "(out_features, in_features)")
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features but w expects {w.shape[1]} (x.shape={tuple(x.shape)}, w.shape={tuple(w.shape)})"
        )
    if b is not None:
        check_float(b, "b")
        check_same(x, b, "x and b")
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"b must have shape ({w.shape[0]},), got {tuple(b.shape)}")


def linear(x, w, b=None):
    """Affine map ``x @ w.T + b``.

    Parameters
    ----------
    x : array, shape (N, in_features), float32 or float64
    w : array, shape (out_features, in_features)
    b : array, shape (out_features,), optional

    Returns
    -------
    array, shape (N, out_features), dtype of `x`

    Raises
    ------
    TypeError
        Non-float or mismatched dtypes or backends.
    ValueError
        Wrong dimensions or a feature-count mismatch.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> x = np.array([[1.0, 2.0]])
    >>> w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (out, in), as torch.nn.Linear
    >>> F.linear(x, w, np.array([0.0, 0.0, 10.0]))
    array([[ 1.,  2., 13.]])
    """
    _check(x, w, b)
    y = x @ w.T
    if b is not None:
        y += b
    return y


def linear_backward(dy, x, w):
    """Gradients of :func:`linear`.

    Parameters
    ----------
    dy : array, shape (N, out_features)
    x, w : the arrays given to :func:`linear`

    Returns
    -------
    dx : array, shape (N, in_features)
    dw : array, shape (out_features, in_features)
    db : array, shape (out_features,)
    """
    _check(x, w)
    check_float(dy, "dy")
    check_same(x, dy, "x and dy")
    if tuple(dy.shape) != (x.shape[0], w.shape[0]):
        raise ValueError(f"dy must have shape {(x.shape[0], w.shape[0])}, got {tuple(dy.shape)}")
    return dy @ w, dy.T @ x, dy.sum(axis=0)
