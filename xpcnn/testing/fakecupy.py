"""A CPU stand-in for CuPy, so that device code paths run in every test run.

For tests only: xpcnn never imports it. :func:`install` registers it as
``cupy`` in ``sys.modules``; from then on ``xpcnn.backend`` sees a GPU
backend with one device (or more, see :func:`install`), and arrays made by it
are :class:`ndarray` objects that NumPy computes on the host.

Like array-api-strict, it is small and strict: its names are a subset of
real CuPy's (a test checks them against the real module), and its array type
refuses what CuPy's refuses, where code usually breaks:

- it is not a ``numpy.ndarray``; ``np.asarray(a)`` / ``np.array(a)`` raise
  ``TypeError`` (CuPy's ``__array__`` does), so a NumPy call leaking into
  compute code fails here as it would on the GPU;
- a device array and a host array in one operation raise ``TypeError``;
- NumPy functions and ufuncs given a device array dispatch to this module's
  function of the same name (CuPy's ``__array_function__`` and
  ``__array_ufunc__``), and raise ``TypeError`` where it has none;
- reductions and scalar indexing give 0-d device arrays, not Python numbers;
- ``einsum`` and ufuncs take only the keyword arguments CuPy's take.

It also counts what costs time on a real device (:data:`counts`):
device-to-host transfers (``.get()``, ``asnumpy``, ``float``/``int``/
``bool``/``complex``, ``.item()``, ``.tolist()``, printing, pickling, and
the count CuPy reads back for boolean-mask indexing and ``nonzero``-like
functions), the
operand copies CuPy's ``matmul`` makes for layouts cuBLAS cannot take, and
the random generators created.

What it does not model: speed, asynchrony, memory pools, CUDA kernels,
out-of-bounds index wrapping, and which device an array lives on.

Examples
--------
>>> from xpcnn.testing import fakecupy
>>> with fakecupy.installed():
...     import cupy
...     a = cupy.arange(6.0).reshape(2, 3)
...     fakecupy.counts.reset()
...     total = float(a.sum())
>>> total, fakecupy.counts.transfers
(15.0, 1)
"""

from __future__ import annotations

import builtins as _b  # this module's any, all, max, bool are CuPy's
import contextlib
import sys
import threading
import types
from typing import Any, Iterator

import numpy as _np

__version__ = "14.0.0+fakecupy"

_self = sys.modules[__name__]


# --------------------------------------------------------------------------- counters
class Counts:
    """What a real device would pay for, counted since the last :meth:`reset`.

    Attributes
    ----------
    transfers : int
        Device-to-host transfers (each also synchronises the device).
    transfer_kinds : list of str
        What made each transfer (``"get"``, ``"float"``, ``"bool"``, ...), in order.
    matmul_calls : int
        Calls of :func:`matmul` (and the ``@`` operator).
    matmul_copies : list of tuple
        Shape of each operand or output that CuPy's ``matmul`` would copy
        (a layout cuBLAS cannot read, or an output it cannot write).
    matmul_copy_bytes : int
        Bytes of those copies, summed.
    generators : int
        Random generators created by :func:`random.default_rng`.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Set every count to zero."""
        self.transfers = 0
        self.transfer_kinds: list[str] = []
        self.matmul_calls = 0
        self.matmul_copies: list[tuple] = []
        self.matmul_copy_bytes = 0
        self.generators = 0

    def _transfer(self, kind: str) -> None:
        self.transfers += 1
        self.transfer_kinds.append(kind)


#: The module's counters; reset them before the code under test runs.
counts = Counts()


# --------------------------------------------------------------------------- the array
_SCALARS = (bool, int, float, complex, _np.generic)
_UNSUPPORTED_KINDS = "OSUVMm"  # object, strings, void, datetimes: CuPy has no such arrays


def _new(a: _np.ndarray) -> "ndarray":
    out = object.__new__(ndarray)
    out._a = a
    return out


def _unwrap(x: Any) -> Any:
    """A device operation's argument as NumPy sees it; host arrays refused, as CuPy does."""
    if type(x) is ndarray:
        return x._a
    if isinstance(x, _np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    if type(x) in (list, tuple):
        return type(x)(_unwrap(v) for v in x)
    return x


def _upload(x: Any) -> Any:
    """Data for a new device array: device arrays unwrapped, host data taken as it is."""
    if type(x) is ndarray:
        return x._a
    if type(x) in (list, tuple):
        return type(x)(_upload(v) for v in x)
    return x


def _wrap(r: Any) -> Any:
    if isinstance(r, _np.ndarray):
        return _new(r)
    if isinstance(r, _np.generic):  # CuPy gives 0-d arrays where NumPy gives scalars
        return _new(_np.asarray(r))
    if type(r) in (list, tuple):
        return type(r)(_wrap(v) for v in r)
    return r


def _call(f, args: tuple, kwargs: dict) -> Any:
    """``f`` on the unwrapped arguments; the result wrapped, `out` returned as given."""
    with _np.errstate(all="ignore"):  # a GPU never warns of overflow or invalid values
        res = f(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
    out = kwargs.get("out")
    if type(out) is ndarray and res is out._a:
        return out
    return _wrap(res)


def _check_dtype(a: _np.ndarray) -> _np.ndarray:
    if a.dtype.kind in _UNSUPPORTED_KINDS:
        raise ValueError(f"Unsupported dtype {a.dtype}")
    return a


class _Flags:
    """CuPy's ``ndarray.flags``: no ``writeable`` (CuPy has no read-only arrays)."""

    def __init__(self, a: _np.ndarray) -> None:
        self.c_contiguous = _b.bool(a.flags.c_contiguous)
        self.f_contiguous = _b.bool(a.flags.f_contiguous)
        self.owndata = _b.bool(a.flags.owndata)

    def __getitem__(self, name: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]


class _MemoryPointer:
    def __init__(self, a: _np.ndarray) -> None:
        self.ptr = a.__array_interface__["data"][0]


class ndarray:
    """A device array: a NumPy array kept on the "device", out of NumPy's reach.

    ``ndarray(shape, dtype=float, order="C")`` allocates uninitialised
    memory, as CuPy's constructor does.
    """

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C") -> None:
        if memptr is not None or strides is not None:
            raise NotImplementedError("fakecupy.ndarray takes no memptr or strides")
        self._a = _check_dtype(_np.empty(shape, dtype, order=order))

    # --- what NumPy may and may not do with it
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            if len(kwargs["out"]) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            inputs_out = inputs + kwargs["out"]
            kwargs["out"] = kwargs["out"][0]
        else:
            inputs_out = inputs
        func = getattr(_self, ufunc.__name__, None)
        if func is not None and method != "__call__":
            func = getattr(func, method, None)
        if func is None:
            return NotImplemented
        if not _b.all(isinstance(x, (*_SCALARS, ndarray, _np.ndarray)) for x in inputs_out):
            return NotImplemented
        if ufunc.__name__ in ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal"):
            # CuPy's workaround for numpy/numpy#12142: a 0-d host array is taken as a scalar
            inputs = tuple(x.item() if isinstance(x, _np.ndarray) and x.ndim == 0 else x for x in inputs)
        return func(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        module: Any = _self
        try:
            for part in func.__module__.split(".")[1:]:
                module = getattr(module, part)
            mine = getattr(module, func.__name__)
        except AttributeError:
            return NotImplemented
        if mine is func or not _b.all(issubclass(t, (ndarray, _np.ndarray)) for t in types):
            return NotImplemented
        return mine(*args, **kwargs)

    # --- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    data = property(lambda self: _MemoryPointer(self._a))
    T = property(lambda self: _new(self._a.T))
    mT = property(lambda self: _new(self._a.mT))
    real = property(lambda self: _new(self._a.real))
    imag = property(lambda self: _new(self._a.imag))

    @property
    def base(self) -> "ndarray | None":
        return _new(self._a.base) if isinstance(self._a.base, _np.ndarray) else None

    @property
    def device(self) -> "cuda.Device":
        return cuda.Device()

    # --- host transfers: each counted
    def get(self, stream=None, order="C", out=None, blocking=True) -> _np.ndarray:
        """Copy to the host (a ``numpy.ndarray``)."""
        counts._transfer("get")
        if out is not None:
            out[...] = self._a
            return out
        return _np.array(self._a, order=order)

    def item(self):
        counts._transfer("item")
        return self._a.item()

    def tolist(self):
        counts._transfer("tolist")
        return self._a.tolist()

    def tobytes(self, order="C") -> bytes:
        counts._transfer("tobytes")
        return self._a.tobytes(order)

    def set(self, arr: _np.ndarray, stream=None) -> None:
        """Copy host array `arr` into this array (shapes and dtypes must match)."""
        if not isinstance(arr, _np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"Shape/dtype mismatch: {self.shape} {self.dtype} vs {arr.shape} {arr.dtype}")
        self._a[...] = arr

    def _scalar(self, kind: str, convert):
        counts._transfer(kind)
        return convert(self._a)

    def __bool__(self) -> bool:
        return self._scalar("bool", _b.bool)

    def __int__(self) -> int:
        return self._scalar("int", int)

    def __float__(self) -> float:
        return self._scalar("float", float)

    def __complex__(self) -> complex:
        return self._scalar("complex", complex)

    def __repr__(self) -> str:
        return self._scalar("repr", repr)

    def __str__(self) -> str:
        return self._scalar("str", str)

    def __format__(self, spec: str) -> str:
        return self._scalar("format", lambda a: format(a, spec))

    def __reduce__(self):
        counts._transfer("pickle")
        return array, (self._a.copy(),)

    # --- containers and copies
    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __copy__(self) -> "ndarray":
        return _new(self._a.copy())

    def __deepcopy__(self, memo) -> "ndarray":
        return _new(self._a.copy())

    def __getitem__(self, key):
        if _b.any(getattr(k, "dtype", None) == _np.bool_ for k in (key if type(key) is tuple else (key,))):
            counts._transfer("mask")  # CuPy reads the number of True values back to size the result
        return _wrap(self._a[_upload(key)])

    def __setitem__(self, key, value) -> None:
        if isinstance(value, (_np.ndarray, list)) and _np.ndim(value) > 0 and not _advanced(key):
            # CuPy fills a basic-indexed target from scalars and device arrays only
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a[_upload(key)] = _upload(value)

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True) -> "ndarray":
        res = self._a.astype(dtype, order=order, copy=copy)
        return self if res is self._a else _new(_check_dtype(res))


def _advanced(key) -> bool:
    keys = key if type(key) is tuple else (key,)
    return _b.any(isinstance(k, (list, ndarray, _np.ndarray)) for k in keys)


#: Results whose size depends on the data: CuPy reads a count back from the device.
_SIZED_BY_DATA = {"argwhere", "flatnonzero", "nonzero", "unique"}


def _method(name: str):
    syncs = name in _SIZED_BY_DATA

    def method(self, *args, **kwargs):
        if syncs:
            counts._transfer(name)
        return _call(getattr(self._a, name), args, kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"CuPy's ``ndarray.{name}``, computed by NumPy."
    return method


_METHODS = """all any argmax argmin argpartition argsort choose clip compress conj conjugate copy
cumprod cumsum diagonal dot fill flatten max mean min nonzero partition prod put ravel repeat
reshape round searchsorted sort squeeze std sum swapaxes take trace transpose var view"""
for _name in _METHODS.split():
    setattr(ndarray, _name, _method(_name))


# --------------------------------------------------------------------------- ufuncs
def _check_operands(args) -> None:
    for x in args:
        if not isinstance(x, (ndarray, *_SCALARS)):
            raise TypeError(f"Unsupported type {type(x)}")


class ufunc:
    """CuPy's element-wise function: device arrays and scalars only, CuPy's keywords only."""

    def __init__(self, f: _np.ufunc) -> None:
        self._f = f
        self.__name__ = f.__name__
        self.nin, self.nout, self.nargs = f.nin, f.nout, f.nargs

    def __repr__(self) -> str:
        return f"<ufunc '{self.__name__}'>"

    def __call__(self, *args, out=None, dtype=None, casting="same_kind"):
        _check_operands(args)
        if out is not None:
            _check_operands(out if isinstance(out, tuple) else (out,))
        return _call(self._f, args, {"out": out, "dtype": dtype, "casting": casting})

    def _method(self, name: str, args, kwargs):
        _check_operands(args[:1] if name in ("reduce", "accumulate") else args[:2])
        return _call(getattr(self._f, name), args, kwargs)

    def reduce(self, *args, **kwargs):
        return self._method("reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return self._method("accumulate", args, kwargs)

    def outer(self, *args, **kwargs):
        return self._method("outer", args, kwargs)


_UFUNCS = """abs absolute add arccos arccosh arcsin arcsinh arctan arctan2 arctanh bitwise_and
bitwise_not bitwise_or bitwise_xor cbrt ceil conj conjugate copysign cos cosh deg2rad degrees divide
equal exp exp2 expm1 fabs float_power floor floor_divide fmax fmin fmod greater greater_equal hypot
invert isfinite isinf isnan left_shift less less_equal log log10 log1p log2 logaddexp logaddexp2
logical_and logical_not logical_or logical_xor maximum minimum mod multiply negative nextafter
not_equal positive power rad2deg radians reciprocal remainder right_shift rint sign signbit sin sinh
sqrt square subtract tan tanh true_divide trunc"""
for _name in _UFUNCS.split():
    globals()[_name] = ufunc(getattr(_np, _name))


def _operator(name: str, reflected: bool = False, inplace: bool = False):
    def op(self, other):
        if not isinstance(other, (ndarray, _np.ndarray, *_SCALARS)):
            return NotImplemented
        f = globals()[name]
        if inplace:
            return f(self, other, out=self)
        return f(other, self) if reflected else f(self, other)

    return op


for _dunder, _name in {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
                       "floordiv": "floor_divide", "mod": "remainder", "pow": "power",
                       "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor",
                       "lshift": "left_shift", "rshift": "right_shift"}.items():
    setattr(ndarray, f"__{_dunder}__", _operator(_name))
    setattr(ndarray, f"__r{_dunder}__", _operator(_name, reflected=True))
    setattr(ndarray, f"__i{_dunder}__", _operator(_name, inplace=True))
ndarray.__matmul__, ndarray.__rmatmul__ = _operator("matmul"), _operator("matmul", reflected=True)
for _dunder, _name in {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
                       "eq": "equal", "ne": "not_equal"}.items():
    setattr(ndarray, f"__{_dunder}__", _operator(_name))
for _dunder, _name in {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}.items():
    setattr(ndarray, f"__{_dunder}__", lambda self, _f=_name: globals()[_f](self))


# --------------------------------------------------------------------------- functions
def _function(name: str):
    f = getattr(_np, name)
    syncs = name in _SIZED_BY_DATA

    def device_function(*args, **kwargs):
        if syncs:
            counts._transfer(name)
        return _call(f, args, kwargs)

    device_function.__name__ = device_function.__qualname__ = name
    device_function.__doc__ = f"CuPy's ``{name}``, computed by NumPy; device arrays only."
    return device_function


_FUNCTIONS = """all allclose amax amin any append arange argmax argmin argpartition argsort argwhere
around array_equal array_split atleast_1d atleast_2d atleast_3d average bincount broadcast_arrays
broadcast_to can_cast clip column_stack concatenate copy copyto count_nonzero cumprod cumsum diag
diagonal diff dot dstack empty empty_like expand_dims eye flatnonzero flip fliplr flipud full
full_like hstack identity indices inner isclose kron linspace logspace max mean median meshgrid min
moveaxis nan_to_num nanmax nanmean nanmin nansum ndim nonzero ones ones_like outer pad percentile
prod ptp quantile ravel repeat reshape result_type roll rot90 round searchsorted shape size sort
split squeeze stack std sum swapaxes take take_along_axis tensordot tile trace transpose tril triu
unique var vstack where zeros zeros_like"""
for _name in _FUNCTIONS.split():
    globals()[_name] = _function(_name)

# NumPy's own types and constants, as CuPy re-exports them.
for _name in """bool bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 intp uintp float16
float32 float64 complex64 complex128 dtype finfo iinfo promote_types issubdtype number integer
signedinteger unsignedinteger floating inexact complexfloating generic newaxis inf nan pi e""".split():
    globals()[_name] = getattr(_np, _name)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False) -> ndarray:
    """A new device array from host data or device arrays (always a copy from the host)."""
    host = not isinstance(obj, ndarray)
    a = _np.array(_upload(obj), dtype=dtype, copy=True if host else copy, order=order, ndmin=ndmin)
    return obj if not host and a is obj._a else _new(_check_dtype(a))


def asarray(a, dtype=None, order=None, *, blocking=False) -> ndarray:
    """`a` on the device: itself if it is a device array of that dtype, else a copy."""
    return array(a, dtype=dtype, copy=None if isinstance(a, ndarray) else True, order=order or "K")


asanyarray = asarray


def ascontiguousarray(a: ndarray, dtype=None) -> ndarray:
    """`a` in C order; device arrays only (CuPy's takes no host data)."""
    if not isinstance(a, ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got {type(a).__name__})")
    res = _np.ascontiguousarray(a._a, dtype=dtype)
    return a if res is a._a else _new(res)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True) -> _np.ndarray:
    """Copy `a` to the host; host data is returned as ``numpy.asarray`` gives it."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args) -> types.ModuleType:
    """This module if any argument is a device array, else ``numpy``."""
    return _self if _b.any(isinstance(a, ndarray) for a in args) else _np


def einsum(*operands, dtype=None, optimize=False, casting="safe"):
    """CuPy's ``einsum``: device operands, no `out`; ``optimize=False`` by default, as in CuPy."""
    return _call(_np.einsum, operands, {"dtype": dtype, "optimize": optimize, "casting": casting})


def _copied(a: _np.ndarray) -> _np.ndarray:
    counts.matmul_copies.append(a.shape)
    counts.matmul_copy_bytes += a.nbytes
    return _np.ascontiguousarray(a)


def matmul(a: ndarray, b: ndarray, /, out: ndarray | None = None) -> ndarray:
    """Matrix product, with the copies CuPy's ``matmul`` makes counted and made.

    A matrix product of at most two dimensions (``cupy.dot``) reads C- or
    F-ordered operands as they are; a batched one needs C-ordered operands
    (leading dimensions broadcast without a copy). Other operands are copied,
    and an output that is not C-ordered, of another dtype, or overlapping an
    operand is computed into a temporary and copied back.
    """
    _check_operands((a, b))
    if out is not None:
        _check_operands((out,))
    x, y = a._a, b._a
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("Scalar operands are not allowed, use '*' instead")
    counts.matmul_calls += 1
    batched = _b.max(x.ndim, y.ndim) > 2
    x, y = (m if m.flags.c_contiguous or (m.flags.f_contiguous and not batched) else _copied(m) for m in (x, y))
    if out is None:
        return _new(_np.matmul(x, y))
    o = out._a
    dtype = _np.promote_types(x.dtype, y.dtype)
    if o.flags.c_contiguous and o.dtype == dtype and not (_np.may_share_memory(o, x) or _np.may_share_memory(o, y)):
        _np.matmul(x, y, out=o)
    else:
        o[...] = _copied(_np.matmul(x, y))
    return out


# --------------------------------------------------------------------------- cuda
class _CUDARuntimeError(RuntimeError):
    pass


_state = threading.local()  # the current device and stream are per thread, as in CUDA
_device_names: list[str] = ["fakecupy CPU stand-in"]


def _current_device() -> int:
    return getattr(_state, "device", 0)


class _Device:
    """A CUDA device by number (the current one by default); ``with`` makes it current."""

    def __init__(self, device: int | None = None) -> None:
        self.id = _current_device() if device is None else int(device)
        if not 0 <= self.id < len(_device_names):
            raise _CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        self._previous: list[int] = []

    compute_capability = property(lambda self: "90")

    def use(self) -> None:
        _state.device = self.id

    def synchronize(self) -> None:
        """Wait for the device (a no-op here: NumPy already finished)."""

    def __enter__(self) -> "_Device":
        self._previous.append(_current_device())
        self.use()
        return self

    def __exit__(self, *exc) -> None:
        _state.device = self._previous.pop()

    def __eq__(self, other) -> bool:
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __int__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


class _Stream:
    """A CUDA stream; ``with`` (or :meth:`use`) makes it the current one of this thread."""

    _next_ptr = 1

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int = 0, priority=None) -> None:
        if null:
            self.ptr = 0
        else:
            self.ptr, _Stream._next_ptr = _Stream._next_ptr, _Stream._next_ptr + 1
        self._previous: list[_Stream] = []

    def use(self) -> "_Stream":
        _state.stream = self
        return self

    def synchronize(self) -> None:
        """Wait for the stream (a no-op here)."""

    done = property(lambda self: True)

    def __enter__(self) -> "_Stream":
        self._previous.append(_get_current_stream())
        return self.use()

    def __exit__(self, *exc) -> None:
        _state.stream = self._previous.pop()

    def __eq__(self, other) -> bool:
        return isinstance(other, _Stream) and other.ptr == self.ptr

    def __hash__(self) -> int:
        return hash(self.ptr)

    def __repr__(self) -> str:
        return f"<Stream {self.ptr}>"


_Stream.null = _Stream(null=True)


def _get_current_stream(device_id: int = -1) -> _Stream:
    return getattr(_state, "stream", _Stream.null)


def _getDeviceProperties(device: int) -> dict:
    _Device(device)  # checks the number
    return {"name": _device_names[device].encode(), "totalGlobalMem": 16 * 2**30,
            "multiProcessorCount": 1, "major": 9, "minor": 0}


def _setDevice(device: int) -> None:
    _Device(device).use()


runtime = types.ModuleType("cupy.cuda.runtime", "The CUDA runtime's device queries.")
runtime.CUDARuntimeError = _CUDARuntimeError
runtime.getDeviceCount = lambda: len(_device_names)
runtime.getDevice = _current_device
runtime.setDevice = _setDevice
runtime.getDeviceProperties = _getDeviceProperties
runtime.deviceSynchronize = lambda: None

cuda = types.ModuleType("cupy.cuda", "Devices and streams (one stand-in device by default).")
cuda.Device = _Device
cuda.Stream = _Stream
cuda.get_current_stream = _get_current_stream
cuda.is_available = lambda: True
cuda.runtime = runtime


# --------------------------------------------------------------------------- random
class _Generator:
    """CuPy's ``random.Generator`` (a subset of its methods): device arrays out."""

    def __init__(self, seed=None) -> None:
        counts.generators += 1
        self._g = _np.random.default_rng(seed)

    def random(self, size=None, dtype=_np.float64, out=None):
        return _call(self._g.random, (size,), {"dtype": dtype, "out": out})

    def standard_normal(self, size=None, dtype=_np.float64, out=None):
        return _call(self._g.standard_normal, (size,), {"dtype": dtype, "out": out})

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_np.float64):
        return _wrap(_np.asarray(self._g.uniform(low, high, size), dtype=dtype))

    def integers(self, low, high=None, size=None, dtype=_np.int64, endpoint=False):
        return _wrap(self._g.integers(low, high, size, dtype=dtype, endpoint=endpoint))


random = types.ModuleType("cupy.random", "Random generators (``default_rng`` only).")
random.Generator = _Generator
random.default_rng = lambda seed=None: _Generator(seed)


# --------------------------------------------------------------------------- lib.stride_tricks
def _as_strided(x: ndarray, shape=None, strides=None) -> ndarray:
    return _new(_np.lib.stride_tricks.as_strided(_unwrap(x), shape, strides))


def _sliding_window_view(x, window_shape, axis=None, *, subok=False, writeable=False) -> ndarray:
    """CuPy's ``sliding_window_view``, with its checks done as CuPy does them.

    CuPy checks the window on the device, one ``if`` per dimension: each is
    a device-to-host transfer, counted here. The view is read-only here
    (CuPy's cannot be written either, but has no flag to say so).
    """
    if writeable:
        raise NotImplementedError("Writeable views are not supported.")
    window_shape = tuple(window_shape) if _np.iterable(window_shape) else (window_shape,)
    for dim in asarray(window_shape):
        if dim < 0:
            raise ValueError("`window_shape` cannot contain negative values")
    return _new(_np.lib.stride_tricks.sliding_window_view(_unwrap(x), window_shape, axis))


stride_tricks = types.ModuleType("cupy.lib.stride_tricks")
stride_tricks.as_strided = _as_strided
stride_tricks.sliding_window_view = _sliding_window_view
lib = types.ModuleType("cupy.lib")
lib.stride_tricks = stride_tricks

_SUBMODULES = {"cuda": cuda, "cuda.runtime": runtime, "random": random, "lib": lib,
               "lib.stride_tricks": stride_tricks}


# --------------------------------------------------------------------------- install
_saved: list[dict] = []


def install(devices: int = 1) -> None:
    """Register this module as ``cupy`` (and its submodules) in ``sys.modules``.

    Parameters
    ----------
    devices : int
        How many CUDA devices ``cuda.runtime.getDeviceCount()`` reports.

    Notes
    -----
    Install it before ``xpcnn.backend`` first probes CuPy (the probe's answer
    is kept). :func:`uninstall` puts back what was there.
    """
    names = ["cupy", *(f"cupy.{n}" for n in _SUBMODULES)]
    _saved.append({n: sys.modules.get(n) for n in names})
    _device_names[:] = [f"fakecupy CPU stand-in {i}" for i in range(devices)]
    sys.modules["cupy"] = _self
    _self.__name__ = "cupy"  # code keys caches and messages by xp.__name__
    for name, module in _SUBMODULES.items():
        sys.modules[f"cupy.{name}"] = module


def uninstall() -> None:
    """Undo the last :func:`install`: ``sys.modules`` gets back its previous entries."""
    if len(_saved) == 1:
        _self.__name__ = __spec__.name
    for name, module in _saved.pop().items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


@contextlib.contextmanager
def installed(devices: int = 1) -> Iterator[types.ModuleType]:
    """Context manager: :func:`install` inside the block, yielding this module."""
    install(devices)
    try:
        yield _self
    finally:
        uninstall()


del _name, _dunder
