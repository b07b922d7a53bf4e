"""What scikit-learn's interface costs: ``CNNClassifier.fit`` against ``Sequential.fit`` on the same work.

Usage (from the repository root)::

    python benchmarks/sklearn_overhead.py [--epochs 3] [--repeat 9] [--threads 1] [--backend numpy|cupy]

Both train :func:`xpcnn.models.classifier` for ``(1, 8, 8)`` (the network
``CNNClassifier(input_shape=(1, 8, 8))`` builds) on scikit-learn's 1,797
digits with Adam, the same epochs and batch size. ``CNNClassifier.fit`` also
validates ``X`` and ``y`` (scikit-learn's ``validate_data``), encodes the
labels, builds the network and reshapes the rows; ``Sequential.fit`` gets
the images and int labels ready-made and a network built beforehand. The two
run interleaved, ``--repeat`` times each after a warm-up, and the figure is
the median of the per-round ratios (time, and process CPU time) -- a ratio
of 1.03 means 3% overhead.

This is a script, not an asv benchmark (nothing here starts with ``time_``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.datasets import load_digits

from xpcnn import backend
from xpcnn.models import classifier
from xpcnn.optim import Adam
from xpcnn.commands.bench import machine
from xpcnn.sklearn import CNNClassifier


def clock(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: NumPy's own choice)")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    args = parser.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    X, y = load_digits(return_X_y=True)
    X = X / 16  # float64 rows, as a scikit-learn user has them
    images = X.reshape(-1, 1, 8, 8).astype(np.float32)
    xp = backend.module(args.backend)

    def estimator():
        CNNClassifier(input_shape=(1, 8, 8), epochs=args.epochs, random_state=0, backend=args.backend).fit(X, y)
        backend.synchronize(xp)

    def sequential():
        with backend.use(args.backend):
            model = classifier((1, 8, 8), 10, seed=0)
        model.fit(images, y, epochs=args.epochs, batch_size=32, optimizer=Adam(lr=2e-3), seed=0, progress=False)
        backend.synchronize(xp)

    estimator(), sequential()  # warm-up: imports, caches, the allocator
    wall, cpu = [], []
    for _ in range(args.repeat):
        (ew, ec), (sw, sc) = clock(estimator), clock(sequential)
        wall.append(ew / sw)
        cpu.append(ec / sc)
    print(f"{machine(xp)}; BLAS threads: {args.threads or 'default'}")
    print(f"backend {args.backend}; {args.epochs} epochs of 1,797 digits; {args.repeat} interleaved rounds")
    print(f"CNNClassifier.fit / Sequential.fit: median ratio {statistics.median(wall):.3f} (time), "
          f"{statistics.median(cpu):.3f} (CPU time); range {min(wall):.3f}-{max(wall):.3f}")


if __name__ == "__main__":
    main()
