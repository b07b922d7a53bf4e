"""Inference over data sets larger than memory, on Dask (the ``dask`` extra).

:meth:`xpcnn.Sequential.predict` hands a ``dask.array.Array`` to
:func:`predict`, which returns a lazy Dask array of the outputs: one task per
chunk of images, each running the ordinary in-memory ``predict`` on its
chunk, on NumPy or CuPy chunks alike (the chunks' array type decides where a
worker computes). Dask itself is imported only here, and only when a Dask
array arrives, so ``import xpcnn`` stays light.

The model enters the task graph once, as one key that every chunk's task
depends on: Dask computes it on one worker and copies it to each other worker
the first time that worker needs it, so the weights cross the network once
per worker, not once per chunk (as ``client.scatter(model, broadcast=True)``
would, but with any scheduler).
"""

from __future__ import annotations

import copy
import importlib
import threading
from typing import Any

from . import backend
from .backend import get_array_module

__all__ = ["INSTALL_HINT", "import_optional", "is_dask_array", "models_received", "predict"]

INSTALL_HINT = 'pip install "xpcnn[dask]"'


def import_optional(name: str, what: str = "predicting over a Dask array"):
    """Import module `name` of the ``dask`` extra (dask.array, distributed, zarr) or say how to install it.

    Raises
    ------
    ModuleNotFoundError
        If the module cannot be imported; the message names `what` needs it
        and the install command.

    Examples
    --------
    >>> import_optional("dask.array").__name__
    'dask.array'
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{what} needs {name}, which is not installed ({exc}); install it with: {INSTALL_HINT}",
            name=name,
        ) from exc


def is_dask_array(x: Any) -> bool:
    """Whether `x` is a ``dask.array.Array`` (checked by type, without importing Dask).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> is_dask_array(da.zeros(3)), is_dask_array(np.zeros(3))
    (True, False)
    """
    return any(t.__module__.startswith("dask.array") and t.__name__ == "Array" for t in type(x).__mro__)


_received = 0
_received_lock = threading.Lock()


def models_received() -> int:
    """How many models this process has unpickled for Dask tasks so far.

    Run it on the workers (``client.run(models_received)``) before and after a
    computation: each worker's count grows by at most one per ``predict``
    graph, however many chunks it computed, since the weights travel to each
    worker once.

    Examples
    --------
    >>> import dask.array as da
    >>> from xpcnn import Sequential, Dense
    >>> model = Sequential(Dense(2, 1, seed=0))
    >>> before = models_received()
    >>> _ = model.predict(da.ones((4, 2), dtype="float32", chunks=2)).compute(scheduler="threads")
    >>> models_received() - before  # threads share the model: nothing was unpickled
    0
    """
    return _received


class _Predictor:
    """What the chunks' tasks share: the model (host weights when pickled) and the batch size.

    A worker that receives NumPy chunks uses the model as it arrived; one that
    receives CuPy chunks makes one device copy and keeps it for its later
    chunks (under a lock: a worker runs several tasks in threads).
    """

    def __init__(self, model, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self._copies: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # the lock and the device copies stay behind
        return {"model": self.model, "batch_size": self.batch_size}

    def __setstate__(self, state: dict) -> None:
        global _received
        with _received_lock:
            _received += 1
        self.__init__(state["model"], state["batch_size"])

    def _model_on(self, name: str):
        if self.model.backend in (None, name):
            return self.model
        with self._lock:
            if name not in self._copies:
                self._copies[name] = copy.deepcopy(self.model).to(name)
            return self._copies[name]

    def __call__(self, block):
        xp = get_array_module(block)
        model = self._model_on(backend.name_of(xp))
        if block.shape[0] == 0:  # a chunk emptied by slicing: predict refuses zero samples
            return xp.empty((0,) + model.output_shape(block.shape[1:]), dtype=model.dtype or block.dtype)
        return model.predict(block, batch_size=self.batch_size)


def _apply(block, predictor: _Predictor):
    return predictor(block)


def predict(model, x, batch_size: int = 256):
    """Lazy ``model.predict`` over a Dask array, one task per chunk of images.

    Called by :meth:`xpcnn.Sequential.predict` when `x` is a
    ``dask.array.Array``; nothing runs until the result is computed or stored.

    Parameters
    ----------
    model : Sequential
    x : dask.array.Array, shape (N, ...) float
        Chunks of NumPy or CuPy arrays. The per-sample axes are rechunked
        whole (a task sees whole images); axis 0 keeps its chunks.
    batch_size : int, default 256
        Images per forward pass inside a task.

    Returns
    -------
    dask.array.Array, shape (N, ...)
        The outputs, chunked like `x` along axis 0, of the model's dtype; its
        ``meta`` (chunk type) is the input's: NumPy chunks in, NumPy chunks
        out; CuPy in, CuPy out.

    Raises
    ------
    TypeError
        If `x` is not a float array.
    ValueError
        If `x` holds no sample, its per-sample shape is unknown or does not
        fit the layers, or `batch_size` < 1.
    ModuleNotFoundError
        If dask.array cannot be imported (the message gives the install command).

    Examples
    --------
    >>> import dask.array as da
    >>> from xpcnn import Sequential, Flatten, Dense
    >>> model = Sequential(Flatten(), Dense(4, 3, seed=0), input_shape=(1, 2, 2))
    >>> x = da.random.default_rng(0).random((10, 1, 2, 2), chunks=5).astype("float32")
    >>> y = model.predict(x)
    >>> y.shape, y.chunks, y.dtype
    ((10, 3), ((5, 5), (3,)), dtype('float32'))
    >>> bool(abs(y.compute() - model.predict(x.compute())).max() == 0)
    True
    """
    from .model import _int_arg  # noqa: PLC0415 -- model imports this module

    dask = import_optional("dask")
    da = import_optional("dask.array")
    batch_size = _int_arg(batch_size, "batch_size", 1)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be a float array (e.g. images scaled to [0, 1]), got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample (N, ...), got shape {tuple(x.shape)}")
    sample = tuple(x.shape[1:])
    if any(s != s for s in sample):  # NaN: unknown chunk sizes
        raise ValueError(f"x's per-sample shape must be known, got {sample} (call x.compute_chunk_sizes())")
    out = model.output_shape(sample)  # ValueError naming the layer that does not fit, before any task
    x = x.rechunk({axis: -1 for axis in range(1, x.ndim)})
    host = model if model.backend in (None, "numpy") else copy.deepcopy(model).to("numpy")
    token = dask.base.tokenize(repr(host), list(host._arrays()), batch_size)
    shared = dask.delayed(_Predictor(host, batch_size), name=f"xpcnn-model-{token}", pure=True)
    dtype = model.dtype or x.dtype
    meta = get_array_module(x._meta).empty((0,) * (1 + len(out)), dtype=dtype)
    extra = {}
    if len(out) < len(sample):
        extra["drop_axis"] = list(range(1 + len(out), x.ndim))
    elif len(out) > len(sample):
        extra["new_axis"] = list(range(x.ndim, 1 + len(out)))
    return da.map_blocks(
        _apply, x, shared, chunks=(x.chunks[0],) + tuple((s,) for s in out), meta=meta, dtype=dtype,
        name=f"xpcnn-predict-{dask.base.tokenize(x, token)}", **extra,
    )
