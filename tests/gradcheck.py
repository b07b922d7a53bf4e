"""Float64 central-difference gradient checks shared by the tests.

Usage (host NumPy arrays; move them to a backend inside ``f`` if needed)::

    from gradcheck import numerical_grad, assert_grad_close

    f = lambda a: (F.tanh(a) * dy).sum()          # scalar function of `a`
    assert_grad_close(F.tanh_backward(dy, F.tanh(x)), numerical_grad(f, x))

Check ops in float64 only: with ``eps=1e-6`` the truncation error is about
``1e-12`` and the rounding error about ``1e-10 * |f|``, so a relative error
below ``1e-6`` separates a correct gradient from a wrong one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["assert_grad_close", "numerical_grad", "rel_error"]


def numerical_grad(f, x, eps=1e-6):
    """Gradient of the scalar function `f` at `x` by central differences.

    Parameters
    ----------
    f : callable
        Takes a float64 host array of the shape of `x`, returns a scalar
        (a Python float, or a 0-d NumPy or CuPy array).
    x : array_like
        Point of evaluation; it is copied to float64 and never modified.
    eps : float
        Step of the central difference.

    Returns
    -------
    numpy.ndarray, float64, shape of `x`
    """
    x = np.array(x, dtype=np.float64, copy=True)
    grad = np.empty_like(x)
    xf, gf = x.reshape(-1), grad.reshape(-1)
    for i in range(xf.size):
        old = xf[i]
        xf[i] = old + eps
        up = float(f(x))
        xf[i] = old - eps
        down = float(f(x))
        xf[i] = old
        gf[i] = (up - down) / (2.0 * eps)
    return grad


def rel_error(a, b):
    """Norm-wise relative error ``||a - b|| / max(||a||, ||b||)`` (0 when both are 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def assert_grad_close(analytic, numeric, rtol=1e-6, name="gradient"):
    """Assert that an analytic gradient matches a numerical one (norm-wise relative error).

    `analytic` may be a NumPy or CuPy array; it is copied to the host.
    """
    if hasattr(analytic, "get"):  # CuPy array
        analytic = analytic.get()
    analytic = np.asarray(analytic)
    numeric = np.asarray(numeric)
    assert analytic.shape == numeric.shape, f"{name}: shape {analytic.shape} != numerical {numeric.shape}"
    assert np.all(np.isfinite(analytic)), f"{name}: analytic gradient has non-finite values"
    err = rel_error(analytic, numeric)
    assert err < rtol, (
        f"{name}: relative error {err:.3g} >= {rtol:g}\nanalytic:\n{analytic}\nnumerical:\n{numeric}"
    )
