"""xpcnn next to PyTorch on the CPU, as ratios measured in one run.

Usage::

    python benchmarks/compare_torch.py [--threads 2] [--repeat 15] [--shapes 0 1 2]

The same table as ``xpcnn bench --against torch --threads 2``: both libraries
on the same number of threads (threadpoolctl for NumPy's BLAS,
``torch.set_num_threads``), every figure the median of repeats after a
warm-up. Without PyTorch installed only xpcnn's times are printed. The
tutorial's loop implementation is compared separately by
``benchmarks/tutorial_speed.py``.
"""

import argparse
import importlib.util
import sys

from xpcnn.cli import main as xpcnn_main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--shapes", type=int, nargs="*", default=None)
    args = ap.parse_args(argv)
    cmd = ["bench", "--backend", "numpy", "--threads", str(args.threads), "--repeat", str(args.repeat)]
    if importlib.util.find_spec("torch") is not None:
        cmd += ["--against", "torch"]
    else:
        print("PyTorch is not installed: printing xpcnn's times only (pip install torch==2.13.0 for ratios)")
    if args.shapes is not None:
        cmd += ["--shapes", *map(str, args.shapes)]
    return xpcnn_main(cmd)


if __name__ == "__main__":
    sys.exit(main())
