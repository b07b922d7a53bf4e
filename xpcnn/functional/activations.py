"""Element-wise activations and softmax, each with its backward.

Backward functions take what the forward needs to be differentiated cheaply:
the input for ReLU-like ops, the output for sigmoid, tanh and the softmaxes.
"""

from __future__ import annotations

import contextlib

from ..backend import get_array_module
from ._blocks import elementwise, zeros_for
from ._utils import check_float, check_same


def _check_dy(dy, ref, name: str) -> None:
    check_float(dy, "dy")
    check_same(ref, dy, f"{name} and dy")
    if dy.shape != ref.shape:
        raise ValueError(f"dy must have the shape of {name} {tuple(ref.shape)}, got {tuple(dy.shape)}")


def relu(x):
    """``max(x, 0)`` element-wise; same shape and dtype as `x` (float32 or float64).

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> x = np.array([-1.5, 0.0, 2.0], dtype=np.float32)
    >>> F.relu(x)
    array([0., 0., 2.], dtype=float32)
    >>> F.relu_backward(np.ones_like(x), x)  # 0 at x == 0, as PyTorch
    array([0., 0., 1.], dtype=float32)
    """
    check_float(x, "x")
    xp = get_array_module(x)
    return elementwise(lambda a, o: xp.maximum(a, zeros_for(o), out=o), x, out=xp.empty_like(x))


def relu_backward(dy, x):
    """Gradient of :func:`relu`: `dy` where ``x > 0``, else 0 (0 at ``x == 0``, as PyTorch)."""
    check_float(x, "x")
    _check_dy(dy, x, "x")
    xp = get_array_module(x)
    # A product with the mask: several times faster than where() on NumPy.
    return elementwise(lambda d, a, o: xp.multiply(d, a > 0, out=o), dy, x, out=xp.empty_like(x))


def leaky_relu(x, negative_slope=0.01):
    """`x` where ``x > 0``, else ``negative_slope * x``; same shape and dtype as `x`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> F.leaky_relu(np.array([-2.0, 3.0]), negative_slope=0.5)
    array([-1.,  3.])
    """
    check_float(x, "x")
    xp = get_array_module(x)
    slope = x.dtype.type(negative_slope)

    def kernel(a, o):
        xp.multiply(a, slope, out=o)
        if 0 <= negative_slope <= 1:  # then leaky_relu(a) = max(a, slope * a): no select needed
            xp.maximum(a, o, out=o)
        else:
            o[...] = xp.where(a > 0, a, o)

    return elementwise(kernel, x, out=xp.empty_like(x))


def leaky_relu_backward(dy, x, negative_slope=0.01):
    """Gradient of :func:`leaky_relu` with respect to `x`."""
    check_float(x, "x")
    _check_dy(dy, x, "x")
    xp = get_array_module(x)
    slope = x.dtype.type(negative_slope)

    def kernel(d, a, o):
        xp.greater(a, 0, out=o)  # 1 or slope, without where()
        o *= 1 - slope
        o += slope
        o *= d

    return elementwise(kernel, dy, x, out=xp.empty_like(x))


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, same shape and dtype as `x`.

    Computed in that form, in place, block by block (four passes over each
    cache-sized block, one over memory): the negative tail keeps its
    relative precision (``sigmoid(-20)`` is 2.06e-9, not 0), and where
    ``exp(-x)`` overflows to inf (the true result is then subnormal, below
    1.2e-38 in float32) the result is 0, without a warning.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> F.sigmoid(np.array([0.0, -20.0]))
    array([5.00000000e-01, 2.06115362e-09])
    """
    check_float(x, "x")
    xp = get_array_module(x)

    def kernel(a, o):
        xp.negative(a, out=o)
        xp.exp(o, out=o)
        o += 1
        xp.divide(1, o, out=o)  # faster than reciprocal() on NumPy

    errstate = getattr(xp, "errstate", None)  # NumPy warns on overflow; CuPy never does
    with errstate(over="ignore") if errstate else contextlib.nullcontext():
        return elementwise(kernel, x, out=xp.empty_like(x))


def sigmoid_backward(dy, y):
    """Gradient of :func:`sigmoid`, from its output `y`: ``dy * y * (1 - y)``."""
    check_float(y, "y")
    _check_dy(dy, y, "y")
    xp = get_array_module(y)

    def kernel(d, s, o):
        xp.subtract(1, s, out=o)
        o *= s
        o *= d

    return elementwise(kernel, dy, y, out=xp.empty_like(y))


def tanh(x):
    """Hyperbolic tangent element-wise; same shape and dtype as `x`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> y = F.tanh(np.array([0.0, 1.0]))
    >>> y
    array([0.        , 0.76159416])
    >>> F.tanh_backward(np.ones(2), y)  # from the output: 1 - y**2
    array([1.        , 0.41997434])
    """
    check_float(x, "x")
    xp = get_array_module(x)
    return elementwise(lambda a, o: xp.tanh(a, out=o), x, out=xp.empty_like(x))


def tanh_backward(dy, y):
    """Gradient of :func:`tanh`, from its output `y`: ``dy * (1 - y**2)``."""
    check_float(y, "y")
    _check_dy(dy, y, "y")
    xp = get_array_module(y)

    def kernel(d, t, o):
        xp.multiply(t, t, out=o)
        xp.subtract(1, o, out=o)
        o *= d

    return elementwise(kernel, dy, y, out=xp.empty_like(y))


def softmax(x, axis=-1):
    """Softmax along `axis`, stabilised by subtracting the maximum.

    Returns an array of the shape and dtype of `x` whose slices along `axis`
    are positive and sum to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> F.softmax(np.log(np.array([[1.0, 3.0], [2.0, 2.0]])))
    array([[0.25, 0.75],
           [0.5 , 0.5 ]])
    """
    check_float(x, "x")
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_backward(dy, y, axis=-1):
    """Gradient of :func:`softmax`, from its output `y`: ``y * (dy - sum(dy * y))``."""
    check_float(y, "y")
    _check_dy(dy, y, "y")
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def log_softmax(x, axis=-1):
    """``log(softmax(x))`` along `axis`, by the log-sum-exp trick (no overflow, no log(0)).

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import functional as F
    >>> F.log_softmax(np.array([1000.0, 1000.0]))  # exp(1000) would overflow
    array([-0.69314718, -0.69314718])
    """
    check_float(x, "x")
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax_backward(dy, y, axis=-1):
    """Gradient of :func:`log_softmax`, from its output `y`: ``dy - exp(y) * sum(dy)``."""
    check_float(y, "y")
    _check_dy(dy, y, "y")
    xp = get_array_module(y)
    return dy - xp.exp(y) * dy.sum(axis=axis, keepdims=True)
