"""Training throughput of LeNet-5 on MNIST: xpcnn's ``fit`` against the same loop in PyTorch.

Usage (from the repository root)::

    python benchmarks/train_throughput.py [--data-dir ../shared/data/mnist] [--threads 1]
                                          [--batch 32] [--steps 20] [--rounds 21] [--layers]

Each library runs in its own process (a worker started by this script), on
the same number of threads (threadpoolctl for NumPy's BLAS,
``torch.set_num_threads`` for PyTorch), with the same initial weights
(``xpcnn.models.lenet5(seed=0)``, copied into ``torch.nn`` layers). A round
asks each worker in turn to train on the next ``steps * batch`` samples of
the MNIST training set (random images where `--data-dir` has no MNIST):

- xpcnn: ``model.fit(x, y, epochs=1, batch_size=batch, optimizer=Adam(1e-3))``
  (shuffling, the per-batch checks, the loss and accuracy sums included);
- PyTorch: the usual loop: a random permutation, ``x[idx]``, ``zero_grad``,
  forward, ``CrossEntropyLoss``, ``backward``, ``Adam.step`` and
  ``loss.item()`` per batch.

The workers take turns (which one goes first alternates), with a short pause
between turns so that a BLAS pool spinning after one turn does not slow the
other. The figure is the median over rounds of the per-round ratio of
samples per second (xpcnn / PyTorch), so a round slowed by other processes
on a shared machine slows both sides of its ratio alike; it is given for
wall time and for each worker's CPU time (``time.process_time``), which
waiting for a core does not count (with one thread it is the steadier
figure on a shared machine; with more, it also counts threads that spin). ``--layers`` adds
xpcnn's time per layer (forward, backward) within ``fit``'s steps.

This is a script, not an asv benchmark; ``benchmarks/bench_pipeline.py``
tracks a digits training step in asv.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's xpcnn, whatever is installed
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "mnist")


def load(data_dir: str | None, n: int):
    """``n`` MNIST training samples (float32 (n, 1, 28, 28), int64 (n,)), or random ones."""
    from xpcnn import data

    try:
        (x, y), _ = data.load_mnist(data_dir)
        return x[:n], y[:n], "MNIST"
    except (FileNotFoundError, TypeError):
        rng = np.random.default_rng(0)
        return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n), "random images"


def _xpcnn_runner(args, x, y):
    from xpcnn.models import lenet5
    from xpcnn.optim import Adam

    model, opt = lenet5(seed=0), Adam(1e-3)

    def run(lo, hi, seed):
        model.fit(x[lo:hi], y[lo:hi], epochs=1, batch_size=args.batch, optimizer=opt, seed=seed, progress=False)

    return run


def _torch_runner(args, x, y):
    import torch

    from xpcnn.models import lenet5

    torch.set_num_threads(args.threads)
    net = torch_twin(torch, lenet5(seed=0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def run(lo, hi, seed):
        gen = torch.Generator().manual_seed(seed)
        total = 0.0
        for idx in (torch.randperm(hi - lo, generator=gen) + lo).split(args.batch):
            xb, yb = xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            loss = lossf(net(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)

    return run


def torch_twin(torch, model):
    """LeNet-5 in ``torch.nn`` with `model`'s weights."""
    nn = torch.nn
    t = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    ours = [layer for layer in model if layer.params]
    theirs = [m for m in t if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.weight.copy_(torch.from_numpy(np.asarray(a.params["weight"])))
            b.bias.copy_(torch.from_numpy(np.asarray(a.params["bias"])))
    return t


def worker(args) -> None:
    """Serve turns on stdin/stdout: ``go`` -> seconds for the next ``steps * batch`` samples."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    chunk = args.steps * args.batch
    x, y, _ = load(args.data_dir, chunk * 8)
    run = (_xpcnn_runner if args.worker == "xpcnn" else _torch_runner)(args, x, y)
    run(0, chunk, 0)  # warm-up: buffers, caches, allocator
    print("ready", flush=True)
    turn = 0
    for line in sys.stdin:
        if line.strip() != "go":
            break
        lo = (turn % 8) * chunk
        t0, c0 = time.perf_counter(), time.process_time()
        run(lo, lo + chunk, turn)
        print(time.perf_counter() - t0, time.process_time() - c0, flush=True)
        turn += 1


class Worker:
    def __init__(self, name: str, args):
        argv = [sys.executable, os.path.abspath(__file__), "--worker", name, "--threads", str(args.threads),
                "--batch", str(args.batch), "--steps", str(args.steps), "--data-dir", args.data_dir]
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {name} worker did not start (see its error above)")

    def turn(self) -> tuple[float, float]:
        """Wall and CPU seconds of one turn."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        wall, cpu = self.proc.stdout.readline().split()
        return float(wall), float(cpu)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def layer_times(x, y, batch: int, steps: int):
    """Where a step of xpcnn's ``fit`` spends its time: ms per step in each layer's forward and backward.

    Each layer's methods are wrapped with a timer and ``fit`` runs as in the
    throughput turns (after a warm-up), so every figure is measured in
    context: caches and BLAS threads as in training, the first layer's
    backward without its input gradient. The last row is the rest of the
    step: loss, optimizer, checks, batching.
    """
    from xpcnn.models import lenet5
    from xpcnn.optim import Adam

    model, opt = lenet5(seed=0), Adam(1e-3)
    spent = {}
    for i, layer in enumerate(model):
        for method in ("forward", "backward"):
            def timed(*a, _call=getattr(layer, method), _key=(i, method), **kw):
                t0 = time.perf_counter()
                out = _call(*a, **kw)
                spent[_key] = spent.get(_key, 0.0) + time.perf_counter() - t0
                return out

            setattr(layer, method, timed)
    n = steps * batch
    model.fit(x[:n], y[:n], epochs=1, batch_size=batch, optimizer=opt, progress=False)
    spent.clear()
    t0 = time.perf_counter()
    model.fit(x[n : 2 * n], y[n : 2 * n], epochs=1, batch_size=batch, optimizer=opt, progress=False)
    total = (time.perf_counter() - t0) / steps
    rows = [(repr(layer), spent[i, "forward"] / steps, spent[i, "backward"] / steps) for i, layer in enumerate(model)]
    layers = sum(f + b for _, f, b in rows)
    return rows + [("rest of the step (loss, Adam, checks, batches)", total - layers, 0.0), ("whole step", total, 0.0)]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA, help="folder with the MNIST IDX files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="training steps per turn")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between turns")
    parser.add_argument("--layers", action="store_true", help="also print xpcnn's time per layer")
    parser.add_argument("--worker", choices=("xpcnn", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.threads, args.batch, args.steps, args.rounds) < 1:
        parser.error("--threads, --batch, --steps and --rounds must be >= 1")
    if args.worker:
        worker(args)
        return 0

    import torch  # only to name its version; the worker imports it again

    _, _, source = load(args.data_dir, 1)
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__}; {args.threads} threads each")
    print(f"LeNet-5 on {source}, batch {args.batch}, Adam: {args.rounds} rounds of {args.steps} steps per library, "
          "each in its own process, taking turns")
    workers = [Worker("xpcnn", args), Worker("torch", args)]
    times: dict[str, list[tuple[float, float]]] = {"xpcnn": [], "torch": []}
    try:
        for r in range(args.rounds):
            for w in workers if r % 2 == 0 else workers[::-1]:
                time.sleep(args.pause)
                times[w.name].append(w.turn())
    finally:
        for w in workers:
            w.close()
    samples = args.steps * args.batch
    for k, clock in enumerate(("wall", "CPU")):
        ours, theirs = ([t[k] for t in times[name]] for name in ("xpcnn", "torch"))
        ratios = [t / o for o, t in zip(ours, theirs)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(f"  {clock:4s} time: xpcnn {samples / statistics.median(ours):6.0f}, PyTorch "
              f"{samples / statistics.median(theirs):6.0f} samples/s (medians); ratio xpcnn / PyTorch: "
              f"median {statistics.median(ratios):.2f}, quartiles {q[0]:.2f}-{q[-1]:.2f}, "
              f"best turns {min(theirs) / min(ours):.2f}")
    if args.layers:
        from threadpoolctl import threadpool_limits

        x, y, _ = load(args.data_dir, 2 * 100 * args.batch)
        with threadpool_limits(args.threads):
            print("xpcnn per step of fit, 100 steps (ms, forward / backward):")
            for name, f, b in layer_times(x, y, args.batch, 100):
                print(f"  {name:40s} {f * 1e3:7.3f} / {b * 1e3:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
