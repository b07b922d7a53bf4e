"""Print xpcnn's speed next to PyTorch's on the CPU, as ratios measured in one run.

Usage::

    python benchmarks/compare_torch.py [--threads 2] [--repeat 15] [--quick]

Both libraries run on the same number of threads (threadpoolctl for NumPy's
BLAS, ``torch.set_num_threads`` for PyTorch). Every figure is the median of
`--repeat` timed calls after a warm-up. PyTorch is optional: without it only
xpcnn's times are printed. The same table is what ``xpcnn bench --against
torch`` prints.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

from xpcnn import functional as F

# (N, C, H, W, O, K, stride, padding)
SHAPES = {
    "N1 C1 300x451 O2 K3": (1, 1, 300, 451, 2, 3, 1, 0),
    "N1 C2 149x224 O3 K5": (1, 2, 149, 224, 3, 5, 1, 0),
    "N32 C3 32x32 O32 K3": (32, 3, 32, 32, 32, 3, 1, 0),
    "N32 C32 32x32 O64 K3 p1": (32, 32, 32, 32, 64, 3, 1, 1),
    "N16 C64 56x56 O64 K3 p1": (16, 64, 56, 56, 64, 3, 1, 1),
    "N16 C64 56x56 O128 K3 s2 p1": (16, 64, 56, 56, 128, 3, 2, 1),
}
BACKWARD_SHAPES = list(SHAPES)[2:]
ALGOS = ("einsum", "gemm", "shift", "auto")


def median_time(fn, repeat: int, warmup: int = 2) -> float:
    """Median wall time of `fn()` in seconds over `repeat` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _torch(threads: int):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def rows(threads: int = 2, repeat: int = 15, algos=ALGOS, shapes=None):
    """Yield one dict per measurement: section, case, xpcnn seconds, torch seconds or None."""
    torch = _torch(threads)
    rng = np.random.default_rng(0)
    shapes = shapes or list(SHAPES)
    for name in shapes:
        N, C, H, W, O, K, s, p = SHAPES[name]
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        w = rng.standard_normal((O, C, K, K), dtype=np.float32)
        t_ref = None
        if torch is not None:
            xt, wt = torch.from_numpy(x), torch.from_numpy(w)
            with torch.no_grad():
                t_ref = median_time(lambda: torch.nn.functional.conv2d(xt, wt, stride=s, padding=p), repeat)
        for algo in algos:
            t = median_time(lambda: F.conv2d(x, w, stride=s, padding=p, algo=algo), repeat)
            yield {"section": "conv2d forward", "case": name, "algo": algo, "xpcnn": t, "torch": t_ref}
        if name in BACKWARD_SHAPES:
            dy = rng.standard_normal(F.conv2d(x, w, stride=s, padding=p).shape, dtype=np.float32)
            t_ref = None
            if torch is not None:
                from torch.nn.grad import conv2d_input, conv2d_weight

                xt, wt, dyt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(dy)

                def torch_backward():
                    conv2d_input(xt.shape, wt, dyt, stride=s, padding=p)
                    conv2d_weight(xt, wt.shape, dyt, stride=s, padding=p)

                t_ref = median_time(torch_backward, repeat)
            t = median_time(lambda: F.conv2d_backward(dy, x, w, stride=s, padding=p), repeat)
            yield {"section": "conv2d backward (dx+dw)", "case": name, "algo": "", "xpcnn": t, "torch": t_ref}

    x = rng.standard_normal((32, 64, 56, 56), dtype=np.float32)
    cases = {
        "max_pool2d 2x2/2": (lambda: F.max_pool2d(x, 2), "max_pool2d"),
        "avg_pool2d 2x2/2": (lambda: F.avg_pool2d(x, 2), "avg_pool2d"),
        "relu": (lambda: F.relu(x), "relu"),
        "sigmoid": (lambda: F.sigmoid(x), "sigmoid"),
    }
    for case, (fn, tname) in cases.items():
        t_ref = None
        if torch is not None:
            xt = torch.from_numpy(x)
            tfn = getattr(torch.nn.functional, tname) if tname != "sigmoid" else torch.sigmoid
            args = (2,) if "pool" in tname else ()
            t_ref = median_time(lambda: tfn(xt, *args), repeat)
        yield {"section": "pooling / activations (N32 C64 56x56)", "case": case, "algo": "", "xpcnn": median_time(fn, repeat), "torch": t_ref}


def format_table(results) -> str:
    lines = []
    section = None
    # Group by section, keeping first-seen order (measurements interleave sections).
    order = list(dict.fromkeys(r["section"] for r in results))
    for r in sorted(results, key=lambda r: order.index(r["section"])):
        if r["section"] != section:
            section = r["section"]
            lines.append(f"\n{section}")
            lines.append(f"  {'case':30s} {'algo':7s} {'xpcnn ms':>10s} {'torch ms':>10s} {'ratio':>7s}")
        ref = r["torch"]
        ref_s = f"{ref * 1e3:10.2f}" if ref else f"{'-':>10s}"
        ratio = f"{r['xpcnn'] / ref:7.2f}" if ref else f"{'-':>7s}"
        lines.append(f"  {r['case']:30s} {r['algo']:7s} {r['xpcnn'] * 1e3:10.2f} {ref_s} {ratio}")
    return "\n".join(lines)


def machine() -> str:
    try:
        import threadpoolctl

        blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})" for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    except ImportError:
        blas = []
    torch = sys.modules.get("torch")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}, "
        f"numpy {np.__version__} [{', '.join(blas)}]" + (f", torch {torch.__version__}" if torch else ", torch not installed")
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="3 repeats, auto only")
    args = ap.parse_args(argv)
    repeat = 3 if args.quick else args.repeat
    algos = ("auto",) if args.quick else ALGOS
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("threadpoolctl is missing: pip install 'xpcnn[bench]'", file=sys.stderr)
        return 2
    with threadpool_limits(args.threads):
        results = list(rows(args.threads, repeat, algos))
    print(f"threads={args.threads}, median of {repeat}; ratio = xpcnn / torch (lower is better)")
    print(machine())
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
