"""Argument handling shared by the functional ops: pairs, output sizes, checks.

Everything here runs on shapes and dtypes only (no array data is touched), so
the checks cost nothing and run before any heavy work.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from typing import Any, Callable

from ..backend import get_array_module


def int_arg(value: Any, name: str, minimum: int | None = None) -> int:
    """A Python int from a Python or NumPy integer (not a bool, not ``1.0``), at least `minimum`.

    Raises
    ------
    TypeError
        If `value` is not an integer; the message names `name` and the value.
    ValueError
        If it is below `minimum`.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def seed_arg(seed: Any, name: str = "seed") -> Any:
    """`seed` checked: None, a random generator (anything with ``.random``), or an int >= 0 (NumPy's too)."""
    if seed is None or (hasattr(seed, "random") and not isinstance(seed, (int, float, str))):
        return seed
    try:
        return int_arg(seed, name, 0)
    except TypeError:
        raise TypeError(f"{name} must be an int, None or a random generator, got {seed!r}") from None


def real_arg(value: Any, name: str, low: float | None = None, high: float | None = None,
             high_open: bool = False) -> float:
    """A finite Python float from a Python or NumPy real number (not a bool), in ``[low, high]``.

    With `high_open` the range is ``[low, high)``.

    Raises
    ------
    TypeError
        If `value` is not a real number.
    ValueError
        If it is not finite or outside the range; the message names `name`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low) or (
        high is not None and (value >= high if high_open else value > high)
    ):
        lo = "" if low is None else f">= {low}"
        hi = "" if high is None else (f"< {high}" if high_open else f"<= {high}")
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    return value


def pair(value: Any, name: str, minimum: int = 0) -> tuple[int, int]:
    """``int`` or 2-sequence of ints -> ``(a, b)``, each ``>= minimum``."""
    try:
        items = (value, value) if hasattr(value, "__index__") else tuple(value)
        if any(isinstance(v, bool) for v in items):  # True is an int to Python, never a size here
            raise TypeError
        a, b = (operator.index(v) for v in items)  # index(), not int(): 1.7 is refused, not truncated
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if a < minimum or b < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return a, b


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """PyTorch's floor formula for one spatial dimension."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_float(x: Any, name: str) -> None:
    """Reject non-arrays and non-float dtypes (float32 and float64 are supported)."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(x).__name__}")
    if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")


def check_ndim(x: Any, ndim: int, name: str, layout: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(x.shape)} ({x.ndim}-D)")


def check_same(a: Any, b: Any, names: str) -> None:
    """Same dtype and same backend, so that no op silently upcasts or fails on the device."""
    if type(a) is not type(b) and get_array_module(a) is not get_array_module(b):
        raise TypeError(f"{names} must be on the same backend, got {type(a).__name__} and {type(b).__name__}")
    if a.dtype != b.dtype:
        raise TypeError(f"{names} must have the same dtype, got {a.dtype} and {b.dtype}")


#: Entries kept by :func:`memo_plain` per function before it starts afresh.
MEMO_SIZE = 1024


def memo_plain(trusted: int = 0) -> Callable:
    """Remember a function's results for positional arguments that are ints, ``None`` or tuples of ints.

    For the pure shape-checking functions that every layer calls at each
    step (their pairs and checks cost a small layer more than its
    arithmetic). Only exact types are remembered: ``1.0`` and ``True`` equal
    ``1`` as dict keys, so a call with any other argument goes through the
    function and its checks every time, as does a call that raises. The
    first `trusted` arguments are shapes of arrays, tuples of ints by
    construction, and are not inspected.
    """

    def decorate(fn: Callable) -> Callable:
        cache: dict = {}

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if kwargs:
                return fn(*args, **kwargs)
            for a in args[trusted:]:
                t = type(a)
                if t is tuple:
                    for v in a:
                        if type(v) is not int:
                            return fn(*args)
                elif t is not int and a is not None:
                    return fn(*args)
            try:
                return cache[args]
            except KeyError:
                pass
            except TypeError:  # a list where a shape was expected: not remembered
                return fn(*args)
            result = fn(*args)
            if len(cache) >= MEMO_SIZE:
                cache.clear()
            cache[args] = result
            return result

        return wrapper

    return decorate
