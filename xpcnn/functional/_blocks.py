"""Large host-side ops in cache-sized blocks, spread over a few threads.

NumPy runs each ufunc on one core, one full pass over memory at a time. The
element-wise ops and pooling instead cut their arrays into blocks that fit
the L2 cache, so that an op of several passes (the sigmoid has four) reads
and writes main memory once, and hand one contiguous run of blocks to each
of :func:`num_threads` threads. NumPy releases the GIL inside its loops, so
the runs go on at once. Results do not depend on the blocking: every output
element is computed by the same operations in the same order.

On a GPU nothing is split: one launch per step is parallel already.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .. import config
from ..backend import Array, get_array_module, is_device

#: Bytes of one block: a block's input and output fit the L2 cache of
#: current x86 and Arm cores together (measured: 256 KiB to 1 MiB blocks time
#: the same; 64 KiB costs more in calls, 4 MiB falls out of the cache).
BLOCK_BYTES = 512 * 2**10

#: Outputs smaller than this run on the calling thread alone: handing work to
#: another thread costs tens of microseconds, more than it saves below this.
PARALLEL_MIN_BYTES = 2**20

ENV_VAR = "XPCNN_NUM_THREADS"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def num_threads() -> int:
    """Threads that host-side ops use: ``config.num_threads``, else ``XPCNN_NUM_THREADS``, else all cores.

    Raises
    ------
    ValueError
        If the setting is not a positive integer; the message names the
        setting and its value.
    """
    value, source = config.num_threads, "xpcnn.config.num_threads"
    if value is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if not env:
            return _cpu_count()
        value, source = env, ENV_VAR
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or isinstance(value, (bool, float)):
        raise ValueError(f"{source} must be a positive integer (or None for all cores), got {value!r}")
    return n


_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared worker pool, grown to at least `workers` threads."""
    global _pool, _pool_workers
    with _lock:
        if _pool is None or _pool_workers < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)  # its idle threads exit; running work finishes
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xpcnn")
            _pool_workers = workers
        return _pool


def _forget_pool() -> None:
    # A forked child has none of the parent's threads: start a fresh pool there.
    global _pool, _pool_workers, _lock
    _lock = threading.Lock()
    _pool, _pool_workers = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def for_blocks(fn: Callable[[int, int], None], n: int, block: int, *, parallel: bool = True, context=None) -> None:
    """Call ``fn(lo, hi)`` on consecutive blocks ``[lo, hi)`` covering ``range(n)``.

    Blocks hold at most `block` items. With `parallel`, the blocks are dealt
    out as one contiguous run per thread (up to :func:`num_threads`); the
    calling thread takes the first run. `fn` must only write its own block.
    `context`, if given, is a callable returning a context manager that
    wraps each run (NumPy's ``errstate`` is per thread, so it has to be set
    in each).

    Raises
    ------
    Exception
        Whatever `fn` raises, after every run has stopped.
    """
    block = max(1, int(block))
    nblocks = -(-n // block)
    k = min(num_threads(), nblocks) if parallel else 1
    per = -(-nblocks // max(k, 1)) * block
    runs = [(lo, min(lo + per, n)) for lo in range(0, n, per)] if n > 0 else []

    def run(lo: int, hi: int) -> None:
        with context() if context is not None else contextlib.nullcontext():
            for a in range(lo, hi, block):
                fn(a, min(a + block, hi))

    if len(runs) <= 1:
        for lo, hi in runs:
            run(lo, hi)
        return
    pool = _executor(len(runs) - 1)
    futures = [pool.submit(run, lo, hi) for lo, hi in runs[1:]]
    try:
        run(*runs[0])
    finally:
        errors = [f.exception() for f in futures]  # waits: no thread may still write after we return
    for exc in errors:
        if exc is not None:
            raise exc


def elementwise(kernel: Callable, *inputs: Array, out: Array, context=None) -> Array:
    """``kernel(*input_blocks, out_block)`` over matching flat blocks; returns `out`.

    `kernel` writes ``f(inputs)`` into its last argument, element by element.
    Inputs must have `out`'s shape. Non-contiguous or small arrays, and
    device arrays, go to `kernel` whole in one call.
    """
    xp = get_array_module(out)
    arrays = (*inputs, out)
    if is_device(xp) or out.nbytes < 2 * BLOCK_BYTES or not all(a.flags.c_contiguous for a in arrays):
        with context() if context is not None else contextlib.nullcontext():
            kernel(*arrays)
        return out
    flats = [a.reshape(-1) for a in arrays]

    def fn(lo: int, hi: int) -> None:
        kernel(*(f[lo:hi] for f in flats))

    for_blocks(fn, out.size, BLOCK_BYTES // out.itemsize, parallel=out.nbytes >= PARALLEL_MIN_BYTES, context=context)
    return out


_zeros: dict = {}


def zeros_for(out: Array):
    """Zeros of `out`'s shape and dtype, as an input operand: shared, never to be written.

    NumPy's ``maximum`` runs about 4x faster on two arrays than on an array
    and a scalar, so ReLU compares with a block of zeros. Arrays larger than
    one block (only when unblocked) and device arrays get a scalar 0.
    """
    xp = get_array_module(out)
    if is_device(xp) or out.nbytes > BLOCK_BYTES:
        return out.dtype.type(0)
    z = _zeros.get(out.dtype)
    if z is None:
        z = _zeros[out.dtype] = xp.zeros(BLOCK_BYTES // out.itemsize, dtype=out.dtype)
        z.flags.writeable = False
    return z[: out.size].reshape(out.shape)
