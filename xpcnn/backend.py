"""Where compute code gets its array module: NumPy on the CPU, CuPy on a GPU.

This is the one module of xpcnn that names ``numpy`` and ``cupy``. Compute
code asks ``xp = get_array_module(x)`` and uses only ``xp.*``, so the same
lines run on both backends. CuPy is imported lazily, the first time it is
asked for, so ``import xpcnn`` works (and stays light) without it.

The *default backend* says where new arrays (weights, data) are created. It
comes from, in order: :func:`use` (a context manager), :func:`set_default`,
the environment variable ``XPCNN_BACKEND``, and finally ``"numpy"``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType
from typing import Any, Iterator

import numpy

__all__ = [
    "Array",
    "BACKENDS",
    "BackendUnavailableError",
    "asarray",
    "available",
    "get_array_module",
    "get_default",
    "module",
    "name_of",
    "set_default",
    "synchronize",
    "to_numpy",
    "use",
]

#: Type alias for an array of either backend (``numpy.ndarray`` or ``cupy.ndarray``).
Array = Any

BACKENDS = ("numpy", "cupy")
ENV_VAR = "XPCNN_BACKEND"
INSTALL_HINT = 'pip install "xpcnn[cuda12]" (or "xpcnn[cuda13]" for CUDA 13)'


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot be used here (e.g. CuPy without a GPU)."""


_cupy: ModuleType | None = None
_cupy_error: str | None = None
_default: str | None = None  # None: not chosen yet, read XPCNN_BACKEND on first need


def _probe_cupy() -> ModuleType | None:
    """Import CuPy once and check that a CUDA device is present; remember why not."""
    global _cupy, _cupy_error
    if _cupy is not None or _cupy_error is not None:
        return _cupy
    try:
        import cupy  # noqa: PLC0415 -- lazy on purpose: import xpcnn must not import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything
        _cupy_error = f"CuPy is not installed or failed to import ({type(exc).__name__}: {exc})"
        return None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        _cupy_error = f"CuPy is installed but no CUDA device is usable ({type(exc).__name__}: {exc})"
        return None
    if count < 1:
        _cupy_error = "CuPy is installed but no CUDA device is present"
        return None
    _cupy = cupy
    return _cupy


def available() -> list[str]:
    """Names of the backends usable on this machine.

    Returns
    -------
    list of str
        Always starts with ``"numpy"``; ``"cupy"`` is added only when CuPy
        imports *and* a CUDA device is present.

    Examples
    --------
    >>> from xpcnn import backend
    >>> backend.available()[0]
    'numpy'
    """
    return ["numpy", "cupy"] if _probe_cupy() is not None else ["numpy"]


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str ('numpy' or 'cupy'), got {type(name).__name__}")
    key = name.strip().lower()
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return key


def module(name: str | None = None) -> ModuleType:
    """The array module of a backend.

    Parameters
    ----------
    name : {"numpy", "cupy"} or None
        ``None`` means the default backend (see :func:`get_default`).

    Returns
    -------
    module
        ``numpy`` or ``cupy``.

    Raises
    ------
    ValueError
        If `name` is not a known backend.
    BackendUnavailableError
        If ``"cupy"`` is asked for and CuPy or a CUDA device is missing.

    Examples
    --------
    >>> from xpcnn import backend
    >>> backend.module("numpy").__name__
    'numpy'
    >>> backend.module("jax")
    Traceback (most recent call last):
    ...
    ValueError: unknown backend 'jax'; expected one of numpy, cupy
    """
    key = get_default() if name is None else _check_name(name)
    if key == "numpy":
        return numpy
    cupy = _probe_cupy()
    if cupy is None:
        raise BackendUnavailableError(f"backend 'cupy' is unavailable: {_cupy_error}. Install it with: {INSTALL_HINT}")
    return cupy


def get_default() -> str:
    """Name of the backend where new arrays are created.

    Raises
    ------
    ValueError, BackendUnavailableError
        If ``XPCNN_BACKEND`` names an unknown or unusable backend; the error
        comes here, at the first call that needs the default, not at import.
    """
    global _default
    if _default is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if env:
            try:
                key = _check_name(env)
            except ValueError as exc:
                raise ValueError(f"{ENV_VAR}={env!r}: {exc}") from None
            module(key)  # raises BackendUnavailableError now, with the reason
            _default = key
        else:
            _default = "numpy"
    return _default


def set_default(name: str) -> None:
    """Make `name` the backend where new arrays are created.

    Raises
    ------
    ValueError
        If `name` is not ``"numpy"`` or ``"cupy"``.
    BackendUnavailableError
        At once, if the backend cannot be used here.

    Examples
    --------
    >>> from xpcnn import backend
    >>> backend.set_default("numpy")
    >>> backend.get_default()
    'numpy'
    """
    global _default
    key = _check_name(name)
    module(key)
    _default = key


@contextlib.contextmanager
def use(name: str) -> Iterator[ModuleType]:
    """Context manager: create new arrays on backend `name` inside the block.

    Yields the backend's array module. The previous default is restored on
    exit, also when the block raises.

    Examples
    --------
    >>> from xpcnn import backend
    >>> with backend.use("numpy") as xp:
    ...     xp.__name__
    'numpy'
    """
    global _default
    key = _check_name(name)
    xp = module(key)
    previous = _default
    _default = key
    try:
        yield xp
    finally:
        _default = previous


def get_array_module(*arrays: Any) -> ModuleType:
    """``numpy`` or ``cupy``, by the type of the arrays.

    Works when CuPy is not installed (then it is always ``numpy``) and never
    imports CuPy itself: if an argument is a CuPy array, CuPy is loaded already.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.backend import get_array_module
    >>> xp = get_array_module(np.zeros(3))
    >>> xp.__name__
    'numpy'
    """
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return numpy


def asarray(x: Any, backend: str | None = None, dtype: Any = None) -> Array:
    """Put `x` on a backend (copying between host and device only when needed).

    Parameters
    ----------
    x : array_like
        A NumPy or CuPy array, or anything ``numpy.asarray`` takes.
    backend : {"numpy", "cupy"} or None
        Target backend; ``None`` means the default backend.
    dtype : dtype or None
        Cast to this dtype; ``None`` keeps the dtype.

    Returns
    -------
    numpy.ndarray or cupy.ndarray

    Raises
    ------
    ValueError, BackendUnavailableError
        As :func:`module`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import backend
    >>> backend.asarray([1, 2], "numpy", dtype="float32")
    array([1., 2.], dtype=float32)
    >>> backend.asarray(np.ones(2), "cupy")  # a cupy.ndarray; needs a GPU  # doctest: +SKIP
    array([1., 1.])
    """
    xp = module(backend)
    if xp is numpy:
        return numpy.asarray(to_numpy(x), dtype=dtype)
    return xp.asarray(x, dtype=dtype)


def to_numpy(x: Any) -> numpy.ndarray:
    """Copy `x` to the host as a ``numpy.ndarray`` (no copy if it is one already).

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import backend
    >>> a = np.arange(3)
    >>> backend.to_numpy(a) is a
    True
    """
    if get_array_module(x) is not numpy:
        return x.get()
    return numpy.asarray(x)


def synchronize(xp: ModuleType) -> None:
    """Wait for the device to finish queued work (no-op on NumPy); for timing."""
    if xp is not numpy:
        xp.cuda.Device().synchronize()


def is_device(xp: ModuleType) -> bool:
    """Whether arrays of module `xp` live on a GPU."""
    return xp is not numpy


def name_of(xp: ModuleType) -> str:
    """The backend name (``"numpy"`` or ``"cupy"``) of array module `xp`."""
    return "cupy" if is_device(xp) else "numpy"
