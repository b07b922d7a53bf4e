"""
Convolution algorithms and what ``auto`` picks
==============================================

:func:`xpcnn.functional.conv2d` has five algorithms that compute the same
numbers in different ways:

- ``"gemm"``: an im2col buffer and one matrix product per chunk of the batch;
- ``"rows"``: the ``KW`` column shifts of the input copied once, then one
  matrix product per kernel row;
- ``"shift"``: one matrix product per kernel offset, no im2col buffer;
- ``"tiles"``: one image at a time, an exact im2col per tile of output rows;
- ``"einsum"``: a window view and ``xp.einsum``, the shortest code.

``algo="auto"`` (the default) picks one per shape and backend by a fixed rule
(:func:`~xpcnn.functional.rule_algo`), or by timing them once per shape when
:data:`xpcnn.config.conv_autotune` is on. This example times every algorithm
on a few shapes, on the machine that built these pages, and marks ``auto``'s
pick. The shapes are kept small so the docs build stays quick; ``xpcnn bench``
times larger ones.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

from xpcnn import functional as F

# (label, x shape (N, C, H, W), weight shape (O, C, KH, KW), stride, padding)
SHAPES = [
    ("tutorial layer 1", (1, 1, 300, 451), (2, 1, 3, 3), 1, 0),
    ("few channels", (16, 3, 32, 32), (32, 3, 3, 3), 1, 1),
    ("32 -> 64 channels", (8, 32, 32, 32), (64, 32, 3, 3), 1, 1),
    ("strided", (8, 32, 28, 28), (64, 32, 3, 3), 2, 1),
]
ALGOS = [a for a in F.ALGOS if a != "auto"]
rng = np.random.default_rng(0)


def time_calls(calls, rounds=3, repeat=3):
    """Fastest time of each call in ms.

    Each round runs every call in turn: once untimed (its scratch buffers,
    shared between the algorithms, are sized for it again), then `repeat`
    times timed, back to back, as a program that calls it runs. Rounds
    spread a slow spell of a busy machine over all the calls alike.
    """
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, fn in calls.items():
            fn()
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], 1e3 * (time.perf_counter() - t0))
    return best


# %%
# All algorithms agree
# --------------------
# Each result is compared with ``einsum``'s; the differences are float32
# rounding (the algorithms sum in different orders).

timings, picks = {}, {}
for label, xs, ws, stride, pad in SHAPES:
    x = rng.standard_normal(xs, dtype=np.float32)
    w = rng.standard_normal(ws, dtype=np.float32)
    ref = F.conv2d(x, w, stride=stride, padding=pad, algo="einsum")
    calls = {a: lambda a=a: F.conv2d(x, w, stride=stride, padding=pad, algo=a) for a in ALGOS}
    diffs = {a: float(np.abs(call() - ref).max() / np.abs(ref).max()) for a, call in calls.items()}
    for algo, ms in time_calls(calls).items():
        timings[label, algo] = ms
    g = F.conv_geometry(xs, ws, stride=stride, padding=pad)
    picks[label] = F.choose_algo(g, np, np.float32)
    print(f"{label:18} output {ref.shape}, largest relative difference to einsum: "
          f"{max(diffs.values()):.1e}")

# %%
# Time per algorithm
# ------------------
# Times are relative to the fastest algorithm for each shape (1.0 is the
# fastest); the outlined bar is the one ``auto`` runs. They were measured
# while these pages were built, on whatever else that machine was doing: on
# a busy machine, multi-threaded BLAS calls wait for their threads and the
# figures scatter. ``xpcnn bench`` measures with more care, and the
# Performance page of the user guide says what to expect on which CPU.

for label, *_ in SHAPES:
    row = "  ".join(f"{a} {timings[label, a]:7.2f} ms" for a in ALGOS)
    print(f"{label:18} auto -> {picks[label]:5}  {row}")

fig, ax = plt.subplots(figsize=(8, 4))
width = 0.8 / len(ALGOS)
for i, algo in enumerate(ALGOS):
    rel = [timings[label, algo] / min(timings[label, a] for a in ALGOS) for label, *_ in SHAPES]
    bars = ax.bar(np.arange(len(SHAPES)) + (i - (len(ALGOS) - 1) / 2) * width, rel, width, label=algo)
    for bar, (label, *_) in zip(bars, SHAPES):
        if picks[label] == algo:
            bar.set_edgecolor("black")
            bar.set_linewidth(2)
ax.set_yscale("log")  # ratios: 2x slower and 2x faster sit equally far from 1
ax.set_ylim(bottom=0.8)
ax.axhline(1.0, color="gray", linewidth=0.8)
ax.set_xticks(np.arange(len(SHAPES)), [label for label, *_ in SHAPES])
ax.set_ylabel("time / fastest algorithm's time")
ax.set_title("conv2d forward, float32, NumPy (outlined: auto's pick)")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Choosing by measurement
# -----------------------
# With ``xpcnn.config.conv_autotune = True`` the first ``algo="auto"`` call
# with a new geometry, dtype and device times ``gemm``, ``rows``, ``shift``
# and ``tiles`` on the real arrays and keeps the fastest, like PyTorch's
# ``torch.backends.cudnn.benchmark``. It is off by default because the winner
# can change between processes, and with it the last bits of every result.
# ``xpcnn bench --autotune`` prints each algorithm's time next to the pick.
