"""Peak memory of ``xpcnn predict`` on an input larger than the whole cluster's memory limit.

Usage (from the repository root)::

    python benchmarks/dask_memory.py [--gib 4] [--workers 2] [--memory-limit 1GiB] [--dir /tmp] [--keep]

Writes a ``--gib`` GiB ``.npy`` of random float32 28x28 images (a block at a
time, never whole in memory) into ``--dir``, starts the ``LocalCluster`` that
``xpcnn predict`` starts (``local_cluster``), of `--workers` single-threaded
worker processes of ``--memory-limit`` each (the nanny restarts a worker that
passes 95% of it), and runs ``xpcnn predict`` with ``xpcnn.models.lenet5`` on
it through ``--scheduler``. It reports the
peak resident memory of every worker process and of this process (the
client), as the kernel counts it (``getrusage``'s ``ru_maxrss``), whether a
worker was restarted, and compares 1,000 random output rows with the
in-memory ``predict``. The files are deleted at the end unless ``--keep``.

This is a script, not an asv benchmark (nothing here starts with ``peakmem_``).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

import numpy as np


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_images(path: str, n: int, side: int, block: int = 32768) -> None:
    """An .npy of n random float32 (1, side, side) images, written a block at a time."""
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_2_0(
            fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                 "shape": (n, 1, side, side)})
        for start in range(0, n, block):
            fh.write(rng.random((min(block, n - start), 1, side, side), dtype=np.float32).tobytes())


def main() -> None:
    import dask
    import distributed
    from threadpoolctl import threadpool_limits

    from xpcnn.cli import main as xpcnn_main
    from xpcnn.commands.predict import local_cluster
    from xpcnn.model import Sequential
    from xpcnn.models import lenet5

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="input size in GiB (default 4)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="1GiB", help="per worker (default 1GiB)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the input and output go (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the input and output files")
    args = parser.parse_args()

    side = 28
    n = int(args.gib * 2**30) // (4 * side * side)
    need = n * 4 * side * side * 1.05 + 2**28
    free = shutil.disk_usage(args.dir).free
    if free < need:
        raise SystemExit(f"{args.dir}: {free / 2**30:.1f} GiB free, the benchmark needs {need / 2**30:.1f} GiB")
    folder = tempfile.mkdtemp(prefix="xpcnn-dask-memory-", dir=args.dir)
    inp, out, model_file = (os.path.join(folder, f) for f in ("images.npy", "logits.npy", "lenet5.npz"))
    try:
        t = time.perf_counter()
        write_images(inp, n, side)
        print(f"input: {inp}, {n:,} images (1, {side}, {side}) float32, {os.path.getsize(inp) / 2**30:.2f} GiB, "
              f"written in {time.perf_counter() - t:.0f} s")
        model = lenet5(0)
        model.save(model_file)
        limit = dask.utils.parse_bytes(args.memory_limit)
        with local_cluster(args.workers, 1, memory_limit=limit, dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            before = set(client.scheduler_info()["workers"])
            print(f"cluster: {args.workers} workers x {limit / 2**30:.2f} GiB memory limit = "
                  f"{args.workers * limit / 2**30:.2f} GiB in all")
            client_before = peak_rss()
            code = xpcnn_main(["predict", model_file, inp, "--out", out, "--batch-size", str(args.batch_size),
                               "--scheduler", cluster.scheduler_address, "--no-progress"])
            if code:
                raise SystemExit(f"xpcnn predict exited with {code}")
            peaks = client.run(peak_rss)
            restarted = set(client.scheduler_info()["workers"]) != before
        for address, peak in sorted(peaks.items()):
            print(f"  worker {address}: peak RSS {peak / 2**20:,.0f} MiB ({peak / limit:.0%} of its limit)")
        print(f"  client (this process): peak RSS {peak_rss() / 2**20:,.0f} MiB "
              f"({client_before / 2**20:,.0f} MiB before predict)")
        print(f"  a worker was restarted: {'yes' if restarted else 'no'}")
        rows = np.sort(np.random.default_rng(1).choice(n, size=1000, replace=False))
        x = np.load(inp, mmap_mode="r")[rows]
        with threadpool_limits(1):
            ref = Sequential.load(model_file).predict(x)
        # Batches of other images than in the run's chunks: equal up to float32 rounding.
        diff = float(np.abs(np.load(out, mmap_mode="r")[rows] - ref).max())
        print(f"  1,000 random output rows against the in-memory predict: max |difference| {diff:.1e} "
              f"(outputs up to {float(np.abs(ref).max()):.2f})")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
