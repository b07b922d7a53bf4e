"""``xpcnn bench``: time each conv algorithm per shape, and optionally PyTorch.

Without ``--against torch`` it prints, per shape, every algorithm's time on
the chosen backend and which one ``algo="auto"`` picks, so a user can see
the choice. With ``--against torch`` it adds PyTorch's time on the same
number of threads and the ratio, for convolution forward and backward,
pooling and activations (CPU only). Every figure is the median of repeats.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import numpy as np

from .. import backend
from .. import functional as F

# (N, C, H, W, O, K, stride, padding): the tutorial's chelsea layers, then
# CIFAR- and ResNet-like layers.
SHAPES = {
    "N1 C1 300x451 O2 K3": (1, 1, 300, 451, 2, 3, 1, 0),
    "N1 C2 149x224 O3 K5": (1, 2, 149, 224, 3, 5, 1, 0),
    "N32 C3 32x32 O32 K3": (32, 3, 32, 32, 32, 3, 1, 0),
    "N32 C32 32x32 O64 K3 p1": (32, 32, 32, 32, 64, 3, 1, 1),
    "N16 C64 56x56 O64 K3 p1": (16, 64, 56, 56, 64, 3, 1, 1),
    "N16 C64 56x56 O128 K3 s2 p1": (16, 64, 56, 56, 128, 3, 2, 1),
}
BACKWARD_SHAPES = list(SHAPES)[2:]
ALGOS = tuple(a for a in F.ALGOS if a != "auto") + ("auto",)


def add_arguments(parser) -> None:
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None, help="default: xpcnn's default backend")
    parser.add_argument("--against", choices=["torch"], default=None, help="also time PyTorch (CPU) and print ratios")
    parser.add_argument("--threads", type=int, default=None, help="BLAS/torch threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per figure; the median is shown")
    parser.add_argument("--shapes", type=int, nargs="*", default=None, metavar="I", help="indices of the shapes to time")


def median_time(fn, xp, repeat: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over `repeat` calls after `warmup`, device synchronised."""
    for _ in range(warmup):
        fn()
    backend.synchronize(xp)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        backend.synchronize(xp)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(xp, repeat: int = 7, shapes=None, torch=None):
    """Yield one dict per measurement: section, case, algo, xpcnn seconds, torch seconds or None."""
    rng = np.random.default_rng(0)

    def rand(*shape):
        return xp.asarray(rng.standard_normal(shape, dtype=np.float32))

    def torch_time(fn):
        return None if torch is None else median_time(fn, np, repeat)

    for name in shapes or list(SHAPES):
        N, C, H, W, O, K, s, p = SHAPES[name]
        x, w = rand(N, C, H, W), rand(O, C, K, K)
        picked = F.choose_algo(F.conv_geometry(x.shape, w.shape, s, p), xp)
        if torch is not None:
            xt, wt = torch.from_numpy(backend.to_numpy(x)), torch.from_numpy(backend.to_numpy(w))
        t_ref = torch_time(lambda: torch.nn.functional.conv2d(xt, wt, stride=s, padding=p))
        for algo in ALGOS:
            t = median_time(lambda: F.conv2d(x, w, stride=s, padding=p, algo=algo), xp, repeat)
            label = f"auto={picked}" if algo == "auto" else algo
            yield {"section": "conv2d forward", "case": name, "algo": label, "xpcnn": t, "torch": t_ref}
        if name in BACKWARD_SHAPES:
            dy = xp.ones(F.conv2d(x, w, stride=s, padding=p).shape, dtype=x.dtype)
            if torch is not None:
                from torch.nn.grad import conv2d_input, conv2d_weight

                dyt = torch.from_numpy(backend.to_numpy(dy))

                def torch_backward():
                    conv2d_input(xt.shape, wt, dyt, stride=s, padding=p)
                    conv2d_weight(xt, wt.shape, dyt, stride=s, padding=p)

            t_ref = torch_time(torch_backward) if torch is not None else None
            t = median_time(lambda: F.conv2d_backward(dy, x, w, stride=s, padding=p), xp, repeat)
            yield {"section": "conv2d backward (dx + dw)", "case": name, "algo": "", "xpcnn": t, "torch": t_ref}

    x = rand(32, 64, 56, 56)
    xt = torch.from_numpy(backend.to_numpy(x)) if torch is not None else None
    cases = {
        "max_pool2d 2x2/2": (lambda: F.max_pool2d(x, 2), lambda: torch.nn.functional.max_pool2d(xt, 2)),
        "avg_pool2d 2x2/2": (lambda: F.avg_pool2d(x, 2), lambda: torch.nn.functional.avg_pool2d(xt, 2)),
        "relu": (lambda: F.relu(x), lambda: torch.relu(xt)),
        "sigmoid": (lambda: F.sigmoid(x), lambda: torch.sigmoid(xt)),
        "tanh": (lambda: F.tanh(x), lambda: torch.tanh(xt)),
    }
    for case, (fn, tfn) in cases.items():
        yield {
            "section": "pooling and activations, N32 C64 56x56",
            "case": case,
            "algo": "",
            "xpcnn": median_time(fn, xp, repeat),
            "torch": torch_time(tfn),
        }


def format_table(results) -> str:
    """The measurements as a text table, grouped by section in first-seen order."""
    order = list(dict.fromkeys(r["section"] for r in results))
    lines, section = [], None
    for r in sorted(results, key=lambda r: order.index(r["section"])):
        if r["section"] != section:
            section = r["section"]
            lines.append(f"\n{section}")
            lines.append(f"  {'case':30s} {'algo':12s} {'xpcnn ms':>10s} {'torch ms':>10s} {'ratio':>7s}")
        ref = r["torch"]
        ref_s = f"{ref * 1e3:10.2f}" if ref else f"{'-':>10s}"
        ratio = f"{r['xpcnn'] / ref:7.2f}" if ref else f"{'-':>7s}"
        lines.append(f"  {r['case']:30s} {r['algo']:12s} {r['xpcnn'] * 1e3:10.2f} {ref_s} {ratio}")
    return "\n".join(lines)


def machine(xp) -> str:
    """One line describing the machine, the BLAS and the libraries that were timed."""
    import os
    import platform
    import sys

    try:
        import threadpoolctl

        blas = [
            f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
            for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas"
        ]
    except ImportError:
        blas = []
    line = (
        f"{platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}, "
        f"numpy {np.__version__} [{', '.join(blas)}]"
    )
    if backend.is_device(xp):
        line += f"; cupy {xp.__version__} on {xp.cuda.runtime.getDeviceProperties(0)['name'].decode()}"
    torch = sys.modules.get("torch")
    return line + (f"; torch {torch.__version__}" if torch else "")


def run(args) -> int:
    from ..cli import UsageError

    xp = backend.module(args.backend)
    if args.repeat < 1:
        raise UsageError(f"xpcnn bench: --repeat must be >= 1, got {args.repeat}")
    names = list(SHAPES)
    if args.shapes:
        bad = [i for i in args.shapes if not 0 <= i < len(names)]
        if bad:
            raise UsageError(f"xpcnn bench: --shapes takes indices 0..{len(names) - 1}, got {bad}")
        names = [names[i] for i in args.shapes]
    torch = None
    if args.against == "torch":
        if backend.is_device(xp):
            raise UsageError("xpcnn bench: --against torch compares on the CPU; use --backend numpy")
        try:
            import torch
        except ImportError:
            raise UsageError("xpcnn bench: --against torch needs PyTorch (pip install torch)") from None
    threads = args.threads
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if threads is not None:
            raise UsageError('xpcnn bench: --threads needs threadpoolctl (pip install "xpcnn[bench]")') from None
        threadpool_limits = contextlib.nullcontext
    if torch is not None and threads is not None:
        torch.set_num_threads(threads)
    with threadpool_limits(threads):  # None: leave the BLAS threads as they are
        results = list(measure(xp, args.repeat, names, torch))
    print(f"backend={backend.get_default() if args.backend is None else args.backend}, threads={threads or 'all'}, "
          f"float32, median of {args.repeat}" + ("; ratio = xpcnn / torch (lower is better)" if torch else ""))
    print(machine(xp))
    print(format_table(results))
    return 0
