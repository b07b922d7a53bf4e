"""How much faster is xpcnn.tutorial than the tutorial's loops? The whole chelsea pipeline.

Usage (from the repository root)::

    python benchmarks/tutorial_speed.py [--threads 2] [--repeat 20] [--backend numpy|cupy]

Both sides run the tutorial's network on the same gray chelsea image
(300 x 451) with the same filters (``xpcnn.commands.demo.tutorial_filters``,
seed 0): three layers of conv -> ReLU -> 2x2 max pool. The loops
(``benchmarks/tutorial_loops.py``, a faithful copy of the tutorial's code)
take seconds, so they run once, timed honestly from the first conv to the
last pool; xpcnn's figure is the median of `--repeat` runs after one
warm-up. The two do not compute exactly the same numbers (the loops shift
the maps and drop pooling windows, see ``xpcnn.tutorial``), but they do the
same work on the same data.

This is a script, not an asv benchmark: the loop baseline is too slow to
repeat. Nothing here starts with ``time_``, so asv collects nothing from it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import time

import numpy as np

from xpcnn import backend, tutorial
from xpcnn.commands.demo import load_image, tutorial_filters

try:
    from . import tutorial_loops as loops
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import tutorial_loops as loops


def loop_pipeline(img, banks):
    """The tutorial's own three layers, as its example script chains them."""
    x = img
    with contextlib.redirect_stdout(io.StringIO()):  # the tutorial prints "Filter 1", ...
        for bank in banks:
            x = loops.pooling(loops.relu(loops.conv(x, bank)), 2, 2)
    return x


def measure_xpcnn(img, banks, repeat: int) -> list[float]:
    """Seconds per whole xpcnn pipeline run (device synchronised), after one warm-up."""
    xp = backend.get_array_module(img)
    tutorial.pipeline(img, banks)
    times = []
    for _ in range(repeat):
        backend.synchronize(xp)
        t0 = time.perf_counter()
        tutorial.pipeline(img, banks)
        backend.synchronize(xp)
        times.append(time.perf_counter() - t0)
    return times


def measure_loops(img, banks, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        loop_pipeline(img, banks)
        times.append(time.perf_counter() - t0)
    return times


def _limit_threads(n: int | None):
    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("threadpoolctl is not installed: --threads ignored", file=sys.stderr)
        return contextlib.nullcontext()
    return threadpool_limits(limits=n)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads for xpcnn (default: library default)")
    parser.add_argument("--repeat", type=int, default=20, help="timed xpcnn runs (median reported)")
    parser.add_argument("--loop-repeat", type=int, default=1, help="timed runs of the slow loop version")
    parser.add_argument("--backend", default="numpy", help="backend of the xpcnn side (numpy or cupy)")
    args = parser.parse_args(argv)

    img = load_image("chelsea")
    banks = tutorial_filters(seed=0)
    x = backend.asarray(img, args.backend)
    banks_xp = [backend.asarray(b, args.backend) for b in banks]

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} logical CPUs, "
          f"python {platform.python_version()}, numpy {np.__version__}")  # fmt: skip
    if args.backend != "numpy":
        xp = backend.module(args.backend)
        print(f"device: {xp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, cupy {xp.__version__}")
    print(f"image: chelsea, gray {img.shape}; filters {[b.shape for b in banks]}")
    with _limit_threads(args.threads):
        ours = measure_xpcnn(x, banks_xp, args.repeat)
    med = statistics.median(ours)
    threads = "default" if args.threads is None else args.threads
    print(f"xpcnn.tutorial ({args.backend}, BLAS threads: {threads}): median {med * 1e3:.2f} ms "
          f"over {args.repeat} runs (min {min(ours) * 1e3:.2f} ms, max {max(ours) * 1e3:.2f} ms)")  # fmt: skip
    sys.stdout.flush()
    theirs = measure_loops(img, banks, args.loop_repeat)
    loop_s = min(theirs)
    print(f"tutorial loops (numpy, one thread of Python): {loop_s:.2f} s "
          f"({'one run' if args.loop_repeat == 1 else f'best of {args.loop_repeat} runs'})")  # fmt: skip
    print(f"speed-up: {loop_s / med:,.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
