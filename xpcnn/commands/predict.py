"""``xpcnn predict``: apply a saved model to an image collection larger than memory, on Dask.

Examples
--------
::

    xpcnn predict lenet.npz images.npy --out logits.npy             # a local cluster sized to the machine
    xpcnn predict lenet.npz images.zarr --out logits.zarr --workers 4 --threads-per-worker 1
    xpcnn predict lenet.npz /shared/images.zarr --out /shared/logits.zarr --scheduler tcp://10.0.0.5:8786

INPUT is a ``.npy`` file or a zarr array of shape ``(N, C, H, W)``, or
``(N, H, W)`` for one channel; float, or uint8 scaled by 1/255 as
:func:`xpcnn.data.load_mnist` scales MNIST. Each task reads only its own rows
(a ``.npy`` file is memory-mapped for the time of one read), so the input is
never read whole, by the workers or by this process. OUTPUT (``.npy`` or
``.zarr``) receives ``Sequential.predict``'s values, written by the workers
chunk by chunk into a hidden ``.OUTPUT.partial-PID`` next to OUTPUT, which is
renamed to OUTPUT only once every chunk is written: an interrupted or failed
run leaves no OUTPUT (and removes the partial one unless it was killed).

With ``--scheduler`` the workers open INPUT and OUTPUT by these paths, so
they must see the same file system (a ``.npy`` OUTPUT: the same machine;
zarr: any shared file system, one file per chunk).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time

import numpy as np

from .. import scaleout
from ..model import Sequential
from .train import positive_int

#: Float32 bytes of input per task when --chunk-size is not given.
CHUNK_BYTES = 32 * 2**20


class NpyRows:
    """A ``.npy`` file as Dask reads and writes it: only the path is pickled into tasks.

    Each read or write maps the file, copies the rows and unmaps it at once,
    so a worker's memory holds its chunks, never pages of the whole file.
    """

    def __init__(self, path: str, shape: tuple, dtype) -> None:
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        return np.array(np.load(self.path, mmap_mode="r")[key])

    def __setitem__(self, key, value) -> None:
        np.lib.format.open_memmap(self.path, mode="r+")[key] = value


def _usage(message: str):
    from ..cli import UsageError

    return UsageError(f"xpcnn predict: {message}")


def _is_zarr(path: str) -> bool:
    return "://" in path or path.rstrip("/\\").endswith(".zarr") or os.path.isdir(path)


def open_input(path: str):
    """The INPUT array (a zarr array or an :class:`NpyRows`), checked to be (N, C, H, W) or (N, H, W), float or uint8."""
    if _is_zarr(path):
        zarr = scaleout.import_optional("zarr", "a zarr INPUT")
        try:
            source = zarr.open_array(path, mode="r")
        except Exception as exc:  # zarr raises several types for a missing or foreign store
            raise _usage(f"INPUT {path} is not a readable zarr array ({type(exc).__name__}: {exc})") from None
    else:
        if not os.path.isfile(path):
            raise _usage(f"INPUT {path} does not exist (expected a .npy file or a zarr array)")
        with open(path, "rb") as fh:
            magic = fh.read(len(np.lib.format.MAGIC_PREFIX))
        if magic.startswith(b"PK"):
            raise _usage(f"INPUT {path} is an .npz archive; expected one array in a .npy file or a zarr array")
        if magic != np.lib.format.MAGIC_PREFIX:
            raise _usage(f"INPUT {path} is not a .npy file (it starts with {magic!r}); expected a .npy file or a zarr array")
        try:
            mm = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _usage(f"INPUT {path} is not a readable .npy file ({exc})") from None
        source = NpyRows(path, mm.shape, mm.dtype)
    dtype = np.dtype(source.dtype)
    if dtype.kind != "f" and dtype != np.uint8:
        raise _usage(f"INPUT {path} has dtype {dtype}; expected float (values as the model was trained on) or uint8")
    if source.ndim not in (3, 4) or source.shape[0] == 0:
        raise _usage(f"INPUT {path} has shape {tuple(source.shape)}; expected (N, C, H, W) or (N, H, W) with N >= 1")
    return source


def _scale_uint8(block):
    out = block.astype("float32")
    out /= 255  # as xpcnn.data.load_mnist: astype then divide in place
    return out


def input_array(source, rows: int):
    """INPUT as a float Dask array (N, C, H, W) in chunks of `rows` images."""
    import dask
    import dask.array as da

    chunks = (rows,) + tuple(source.shape[1:])
    if isinstance(source, NpyRows):
        stat = os.stat(source.path)
        name = "xpcnn-npy-" + dask.base.tokenize(os.path.abspath(source.path), stat.st_mtime_ns, stat.st_size, rows)
        x = da.from_array(source, chunks=chunks, name=name, meta=np.empty((0,) * source.ndim, source.dtype))
    else:
        x = da.from_zarr(source, chunks=chunks)
    if x.dtype == np.uint8:
        x = x.map_blocks(_scale_uint8, dtype=np.float32)
    return x[:, None] if x.ndim == 3 else x


def _partial_name(out: str) -> str:
    folder, base = os.path.split(os.path.abspath(out))
    return os.path.join(folder, f".{base}.partial-{os.getpid()}")


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


def create_output(path: str, kind: str, shape: tuple, dtype, rows: int):
    """An empty OUTPUT array at `path` (`kind` ``".npy"`` or ``".zarr"``) that the workers fill chunk by chunk."""
    if kind == ".npy":
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        return NpyRows(path, shape, dtype)
    zarr = scaleout.import_optional("zarr", "a zarr OUTPUT")
    return zarr.open_array(path, mode="w", shape=shape, chunks=(rows,) + tuple(shape[1:]), dtype=dtype)


def _finish(partial: str, out: str) -> None:
    """Make the complete output visible under its name (data on disk first, then the rename)."""
    if os.path.isfile(partial):
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
    if os.path.isdir(out):  # an older zarr output: out of the way, then the new one in
        old = _partial_name(out) + ".old"
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out)


def _check_output(out: str, inp: str) -> None:
    folder = os.path.dirname(os.path.abspath(out))
    if not out.endswith((".npy", ".zarr")):
        raise _usage(f"--out {out}: expected a name ending in .npy or .zarr")
    if not os.path.isdir(folder):
        raise _usage(f"--out {out}: folder {folder} does not exist")
    if os.path.abspath(out) == os.path.abspath(inp):
        raise _usage(f"--out {out} is INPUT itself")
    if out.endswith(".npy") and os.path.isdir(out):
        raise _usage(f"--out {out} is a folder, expected a .npy file name")
    if out.endswith(".zarr") and os.path.exists(out) and not any(
        os.path.exists(os.path.join(out, meta)) for meta in ("zarr.json", ".zarray")
    ):
        raise _usage(f"--out {out} exists and is not a zarr array; it is left alone")


def local_cluster(workers: int, threads_per_worker: int, **kwargs):
    """A ``distributed.LocalCluster`` of worker processes on the loopback, with glibc's malloc left adaptive.

    dask.distributed starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``
    (to hand freed memory back to the OS at once). Setting it also turns off
    glibc's adaptive mmap threshold, so every temporary array above 128 KiB
    is mapped and unmapped anew; a forward pass allocates many, and took
    1.3x (digits CNN) to 1.7x (LeNet-5) the CPU time per image with it. The
    memory a task frees stays in the worker for the next one instead.
    """
    import dask
    import distributed

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                                        host="127.0.0.1", **{"dashboard_address": "127.0.0.1:0", **kwargs})


def chunk_rows(n: int, sample_bytes: int, batch_size: int, threads: int) -> int:
    """Images per task: a multiple of the batch size, about CHUNK_BYTES of input, and 4 tasks per thread when N allows."""
    batches = max(1, min(CHUNK_BYTES // (batch_size * sample_bytes), math.ceil(n / (4 * threads * batch_size))))
    return batches * batch_size


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model file written by xpcnn train or Sequential.save")
    parser.add_argument("input", metavar="INPUT",
                        help=".npy file or zarr array, (N, C, H, W) or (N, H, W); float, or uint8 (scaled by 1/255)")
    parser.add_argument("--out", required=True, metavar="OUTPUT", help="a .npy file or .zarr folder to write")
    parser.add_argument("--batch-size", type=positive_int, default=256, metavar="B",
                        help="images per forward pass inside a task (default 256)")
    parser.add_argument("--chunk-size", type=positive_int, metavar="IMAGES",
                        help="images per task (default: about 32 MiB of float32 input, a multiple of B)")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="worker processes of the local cluster (default: one per core)")
    parser.add_argument("--threads-per-worker", type=positive_int, metavar="T", help="default 1")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="use this running dask.distributed scheduler (e.g. tcp://host:8786) instead of a local cluster")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.scheduler and (args.workers or args.threads_per_worker):
        raise _usage("--workers and --threads-per-worker size the local cluster; not with --scheduler")
    _check_output(args.out, args.input)
    distributed = scaleout.import_optional("distributed", "xpcnn predict")
    scaleout.import_optional("dask.array", "xpcnn predict")
    model = Sequential.load(args.model)
    source = open_input(args.input)
    n, sample = source.shape[0], tuple(source.shape[1:])
    if len(sample) == 2:
        sample = (1,) + sample
    try:
        out_shape = (n,) + model.output_shape(sample)
    except ValueError as exc:
        raise _usage(f"INPUT {args.input} does not fit {args.model}: {exc}") from None
    dtype = model.dtype or np.float32
    partial = _partial_name(args.out)
    with contextlib.ExitStack() as stack:
        # Runs last, once the local workers are gone: a failed or interrupted run leaves no partial output.
        stack.callback(_remove, partial)
        if args.scheduler:
            client = stack.enter_context(distributed.Client(args.scheduler))
        else:
            per_worker = args.threads_per_worker or 1
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            cluster = stack.enter_context(local_cluster(args.workers or max(1, cores // per_worker), per_worker))
            client = stack.enter_context(distributed.Client(cluster))
        threads = max(1, sum(client.nthreads().values()))
        rows = args.chunk_size or chunk_rows(n, 4 * math.prod(sample), args.batch_size, threads)
        x = input_array(source, rows)
        target = create_output(partial, os.path.splitext(args.out)[1], out_shape, dtype, rows)
        y = model.predict(x, batch_size=args.batch_size)
        start = time.perf_counter()
        future = client.compute(y.store(target, lock=False, compute=False))
        if not args.no_progress:
            distributed.progress(future)
        future.result()
        seconds = time.perf_counter() - start
        _finish(partial, args.out)
    print(f"{args.out}: {n} predictions of shape {out_shape[1:]} ({np.dtype(dtype)}) in {seconds:.1f} s "
          f"({n / seconds:,.0f} images/s) on {threads} threads, "
          f"{len(y.chunks[0])} tasks of up to {rows} images")
    return 0
