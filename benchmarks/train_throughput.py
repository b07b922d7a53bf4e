"""Training throughput of a LeNet-5-sized CNN: xpcnn against the same network in PyTorch.

Usage (from the repository root)::

    python benchmarks/train_throughput.py [--threads 2] [--batch 64] [--steps 20] [--repeat 7]
                                          [--backend numpy|cupy] [--layers]

One training step is what ``Sequential.fit`` does per batch: forward with
caches, softmax cross-entropy, backward, an Adam step. The network is
``xpcnn.models.lenet5`` (61,706 parameters; 28x28 inputs, random
data); PyTorch gets the same layers with the same initial weights. Each
repeat times `--steps` consecutive steps; the figure is the median over
`--repeat` repeats after a warm-up, in samples per second. Both libraries
run on the same number of threads (threadpoolctl for NumPy's BLAS,
``torch.set_num_threads`` for PyTorch); on ``--backend cupy`` PyTorch runs
on CUDA if it can. PyTorch is optional: without it only xpcnn's figure is
printed. ``--layers`` adds xpcnn's time per layer, forward and backward.

This is a script, not an asv benchmark (nothing here starts with
``time_``); ``benchmarks/bench_pipeline.py`` tracks a digits training step
in asv.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

from xpcnn import backend
from xpcnn.models import lenet5
from xpcnn.losses import SoftmaxCrossEntropy
from xpcnn.optim import Adam


def measure(step, sync, steps: int, repeat: int) -> float:
    """Median seconds of `steps` consecutive calls of `step()`, over `repeat` repeats after a warm-up."""
    for _ in range(3):
        step()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def xpcnn_step(model, x, y):
    loss, opt = SoftmaxCrossEntropy(), Adam(1e-3)

    def step():
        loss(model.forward(x, training=True), y, check_range=False)
        model.backward(loss.backward())
        opt.step(model)

    return step


def torch_model(torch, model):
    """The same network in PyTorch, with the xpcnn model's initial weights."""
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
            b.weight.copy_(torch.from_numpy(backend.to_numpy(a.params["weight"])))
            b.bias.copy_(torch.from_numpy(backend.to_numpy(a.params["bias"])))
    return t


def torch_step(torch, net, x, y):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        lossf(net(x), y).backward()
        opt.step()

    return step


def layer_times(model, x, y, repeat: int, sync):
    """xpcnn's median forward and backward seconds per layer (training mode)."""
    rows = []
    loss = SoftmaxCrossEntropy()
    acts = [x]
    for layer in model:
        acts.append(layer.forward(acts[-1], training=True))
    loss(acts[-1], y)
    grads = [loss.backward()]
    for layer in reversed(model.layers):
        grads.append(layer.backward(grads[-1]))
    grads = grads[::-1]  # grads[i] = gradient w.r.t. the output of layer i-1
    for i, layer in enumerate(model):
        fwd, bwd = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            layer.forward(acts[i], training=True)
            sync()
            t1 = time.perf_counter()
            layer.backward(grads[i + 1])
            sync()
            t2 = time.perf_counter()
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
        rows.append((repr(layer), statistics.median(fwd), statistics.median(bwd)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    parser.add_argument("--layers", action="store_true", help="also print xpcnn's time per layer")
    args = parser.parse_args(argv)
    if min(args.threads, args.batch, args.steps, args.repeat) < 1:
        parser.error("--threads, --batch, --steps and --repeat must be >= 1")

    xp = backend.module(args.backend)
    with backend.use(args.backend):
        model = lenet5(seed=0)
    rng = np.random.default_rng(0)
    x_host = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    y_host = rng.integers(0, 10, args.batch)
    x, y = xp.asarray(x_host), xp.asarray(y_host)

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("threadpoolctl is not installed: NumPy's BLAS uses its own thread count", file=sys.stderr)
        limits = None
    else:
        limits = threadpool_limits(args.threads)

    def sync():
        backend.synchronize(xp)

    try:
        torch = __import__("torch")
    except ImportError:
        torch = None

    print(f"python {platform.python_version()}, numpy {np.__version__}, backend {args.backend}, "
          f"{args.threads} threads, {os.cpu_count()} CPUs; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"LeNet-5 (61,706 parameters), 28x28 inputs, batch {args.batch}: "
          f"median of {args.repeat} x {args.steps} training steps (forward, backward, Adam)")
    torch_model_copy = torch_model(torch, model) if torch is not None else None  # weights before any step
    t_ours = measure(xpcnn_step(model, x, y), sync, args.steps, args.repeat)
    ours = args.batch * args.steps / t_ours
    print(f"  xpcnn   {ours:10.0f} samples/s   ({t_ours / args.steps * 1e3:.2f} ms per step)")
    if torch is not None:
        torch.set_num_threads(args.threads)
        device = "cpu"
        if args.backend == "cupy" and torch.cuda.is_available():
            device = "cuda"
        net = torch_model_copy.to(device)
        xt, yt = torch.from_numpy(x_host).to(device), torch.from_numpy(y_host).to(device)
        tsync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        t_ref = measure(torch_step(torch, net, xt, yt), tsync, args.steps, args.repeat)
        theirs = args.batch * args.steps / t_ref
        print(f"  PyTorch {theirs:10.0f} samples/s   ({t_ref / args.steps * 1e3:.2f} ms per step; "
              f"torch {torch.__version__} on {device})")
        print(f"  ratio xpcnn / PyTorch: {ours / theirs:.2f}  (PyTorch is {theirs / ours:.1f}x faster)"
              if theirs > ours else f"  ratio xpcnn / PyTorch: {ours / theirs:.2f}")
    else:
        print("  PyTorch not installed: no ratio")
    if args.layers:
        print("xpcnn per layer (median ms, forward / backward):")
        for name, f, b in layer_times(model, x, y, args.repeat * 3, sync):
            print(f"  {name:70s} {f * 1e3:7.3f} / {b * 1e3:7.3f}")
    if limits is not None:
        limits.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
