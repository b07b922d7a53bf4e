"""``xpcnn bench``: time each conv algorithm per shape, and optionally PyTorch.

Without ``--against torch`` it prints, per shape, every algorithm's time on
the chosen backend and which one ``algo="auto"`` picks, so a user can see
the choice. With ``--against torch`` it adds PyTorch's time on the same
number of threads and the ratio, for convolution forward and backward,
pooling and activations (CPU only). Every figure is the median of repeats;
xpcnn and PyTorch (in its own process) take turns, one call each per round,
so a shared machine's slow spells hit both alike.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import backend, config
from .. import functional as F
from .train import positive_int

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
    parser.add_argument("--threads", type=positive_int, default=None, help="BLAS/torch threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per figure; the median is shown")
    parser.add_argument("--shapes", type=int, nargs="*", default=None, metavar="I", help="indices of the shapes to time")
    parser.add_argument("--autotune", action="store_true",
                        help='let algo="auto" time the algorithms once per shape (xpcnn.config.conv_autotune)')


def time_once(fn, xp) -> float:
    """Seconds of one call of ``fn()``, the device synchronised after it."""
    t0 = time.perf_counter()
    fn()
    backend.synchronize(xp)
    return time.perf_counter() - t0


def settle_allocator(empty) -> None:
    """Allocate, touch and free one 30 MiB block, as a long-running program has done.

    glibc's malloc serves large blocks with fresh ``mmap`` pages (a page fault
    per 4 KiB on first touch) until a large block is freed; then it raises
    its threshold and reuses heap memory. Doing this first in both
    processes compares them in that steady state, whatever ran before (it
    changed PyTorch's time for shape C six-fold on one machine).
    """
    block = empty(30 * 2**20 // 4)
    block[:] = 0
    del block


def _cases(xp, shapes, torch=None):
    """``(section, case, algo, fn)`` for every timing, for xpcnn on `xp` or, given `torch`, for PyTorch.

    Inputs are drawn from the same seeded generator in both, so the two see
    the same numbers.
    """
    rng = np.random.default_rng(0)

    def rand(*shape):
        a = rng.standard_normal(shape, dtype=np.float32)
        return torch.from_numpy(a) if torch is not None else xp.asarray(a)

    for name in shapes:
        N, C, H, W, O, K, s, p = SHAPES[name]
        g = F.conv_geometry((N, C, H, W), (O, C, K, K), s, p)
        x, w, dy = rand(N, C, H, W), rand(O, C, K, K), rand(N, O, g.OH, g.OW)
        if torch is None:
            F.conv2d(x, w, stride=s, padding=p)  # the first "auto" call: the trial, with --autotune
            picked = F.choose_algo(g, xp, x.dtype)
            for algo in ALGOS:
                label = f"auto={picked}" if algo == "auto" else algo
                yield "conv2d forward", name, label, functools.partial(F.conv2d, x, w, stride=s, padding=p, algo=algo)
            backward = functools.partial(F.conv2d_backward, dy, x, w, stride=s, padding=p)
        else:
            from torch.nn.grad import conv2d_input, conv2d_weight

            yield "conv2d forward", name, None, functools.partial(torch.nn.functional.conv2d, x, w, stride=s, padding=p)

            def backward(x=x, w=w, dy=dy, s=s, p=p):
                conv2d_input(x.shape, w, dy, stride=s, padding=p)
                conv2d_weight(x, w.shape, dy, stride=s, padding=p)

        if name in BACKWARD_SHAPES:
            yield "conv2d backward (dx + dw)", name, "", backward

    x = rand(32, 64, 56, 56)
    lib = torch.nn.functional if torch is not None else F
    ops = {
        "max_pool2d 2x2/2": functools.partial(lib.max_pool2d, x, 2),
        "avg_pool2d 2x2/2": functools.partial(lib.avg_pool2d, x, 2),
        "relu": functools.partial(lib.relu, x),
        "sigmoid": functools.partial(torch.sigmoid if torch is not None else F.sigmoid, x),
        "tanh": functools.partial(torch.tanh if torch is not None else F.tanh, x),
    }
    for case, fn in ops.items():
        yield "pooling and activations, N32 C64 56x56", case, "", fn


#: Seconds to wait after timing xpcnn, before timing PyTorch, and back.
#: OpenBLAS's threads keep spinning for about 2**28 cycles (~0.1 s) after a
#: call, and slowed PyTorch's small convolutions 16-fold when not waited
#: out; PyTorch's OpenMP threads spin for a shorter while.
PAUSE_AFTER_XPCNN_S = 0.15
PAUSE_AFTER_TORCH_S = 0.05


def warm_time(fn, xp) -> float:
    """Seconds of one call of ``fn()`` right after an untimed one.

    After the other library's turn the caches hold its data and the thread
    pools may be asleep; the untimed call brings both back, so the timed one
    measures the steady state, as in a loop.
    """
    fn()
    backend.synchronize(xp)
    return time_once(fn, xp)


def measure(xp, repeat: int = 7, shapes=None, reference=None) -> list[dict]:
    """Median times of every case, one dict per (case, algorithm).

    Each case runs `repeat` rounds; a round times every algorithm once (in
    rotating order, each after an untimed call: :func:`warm_time`) and,
    given a `reference` (a :class:`TorchWorker`), PyTorch likewise, so slow
    and fast spells of a shared machine hit both alike. ``ratio`` is the
    median of the per-round ratios xpcnn / PyTorch.
    """
    groups: dict = {}
    for sec, case, algo, fn in _cases(xp, shapes or list(SHAPES)):
        groups.setdefault((sec, case), []).append((algo, fn))
    results = []
    for (sec, case), fns in groups.items():
        key = f"{sec}|{case}"
        ours: dict = {algo: [] for algo, _ in fns}
        ref = []
        for _, fn in fns:  # first calls: buffers, plans, CuPy's kernel compilation
            fn()
        for r in range(repeat):
            k = r % len(fns)
            for algo, fn in fns[k:] + fns[:k]:
                ours[algo].append(warm_time(fn, xp))
            if reference is not None:
                time.sleep(PAUSE_AFTER_XPCNN_S)
                ref.append(reference.time(key))
                time.sleep(PAUSE_AFTER_TORCH_S)
        for algo, times in ours.items():
            results.append({
                "section": sec,
                "case": case,
                "algo": algo,
                "xpcnn": statistics.median(times),
                "torch": statistics.median(ref) if ref else None,
                "ratio": statistics.median(a / b for a, b in zip(times, ref)) if ref else None,
            })
    return results


def _torch_worker(shapes, threads) -> None:
    """PyTorch's side of :class:`TorchWorker`: read a case key per line, time one call, print seconds."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    settle_allocator(torch.empty)
    cases = {f"{sec}|{case}": fn for sec, case, _, fn in _cases(np, shapes, torch)}
    print("ready", flush=True)
    with torch.no_grad():
        for line in sys.stdin:
            print(warm_time(cases[line.strip()], np), flush=True)


class TorchWorker:
    """PyTorch (CPU) in its own interpreter, timing one call of a case when asked.

    Its OpenMP threads keep spinning after each call and slowed NumPy's BLAS
    threads by up to 2x when both shared one process, so the two never do.
    """

    def __init__(self, shapes, threads: int | None):
        code = "import json, sys; from xpcnn.commands.bench import _torch_worker; _torch_worker(*json.loads(sys.argv[1]))"
        self._stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: warnings can never fill it up
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps([list(shapes), threads])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        self._read()  # "ready", or the error that stopped it

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self._stderr.seek(0)
            err = self._stderr.read().strip().splitlines()
            raise RuntimeError(f"timing PyTorch failed: {err[-1] if err else 'its process exited'}")
        return line

    def time(self, key: str) -> float:
        """Seconds of one PyTorch call of case `key` (``"section|case"``), as :func:`warm_time`."""
        self.proc.stdin.write(key + "\n")
        self.proc.stdin.flush()
        return float(self._read())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
        self._stderr.close()


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
        ratio = f"{r['ratio']:7.2f}" if ref else f"{'-':>7s}"
        lines.append(f"  {r['case']:30s} {r['algo']:12s} {r['xpcnn'] * 1e3:10.2f} {ref_s} {ratio}")
    return "\n".join(lines)


def machine(xp) -> str:
    """One line describing the machine, the BLAS and the libraries that were timed."""
    import os
    import platform

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
        device = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)  # the current device, where the bench ran
        line += f"; cupy {xp.__version__} on {device['name'].decode()}"
    return line


def _torch_version() -> str:
    from importlib.metadata import version

    return version("torch")


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
    if args.against == "torch":
        if backend.is_device(xp):
            raise UsageError("xpcnn bench: --against torch compares on the CPU; use --backend numpy")
        if importlib.util.find_spec("torch") is None:
            raise UsageError("xpcnn bench: --against torch needs PyTorch (pip install torch)")
    threads = args.threads
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if threads is not None:
            raise UsageError('xpcnn bench: --threads needs threadpoolctl (pip install "xpcnn[bench]")') from None
        threadpool_limits = contextlib.nullcontext
    torch = args.against == "torch"
    settle_allocator(np.empty)
    reference = TorchWorker(names, threads) if torch else None
    saved = config.conv_autotune
    try:
        config.conv_autotune = args.autotune or saved
        with threadpool_limits(threads):  # None: leave the BLAS threads as they are
            results = measure(xp, args.repeat, names, reference)
    finally:
        config.conv_autotune = saved
        if reference is not None:
            reference.close()
    print(f"backend={backend.get_default() if args.backend is None else args.backend}, threads={threads or 'all'}, "
          f"float32, median of {args.repeat}, auto {'timed' if args.autotune or saved else 'by rule'}"
          + ("; ratio = xpcnn / torch (lower is better), median of the rounds' ratios" if torch else ""))
    print(machine(xp) + (f"; torch {_torch_version()}" if torch else ""))
    print(format_table(results))
    return 0
