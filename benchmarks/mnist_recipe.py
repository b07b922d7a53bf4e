"""The MNIST recipe of ``xpcnn train`` run by xpcnn and by PyTorch: test accuracy and training time.

Usage (from the repository root)::

    python benchmarks/mnist_recipe.py [--data-dir ../shared/data/mnist] [--seeds 0 1] [--threads 2]

For each seed, two processes run one after the other:

- xpcnn: the command itself, ``python -m xpcnn train --dataset mnist
  --data-dir DIR --seed S`` (its defaults are the recipe:
  ``xpcnn.models.RECIPES["mnist"]``);
- PyTorch: the same recipe written in ``torch.nn``: LeNet-5 with ReLU and
  max pooling, He-uniform weights (``kaiming_uniform_(nonlinearity="relu")``)
  and zero biases drawn by PyTorch's own generator, ``CrossEntropyLoss``,
  ``Adam``, ``StepLR(step_size, gamma=0.1)``, a new shuffle every epoch, the
  same epochs, batch size and learning rate, on the same images (pixel /
  255).

The two never share weights or shuffles, so matching test accuracies (within
the spread between seeds) are evidence that the initialisation, the
optimizer and the loss agree. Training time is the time of the epochs alone
(xpcnn's "s training" line; the same span in PyTorch), with the test set
evaluated after every epoch on both sides, as ``xpcnn train`` does for its
curves. Both use `--threads` threads (OpenBLAS/OpenMP variables for xpcnn,
``torch.set_num_threads`` for PyTorch). Each process's CPU time (user +
system, loading the data and starting Python included) is printed too: on
a shared machine it is the steadier figure, and with one thread it is close
to the wall time the same run takes on an idle core.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # this checkout's xpcnn, whatever is installed
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "mnist")


def torch_run(data_dir: str, seed: int, threads: int) -> dict:
    """Train the recipe in PyTorch; return test accuracy and training seconds."""
    import numpy as np
    import torch
    from torch import nn

    from xpcnn import data
    from xpcnn.models import RECIPES

    recipe = RECIPES["mnist"]
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    (x, y), (xv, yv) = data.load_mnist(data_dir)
    x, y, xv, yv = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x, y, xv, yv))
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # xpcnn's init="he": U(+-sqrt(6 / fan_in))
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"]["adam"])
    schedule = torch.optim.lr_scheduler.StepLR(opt, recipe["lr_step"], gamma=0.1)
    lossf = nn.CrossEntropyLoss()

    def accuracy():
        net.eval()
        with torch.no_grad():
            correct = sum(int((net(xv[i:i + 256]).argmax(1) == yv[i:i + 256]).sum()) for i in range(0, len(xv), 256))
        net.train()
        return correct / len(xv)

    t0 = time.perf_counter()
    for _ in range(recipe["epochs"]):
        for idx in torch.randperm(len(x)).split(recipe["batch_size"]):
            opt.zero_grad(set_to_none=True)
            loss = lossf(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
        schedule.step()
        last = accuracy()
    return {"accuracy": last, "seconds": time.perf_counter() - t0}


def xpcnn_run(data_dir: str, seed: int, threads: int) -> dict:
    """Run ``xpcnn train --dataset mnist`` with its defaults; parse its accuracy and training time."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "xpcnn", "train", "--dataset", "mnist", "--data-dir", data_dir, "--seed", str(seed),
                "--backend", "numpy", "--no-plot", "--no-progress", "--out", os.path.join(tmp, "m.npz")]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    acc = re.search(r"test accuracy: ([\d.]+)%", out)
    secs = re.search(r"time: ([\d.]+) s training", out)
    return {"accuracy": float(acc.group(1)) / 100, "seconds": float(secs.group(1))}


def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA, help="folder with the four MNIST IDX files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("xpcnn", "torch"), help="run one library only")
    parser.add_argument("--torch-worker", type=int, metavar="SEED", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker is not None:
        print(json.dumps(torch_run(args.data_dir, args.torch_worker, args.threads)))
        return 0
    if not os.path.isdir(args.data_dir):
        parser.error(f"--data-dir {args.data_dir}: no such folder (it needs the four MNIST IDX files)")

    from xpcnn.models import RECIPES

    recipe = {k: (v.__name__ if callable(v) else v) for k, v in RECIPES["mnist"].items()}
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, {args.threads} threads; load average at start "
          f"{os.getloadavg()[0]:.1f}; recipe {recipe}")
    results: dict[str, list[dict]] = {"xpcnn": [], "torch": []}
    for seed in args.seeds:
        for name in ("xpcnn", "torch"):
            if args.only and name != args.only:
                continue
            cpu0 = _children_cpu()
            if name == "xpcnn":
                r = xpcnn_run(args.data_dir, seed, args.threads)
            else:
                cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", str(seed), "--data-dir", args.data_dir,
                       "--threads", str(args.threads)]
                r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            r["cpu"] = _children_cpu() - cpu0
            results[name].append(r)
            print(f"  {name:6s} seed {seed}: test accuracy {r['accuracy']:.2%}, {r['seconds']:.0f} s training, "
                  f"{r['cpu']:.0f} CPU s in all (load average {os.getloadavg()[0]:.1f})", flush=True)
    means = {k: statistics.mean(r["accuracy"] for r in v) for k, v in results.items() if v}
    for name, mean in means.items():
        secs = statistics.median(r["seconds"] for r in results[name])
        cpu = statistics.median(r["cpu"] for r in results[name])
        print(f"{name:6s} mean test accuracy {mean:.2%} over {len(results[name])} seed(s), median {secs:.0f} s training, "
              f"{cpu:.0f} CPU s")
    if len(means) == 2:
        gap = (means["xpcnn"] - means["torch"]) * 100
        print(f"xpcnn - PyTorch: {gap:+.2f} points ({'within' if abs(gap) <= 0.2 else 'OUTSIDE'} +-0.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
