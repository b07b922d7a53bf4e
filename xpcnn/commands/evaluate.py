"""``xpcnn evaluate``: accuracy and confusion matrix of a saved model on a test set.

Examples
--------
::

    xpcnn evaluate model.npz --dataset digits
    xpcnn evaluate lenet.npz --dataset mnist --data-dir ~/mnist --plot confusion.png

The test set is the one ``xpcnn train`` held out: the digits test split of
:func:`xpcnn.data.load_digits` (``seed=0``), or MNIST's ``t10k`` files.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..model import Sequential
from .train import load_dataset, plot_target, positive_int


def confusion_matrix(y_true, y_pred, classes: int) -> np.ndarray:
    """``m[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (host int64 array)."""
    y_true = backend.to_numpy(y_true).astype(np.int64, copy=False)  # device arrays too
    y_pred = backend.to_numpy(y_pred).astype(np.int64, copy=False)
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)


def format_confusion(m: np.ndarray) -> str:
    """The matrix as text: one row per true class, one column per predicted class, recall at the right."""
    k = m.shape[0]
    width = max(4, len(str(int(m.max()))) + 1)
    head = "true\\pred" + "".join(f"{j:>{width}}" for j in range(k)) + "  recall"
    lines = [head]
    for i in range(k):
        total = int(m[i].sum())
        recall = f"{m[i, i] / total:7.1%}" if total else "      -"
        lines.append(f"{i:>9}" + "".join(f"{int(v):>{width}}" for v in m[i]) + " " + recall)
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL.npz", help="a model file written by xpcnn train or Sequential.save")
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits", help="default digits")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST IDX files (raw or .gz)")
    parser.add_argument("--batch-size", type=positive_int, default=256, metavar="N", help="default 256")
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None,
                        help="where to compute (default: $XPCNN_BACKEND or numpy)")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw the confusion matrix into this file")


def run(args) -> int:
    from .. import plots

    plot = plot_target(args.plot, "--plot") if args.plot else None
    name = args.backend or backend.get_default()
    with backend.use(name):
        model = Sequential.load(args.model)
        _, (x_test, y_test) = load_dataset(args.dataset, args.data_dir)
        result = model.evaluate(x_test, y_test, batch_size=args.batch_size)
        logits = model.predict(x_test, batch_size=args.batch_size)
        pred = backend.to_numpy(logits.argmax(axis=1))
    classes = int(logits.shape[1])
    m = confusion_matrix(y_test, pred, classes)
    print(f"{args.model} on the {args.dataset} test set ({len(x_test)} samples):")
    print(f"accuracy: {result['accuracy']:.2%}  loss: {result['loss']:.4f}")
    print("confusion matrix (rows: true class, columns: predicted class):")
    print(format_confusion(m))
    if plot is not None:
        plots.plot_confusion(m, plot, title=f"{args.model}: {args.dataset} test accuracy {result['accuracy']:.2%}")
        print(f"confusion matrix saved to {plot}")
    return 0
