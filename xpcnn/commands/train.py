"""``xpcnn train``: train a small CNN on digits or MNIST, save it and draw its curves.

Examples
--------
::

    xpcnn train                                   # 8x8 digits, ~20 s on 2 CPU cores, ~98.7% test accuracy
    xpcnn train --out digits.npz --plot digits.png
    xpcnn train --dataset mnist --data-dir ~/mnist  # LeNet-5, 8 epochs, 99.1-99.2% test accuracy
    xpcnn train --dataset mnist --data-dir ~/mnist --epochs 3 --lr-step 0 --backend cupy

The networks (``--dataset`` picks one):

digits (8x8, :func:`xpcnn.models.digits_cnn`)
    Conv(1->16, 3x3, pad 1)-ReLU-Conv(16->32, 3x3, pad 1)-ReLU-MaxPool 2-
    Flatten-Dense(512->64)-ReLU-Dense(64->10): 38,282 parameters.
mnist (28x28, :func:`xpcnn.models.mnist_default`)
    LeNet-5 with ReLU and max pooling: Conv(1->6, 5x5, pad 2)-ReLU-MaxPool 2-
    Conv(6->16, 5x5)-ReLU-MaxPool 2-Flatten-Dense(400->120)-ReLU-
    Dense(120->84)-ReLU-Dense(84->10): 61,706 parameters.

The test split is passed to ``fit`` as validation data, so the curves show
the test loss and accuracy after every epoch (it is never used to choose
anything). The digits split is always :func:`xpcnn.data.load_digits`'s
default (``seed=0``), so ``xpcnn evaluate`` sees the same test set; ``--seed``
seeds the weights and the shuffling.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import numpy as np

from .. import backend
from ..models import RECIPES
from ..optim import SGD, Adam, StepLR


def load_dataset(name: str, data_dir: str | None):
    """``(x_train, y_train), (x_test, y_test)`` of ``digits`` or ``mnist`` (host arrays)."""
    from .. import data
    from ..cli import UsageError

    if name == "digits":
        return data.load_digits()
    if data_dir is None:
        raise UsageError(f"xpcnn: --dataset mnist needs --data-dir DIR (a folder with the four MNIST IDX files; see {data.MNIST_URL})")
    return data.load_mnist(os.path.expanduser(data_dir))


def _int_at_least(minimum: int, what: str):
    """An argparse type: an int >= `minimum`, else an error naming `what` was expected."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return convert


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "a non-negative integer")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def check_writable_target(path: str, option: str) -> str:
    """UsageError unless `path` can be written (checked before any training); returns `path`.

    The folder must exist and take a new file (a file is created and
    removed there, which also catches read-only file systems), and `path`
    must not be a folder.
    """
    import tempfile

    from ..cli import UsageError

    if not path:
        raise UsageError(f"xpcnn: {option} needs a file name, got an empty one")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"xpcnn: {option} {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"xpcnn: {option} {path}: is a folder, expected a file name")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".xpcnn-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"xpcnn: {option} {path}: cannot write in folder {folder} ({exc.strerror})") from None
    return path


def plot_target(path: str, option: str) -> str:
    """The file a plot for `path` will be written to, checked before any work.

    A name without a suffix gets ``.png`` (what matplotlib would write, so
    the reported name is the real one); a suffix matplotlib cannot write is
    a UsageError naming the ones it can.
    """
    from ..cli import UsageError

    need_matplotlib(option)
    from matplotlib.backend_bases import FigureCanvasBase

    path = check_writable_target(path, option)
    suffix = os.path.splitext(path)[1]
    if not suffix:
        return check_writable_target(path + ".png", option)
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix[1:].lower() not in formats:
        raise UsageError(
            f"xpcnn: {option} {path}: matplotlib cannot write {suffix!r} files; use one of "
            + ", ".join(f".{f}" for f in sorted(formats))
        )
    return path


def need_matplotlib(option: str) -> None:
    from ..cli import UsageError

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f'xpcnn: {option} needs matplotlib: pip install "xpcnn[train]" (or pass --no-plot)')


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", choices=sorted(RECIPES), default="digits",
                        help="digits: scikit-learn's 8x8 digits (bundled); mnist: IDX files in --data-dir")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST IDX files (raw or .gz)")
    parser.add_argument("--epochs", type=positive_int, metavar="N",
                        help="passes over the training set (default: 20 for digits, 8 for mnist)")
    parser.add_argument("--batch-size", type=positive_int, metavar="N",
                        help="samples per step (default: 32 for digits, 64 for mnist)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="default adam")
    parser.add_argument("--lr", type=positive_float, metavar="LR",
                        help="learning rate (default: adam 2e-3, sgd 0.05)")
    parser.add_argument("--lr-step", type=non_negative_int, metavar="N",
                        help="multiply the learning rate by 0.1 every N epochs (default: 5 for mnist; 0: never, "
                             "the digits default)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None,
                        help="where to train (default: $XPCNN_BACKEND or numpy)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and the shuffling (default 0)")
    parser.add_argument("--out", default="model.npz", metavar="FILE.npz", help="model file to write (default model.npz)")
    parser.add_argument("--plot", default="curves.png", metavar="FILE.png",
                        help="loss/accuracy curves to write (default curves.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the curves")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from .. import plots

    from ..cli import UsageError

    # Every output is checked before the first step: a mistake found after
    # training would lose the model.
    check_writable_target(args.out, "--out")
    plot = None if args.no_plot else plot_target(args.plot, "--plot")
    if plot is not None and os.path.realpath(plot) == os.path.realpath(args.out):
        raise UsageError(f"xpcnn train: --out and --plot name the same file {args.out}; the plot would replace the model")
    if not 0.0 <= args.momentum < 1.0:
        raise UsageError(f"xpcnn train: --momentum must be in [0, 1), got {args.momentum}")
    name = args.backend or backend.get_default()
    recipe = RECIPES[args.dataset]
    epochs = args.epochs or recipe["epochs"]
    batch_size = args.batch_size or recipe["batch_size"]
    lr = args.lr or recipe["lr"][args.optimizer]
    lr_step = recipe["lr_step"] if args.lr_step is None else args.lr_step
    with backend.use(name):
        t_start = time.perf_counter()
        (x_train, y_train), (x_test, y_test) = load_dataset(args.dataset, args.data_dir)
        if args.dataset == "digits":
            model = recipe["model"](args.seed)
        else:
            model = recipe["model"](args.seed, input_size=x_train.shape[-1])
        optimizer = Adam(lr) if args.optimizer == "adam" else SGD(lr, momentum=args.momentum)
        scheduler = StepLR(optimizer, lr_step) if lr_step else None
        print(model.summary())
        print(f"{args.dataset}: {len(x_train)} training and {len(x_test)} test samples; backend {name}; "
              f"{optimizer!r}{'' if scheduler is None else f', lr x0.1 every {lr_step} epochs'}; "
              f"{epochs} epochs of batch {batch_size}")
        t_fit = time.perf_counter()
        try:
            # fit checks every batch for NaN and inf and stops with one message, so NumPy's
            # overflow warnings on the way there would only print lines of noise before it.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                history = model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                                    validation_data=(x_test, y_test), seed=args.seed,
                                    progress=not args.no_progress, scheduler=scheduler)
        except FloatingPointError as exc:  # diverged: a setting to change, not a crash
            raise UsageError(f"xpcnn train: training diverged with --lr {lr}: {exc}") from None
        backend.synchronize(backend.module(name))
        fit_seconds = time.perf_counter() - t_fit
        result = model.evaluate(x_test, y_test)
        model.save(args.out)
    total = time.perf_counter() - t_start
    print(f"test accuracy: {result['accuracy']:.2%} ({round(result['accuracy'] * len(x_test))}/{len(x_test)}), "
          f"test loss {result['loss']:.4f}")
    print(f"time: {fit_seconds:.1f} s training, {total:.1f} s in all")
    print(f"model saved to {args.out}")
    if plot is not None:
        plots.plot_history(history, plot, title=f"xpcnn train --dataset {args.dataset}", val_label="test")
        print(f"curves saved to {plot}")
    return 0
