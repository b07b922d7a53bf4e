"""Inference throughput: one process against a local Dask cluster of worker processes.

Usage (from the repository root)::

    python benchmarks/dask_throughput.py [--workers 2] [--repeat 5] [--lenet-images 20000] [--digits-images 80000]

For ``xpcnn.models.lenet5`` (28x28) and ``xpcnn.models.digits_cnn`` (8x8),
on random float32 images in memory, each round times, back to back:

- ``model.predict(x)`` in this process with NumPy's BLAS threads as they are
  (OpenBLAS: one per core);
- the same with one BLAS thread (threadpoolctl);
- ``model.predict(dask_x).compute()`` on the ``LocalCluster`` that
  ``xpcnn predict`` starts (``xpcnn.commands.predict.local_cluster``), of
  `--workers` single-threaded processes, the images already held by the workers
  (persisted once, as a cluster reading a shared file system would stream
  them), the outputs gathered back here.

The figures are medians over `--repeat` rounds, after a warm-up round, in
images per second; the speed-ups are ratios of medians of the same run.
Each run's CPU time (this process's, or the sum over the workers') tells
what the cores were given: on a machine shared with other jobs, images per
CPU-second show whether the workers lost efficiency or only cores. It
also reports how many times each worker unpickled the model during one
``compute`` (at most once: the weights travel to each worker once).

This is a script, not an asv benchmark (nothing here starts with ``time_``).
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import statistics
import subprocess
import time

import numpy as np


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def measure(name, model, shape, client, batch_size, repeat):
    import dask.array as da
    from distributed import wait
    from threadpoolctl import threadpool_limits

    from xpcnn import scaleout
    from xpcnn.commands.predict import chunk_rows

    threads = sum(client.nthreads().values())
    rows = chunk_rows(shape[0], 4 * int(np.prod(shape[1:])), batch_size, threads)
    # Drawn on the workers and kept there; this process gets its own copy of the same images.
    xd = client.persist(da.random.default_rng(0).random(shape, chunks=(rows,) + shape[1:], dtype=np.float32))
    wait(xd)
    x = xd.compute()

    def one_process():
        t, c = time.perf_counter(), time.process_time()
        model.predict(x, batch_size=batch_size)
        return time.perf_counter() - t, time.process_time() - c

    def one_thread():
        with threadpool_limits(1):
            return one_process()

    def cluster():
        c = client.run(time.process_time)
        t = time.perf_counter()
        client.compute(model.predict(xd, batch_size=batch_size)).result()
        wall = time.perf_counter() - t
        return wall, sum(client.run(time.process_time).values()) - sum(c.values())

    runs = {"one process, default BLAS threads": one_process, "one process, 1 BLAS thread": one_thread,
            f"{len(client.nthreads())} workers x 1 thread": cluster}
    for f in runs.values():  # warm-up: imports on the workers, first-call allocations
        f()
    walls, cpus = {k: [] for k in runs}, {k: [] for k in runs}
    for _ in range(repeat):
        for k, f in runs.items():
            wall, cpu = f()
            walls[k].append(wall)
            cpus[k].append(cpu)
    before = client.run(scaleout.models_received)
    cluster()
    loads = {w: n - before.get(w, 0) for w, n in client.run(scaleout.models_received).items()}
    rates = {k: len(x) / statistics.median(v) for k, v in walls.items()}
    print(f"\n{name}: {len(x)} images {x.shape[1:]}, {len(xd.chunks[0])} tasks of up to {rows} images, "
          f"batch {batch_size}; model {len(pickle.dumps(model)) / 1024:.0f} KiB pickled, "
          f"unpickled per worker in one compute: {sorted(loads.values())}")
    for k, r in rates.items():
        spread = f"{min(len(x) / t for t in walls[k]):,.0f}-{max(len(x) / t for t in walls[k]):,.0f}"
        per_cpu = len(x) / statistics.median(cpus[k])
        print(f"  {k:<36} {r:>9,.0f} images/s  (range {spread}); {per_cpu:>7,.0f} images per CPU-second")
    one, single, cl = (rates[k] for k in runs)
    cpu_single, cpu_cluster = (statistics.median(cpus[k]) for k in list(runs)[1:])
    print(f"  speed-up of the cluster: {cl / one:.2f}x over one process, {cl / single:.2f}x over one "
          f"single-threaded process; the cluster's CPU time per image is {cpu_cluster / cpu_single:.2f}x the latter's")
    del xd


def main() -> None:
    import distributed

    from xpcnn.commands.predict import local_cluster
    from xpcnn.models import digits_cnn, lenet5

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lenet-images", type=int, default=20000)
    parser.add_argument("--digits-images", type=int, default=80000)
    args = parser.parse_args()

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; load average before: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with local_cluster(args.workers, 1, dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        measure("LeNet-5", lenet5(0), (args.lenet_images, 1, 28, 28), client, args.batch_size, args.repeat)
        measure("digits CNN", digits_cnn(0), (args.digits_images, 1, 8, 8), client, args.batch_size, args.repeat)
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"(above {os.cpu_count()}: other processes shared the cores)")


if __name__ == "__main__":
    main()
