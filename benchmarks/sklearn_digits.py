"""CNNClassifier's defaults on scikit-learn's digits: accuracy and time of a 5-fold cross-validation.

Usage (from the repository root)::

    python benchmarks/sklearn_digits.py [--seeds 0 1 2] [--threads 1]

For each seed: ``cross_val_score(CNNClassifier(input_shape=(1, 8, 8),
random_state=seed), X / 16, y, cv=5)`` (unshuffled stratified folds, as
scikit-learn does by default), its mean, the wall time and the CPU time of
the process. ``--threads`` caps NumPy's BLAS threads (threadpoolctl); on a
busy machine a spinning second BLAS thread costs far more wall time than it
saves, so the CPU time is the steadier figure there.

This is a script, not an asv benchmark (nothing here starts with ``time_``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score

from xpcnn.commands.bench import machine
from xpcnn.sklearn import CNNClassifier


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: NumPy's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    X, y = load_digits(return_X_y=True)
    X = X / 16
    print(f"{machine(np)}; BLAS threads: {args.threads or 'default'}")
    means = []
    for seed in args.seeds:
        wall, cpu = time.perf_counter(), time.process_time()
        scores = cross_val_score(CNNClassifier(input_shape=(1, 8, 8), random_state=seed), X, y, cv=5)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        means.append(scores.mean())
        print(f"seed {seed}: folds {' '.join(f'{s:.4f}' for s in scores)}  mean {scores.mean():.4f}  "
              f"wall {wall:.1f} s  cpu {cpu:.1f} s", flush=True)
    print(f"mean over seeds {sum(means) / len(means):.4f}, lowest {min(means):.4f}")


if __name__ == "__main__":
    main()
