"""Is xpcnn the fastest NumPy CNN? Convolution against the NumPy libraries people use.

Usage (from the repository root)::

    pip install ".[compare]"    # numpycnn, pygad, dezero, mygrad, numpy-ml
    python benchmarks/numpy_libraries.py [--threads 1] [--repeat 15] [--loop-repeat 1]

Every library that imports is timed; this script installs nothing. The
libraries, each called through its own public convolution:

* **numpycnn** (the tutorial's own package, ``numpycnn.conv``) and
  **pygad** (``pygad.cnn.Conv2D``): per-pixel Python loops, one image, no
  gradients; they share only the tutorial's layer 1, forward.
* **DeZero** (``dezero.functions.conv2d``), **MyGrad**
  (``mygrad.nnet.conv_nd``) and **numpy-ml**
  (``numpy_ml.neural_nets.layers.Conv2D``, NHWC): batched, with gradients.

Workloads: the tutorial's layer 1 (the 300x451 gray chelsea-sized image, two
3x3 filters, float64; xpcnn through ``xpcnn.tutorial.conv``, as the tutorial
is written), and float32 batches N32 C3 32x32 O32 K3 and N32 C32 32x32 O64
K3 padding 1; each forward, and forward plus backward (input and weight
gradients; DeZero, MyGrad and numpy-ml always compute the input gradient, so
xpcnn does too). Every library gets its inputs in its own layout, made
before the timing.

Before anything is timed, each library's output and gradients are compared
with xpcnn's (float64: within 1e-10, float32: 1e-4 of the largest value); a
library that disagrees is reported and not timed. A result in another dtype
than the input's is named next to its time (numpy-ml's input gradient of a
float32 batch is float64).
numpycnn leaves the last row and column of each map at zero (its loop
bounds); it is compared on the rest, and timed only if that border is
exactly zero.

Timing: all libraries run on the same NumPy and BLAS (``--threads`` BLAS
threads, default 1: the GEMMs are small and a shared machine's second core
is rarely free). Each round times every batched library once, in rotating
order, each call right after an untimed one; a figure is the median of
``--repeat`` rounds and a ratio (library / xpcnn, above 1: xpcnn is faster)
the median of the rounds' ratios, so slow spells of a shared machine hit all
alike. As in ``xpcnn bench``, a 30 MiB block is allocated and freed first, so
that no library pays for fresh pages on every call. The loop libraries take about a second per call and run
``--loop-repeat`` times (best) after the rest.

Import shims for current NumPy and Python, applied here and nowhere else:
DeZero 0.0.13 reads ``np.int`` at import (removed in NumPy 1.24), numpy-ml
0.1.2 imports ``collections.Hashable`` (moved to ``collections.abc`` in
Python 3.10).
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import contextlib
import functools
import io
import statistics
import sys
import time
import warnings
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from xpcnn import functional as F
from xpcnn import tutorial
from xpcnn.commands.bench import machine, settle_allocator, warm_time

#: name -> (N, C, H, W, O, K, padding, dtype); layer 1 is one gray image.
WORKLOADS = {
    "layer 1: 300x451, 2 filters 3x3, float64": (1, 1, 300, 451, 2, 3, 0, "float64"),
    "N32 C3 32x32 O32 K3, float32": (32, 3, 32, 32, 32, 3, 0, "float32"),
    "N32 C32 32x32 O64 K3 p1, float32": (32, 32, 32, 32, 64, 3, 1, "float32"),
}
LAYER1 = next(iter(WORKLOADS))
MODES = ("forward", "forward + backward")
LOOP_LIBRARIES = ("numpycnn", "pygad")
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


# --- imports, with the shims they need -------------------------------------------------------


def _import(name):
    """The library's module(s), or None when it does not import."""
    try:
        if name == "dezero":
            np.int = int  # DeZero 0.0.13 uses it in default arguments, read at import
            try:
                import dezero
                import dezero.functions
            finally:
                del np.int
            return dezero
        if name == "numpy-ml":
            if not hasattr(collections, "Hashable"):
                collections.Hashable = collections.abc.Hashable  # numpy_ml.utils.data_structures
            with warnings.catch_warnings():  # its rl_models warn that OpenAI gym is missing
                warnings.simplefilter("ignore")
                import numpy_ml.neural_nets.layers

            return numpy_ml.neural_nets.layers
        if name == "mygrad":
            import mygrad
            import mygrad.nnet

            return mygrad
        if name == "pygad":
            import pygad.cnn

            return pygad.cnn
        if name == "numpycnn":
            import numpycnn

            return numpycnn
    except ImportError:
        return None
    raise ValueError(name)


# --- each library on a workload: forward() and train() in its own layout, results as NCHW -----
#
# An adapter returns {"forward": fn() -> y, "train": fn() -> (y, dx, dw) or None,
# "nchw": fn(result) -> the same arrays as NumPy, NCHW / (O, C, KH, KW)}.


def _xpcnn(mod, x, w, dy, p):
    if x.shape[:2] == (1, 1):  # the tutorial's layer: its own API and layouts
        img, bank = x[0, 0], w[:, 0]
        forward = functools.partial(tutorial.conv, img, bank)
    else:
        forward = functools.partial(F.conv2d, x, w, padding=p)

    def train():
        y = F.conv2d(x, w, padding=p)
        dx, dw, _ = F.conv2d_backward(dy, x, w, padding=p)
        return y, dx, dw

    def nchw(r):
        if isinstance(r, tuple):
            return r
        return r.transpose(2, 0, 1)[None] if r.ndim == 3 else r

    return {"forward": forward, "train": train, "nchw": nchw}


def _dezero(dz, x, w, dy, p):
    DF = dz.functions

    def forward():
        with dz.no_grad():
            return DF.conv2d(x, w, pad=p).data

    def train():
        xv, wv = dz.Variable(x), dz.Variable(w)
        y = DF.conv2d(xv, wv, pad=p)
        y.grad = dz.Variable(dy)
        y.backward()
        return y.data, xv.grad.data, wv.grad.data

    return {"forward": forward, "train": train, "nchw": lambda r: r}


def _mygrad(mg, x, w, dy, p):
    def forward():
        return mg.nnet.conv_nd(x, w, stride=1, padding=p, constant=True).data

    def train():
        xt, wt = mg.tensor(x), mg.tensor(w)
        y = mg.nnet.conv_nd(xt, wt, stride=1, padding=p)
        y.backward(dy)
        return y.data, xt.grad, wt.grad

    return {"forward": forward, "train": train, "nchw": lambda r: r}


def _numpy_ml(layers, x, w, dy, p):
    layer = layers.Conv2D(out_ch=w.shape[0], kernel_shape=w.shape[2:], pad=p, stride=1)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NHWC
    dyh = np.ascontiguousarray(dy.transpose(0, 2, 3, 1))
    layer.forward(xh[:1], retain_derived=False)  # builds the parameters
    layer.parameters["W"] = np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # (KH, KW, C, O)
    layer.parameters["b"] = np.zeros((1, 1, 1, w.shape[0]), dtype=x.dtype)

    def forward():
        return layer.forward(xh, retain_derived=False)

    def train():
        y = layer.forward(xh, retain_derived=False)
        dx, dw, _ = layer._bwd(dyh, xh, y)  # what Conv2D.backward runs, without its list bookkeeping
        return y, dx, dw

    def nchw(r):
        if isinstance(r, tuple):
            y, dx, dw = r
            return y.transpose(0, 3, 1, 2), dx.transpose(0, 3, 1, 2), dw.transpose(3, 2, 0, 1)
        return r.transpose(0, 3, 1, 2)

    return {"forward": forward, "train": train, "nchw": nchw}


def _numpycnn(mod, x, w, dy, p):
    img, bank = x[0, 0], w[:, 0]

    def forward():
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Filter 1", ...
            return mod.conv(img, bank)

    return {"forward": forward, "train": None, "nchw": lambda r: r.transpose(2, 0, 1)[None]}


def _pygad(cnn, x, w, dy, p):
    img = x[0, 0][:, :, None]  # pygad wants the channel axis
    layer = cnn.Conv2D(num_filters=w.shape[0], kernel_size=w.shape[2], previous_layer=cnn.Input2D(img.shape))
    layer.trained_weights = np.ascontiguousarray(w.transpose(0, 2, 3, 1))  # (F, K, K, C)

    def forward():
        layer.conv(img)
        return layer.layer_output

    return {"forward": forward, "train": None, "nchw": lambda r: r.transpose(2, 0, 1)[None]}


ADAPTERS = {
    "xpcnn": _xpcnn,
    "DeZero": _dezero,
    "MyGrad": _mygrad,
    "numpy-ml": _numpy_ml,
    "numpycnn": _numpycnn,
    "pygad": _pygad,
}
MODULES = {"xpcnn": "xpcnn", "DeZero": "dezero", "MyGrad": "mygrad", "numpy-ml": "numpy-ml",
           "numpycnn": "numpycnn", "pygad": "pygad"}  # fmt: skip


def _version(lib: str) -> str:
    try:
        return version(MODULES[lib])
    except PackageNotFoundError:
        return "?"


# --- checking -----------------------------------------------------------------------------------


def check(lib: str, got, want, dtype: str) -> tuple[str | None, str]:
    """``(reason, note)``: reason is None if `got` (arrays, NCHW) matches `want` (xpcnn's).

    A result in another dtype than the input's is compared all the same, and
    named in the note.
    """
    names = ("output", "input gradient", "weight gradient")
    notes = []
    for name, a, b in zip(names, got, want):
        a = np.asarray(a)
        if a.shape != b.shape:
            return f"{name} has shape {a.shape}, xpcnn's {b.shape}", ""
        if a.dtype != np.dtype(dtype):
            notes.append(f"{name} in {a.dtype}")
        if lib == "numpycnn" and name == "output":
            # Its loops never write the last row and column: compare the rest, and that border must be 0.
            if np.any(a[..., -1, :]) or np.any(a[..., :, -1]):
                return "the last row/column of its maps is not the zero border its loops leave"
            a, b = a[..., :-1, :-1], b[..., :-1, :-1]
        err = float(np.max(np.abs(a - b)))
        scale = float(np.max(np.abs(b)))
        if not err <= TOLERANCE[dtype] * scale:
            return f"{name} differs from xpcnn's by {err:.3g} (largest value {scale:.3g})", ""
    return None, ", ".join(notes)


# --- timing -------------------------------------------------------------------------------------


def run_rounds(fns: dict, repeat: int) -> dict:
    """Per library, the seconds of `repeat` warm calls, taken in rotating order round by round."""
    times = {lib: [] for lib in fns}
    libs = list(fns)
    for r in range(repeat):
        k = r % len(libs)
        for lib in libs[k:] + libs[:k]:
            times[lib].append(warm_time(fns[lib], np))
    return times


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads for every library (default 1)")
    ap.add_argument("--repeat", type=int, default=15, help="timed rounds of the batched libraries (median)")
    ap.add_argument("--loop-repeat", type=int, default=1, help="timed calls of numpycnn and pygad (best); 0 skips them")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    settle_allocator(np.empty)  # large blocks reuse freed memory, as in a long-running program
    modules = {lib: (True if lib == "xpcnn" else _import(MODULES[lib])) for lib in ADAPTERS}
    present = [lib for lib, m in modules.items() if m is not None]
    missing = [lib for lib, m in modules.items() if m is None]
    print(f"CPU: {cpu_model()}; {machine(np)}; BLAS threads {args.threads}")
    print("libraries: " + ", ".join(f"{lib} {_version(lib)}" for lib in present)
          + (f"; not importable: {', '.join(missing)}" if missing else ""))  # fmt: skip
    print(f"median of {args.repeat} interleaved rounds; ratio = library / xpcnn (above 1: xpcnn faster)")
    summary = []
    with threadpool_limits(args.threads):
        for wname, (N, C, H, W, O, K, p, dtype) in WORKLOADS.items():
            rng = np.random.default_rng(0)
            x = rng.standard_normal((N, C, H, W)).astype(dtype)
            w = rng.standard_normal((O, C, K, K)).astype(dtype)
            OH, OW = H + 2 * p - K + 1, W + 2 * p - K + 1
            dy = rng.standard_normal((N, O, OH, OW)).astype(dtype)
            for mode in MODES:
                key = "forward" if mode == "forward" else "train"
                fns, loops, refused, notes = {}, {}, {}, {}
                want = None
                for lib in present:
                    if lib in LOOP_LIBRARIES and (wname != LAYER1 or args.loop_repeat < 1):
                        continue
                    ad = ADAPTERS[lib](modules[lib], x, w, dy, p)
                    fn = ad[key]
                    if fn is None:
                        continue
                    out = ad["nchw"](fn())
                    out = tuple(np.asarray(a) for a in (out if isinstance(out, tuple) else (out,)))
                    if lib == "xpcnn":
                        want = out
                    else:
                        reason, notes[lib] = check(lib, out, want, dtype)
                        if reason:
                            refused[lib] = reason
                            continue
                    (loops if lib in LOOP_LIBRARIES else fns)[lib] = fn
                times = run_rounds(fns, args.repeat)
                for lib, fn in loops.items():
                    times[lib] = [min(seconds_of(fn) for _ in range(args.loop_repeat))]
                ours = times["xpcnn"]
                print(f"\n{wname}, {mode}")
                print(f"  {'library':10s} {'ms':>10s} {'ratio':>8s}")
                for lib, t in times.items():
                    if lib in loops:
                        ratio = t[0] / statistics.median(ours)
                    else:
                        ratio = statistics.median(a / b for a, b in zip(t, ours))
                    note = f"  ({notes[lib]})" if notes.get(lib) else ""
                    print(f"  {lib:10s} {statistics.median(t) * 1e3:10.3f} {ratio:8.2f}{note}")
                for lib, reason in refused.items():
                    print(f"  {lib:10s} not timed: {reason}")
                rivals = {lib: statistics.median(a / b for a, b in zip(t, ours)) for lib, t in times.items()
                          if lib != "xpcnn" and lib not in loops}  # fmt: skip
                if rivals:
                    best = min(rivals, key=rivals.get)
                    summary.append((wname, mode, best, rivals[best]))
    print("\nxpcnn against the fastest other library (ratio above 1: xpcnn is the fastest):")
    for wname, mode, best, ratio in summary:
        print(f"  {wname}, {mode}: {best} {ratio:.2f}" + ("" if ratio > 1 else "  <- not fastest"))
    return 0


def seconds_of(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
