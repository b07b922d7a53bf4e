"""Figures of training: loss/accuracy curves and a confusion matrix, saved as PNG.

Host-side only. matplotlib is imported inside the functions (it is an
optional dependency, the ``train`` extra), and only its object-oriented
``Figure`` API is used, so no GUI backend is ever started.
"""

from __future__ import annotations

import os

import numpy as np

from . import backend

__all__ = ["plot_confusion", "plot_history"]


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 -- lazy: optional dependency
    except ImportError as exc:
        raise ModuleNotFoundError(
            'plotting needs matplotlib, which is not installed; install it with: pip install "xpcnn[train]"',
            name="matplotlib",
        ) from exc
    return Figure(figsize=(width, height), layout="constrained")


def plot_history(history: dict, path: str | os.PathLike, title: str | None = None, val_label: str = "validation") -> str:
    """Draw the per-epoch curves returned by :meth:`xpcnn.model.Sequential.fit` and save them.

    Parameters
    ----------
    history : dict of lists
        ``"loss"`` and optionally ``"accuracy"``, ``"val_loss"``,
        ``"val_accuracy"``, one value per epoch.
    path : str or os.PathLike
        Output file; the format follows the suffix (``.png``, ``.svg``, ``.pdf``).
    title : str, optional
        Figure title.
    val_label : str, default "validation"
        Legend name of the ``val_*`` curves (e.g. ``"test"`` when the test
        set was passed as validation data).

    Returns
    -------
    str
        `path`.

    Raises
    ------
    ValueError
        If `history` has no ``"loss"`` entry or the lists are empty.
    ModuleNotFoundError
        If matplotlib is not installed.

    Examples
    --------
    >>> from xpcnn.plots import plot_history
    >>> history = {"loss": [0.9, 0.4, 0.2], "accuracy": [0.7, 0.9, 0.95]}
    >>> plot_history(history, "curves.png")
    'curves.png'
    """
    if not history.get("loss"):
        raise ValueError(f"history must contain a non-empty 'loss' list, got keys {sorted(history)}")
    panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if history.get("accuracy") else [])
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 -- lazy, after _figure checked matplotlib

    fig = _figure(5.0 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, label) in zip(axes, panels):
        for prefix, name, style in (("", "train", "-o"), ("val_", val_label, "-s")):
            values = history.get(prefix + key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(os.fspath(path), dpi=110)
    return os.fspath(path)


def plot_confusion(matrix, path: str | os.PathLike, labels=None, title: str | None = None) -> str:
    """Draw a confusion matrix (rows: true class, columns: predicted class) and save it.

    Parameters
    ----------
    matrix : array_like, shape (K, K), int
        ``matrix[i, j]`` = number of samples of class ``i`` predicted as ``j``.
    path : str or os.PathLike
        Output file (format from the suffix).
    labels : sequence of str, optional
        Class names; default ``0 .. K-1``.
    title : str, optional

    Returns
    -------
    str
        `path`.

    Raises
    ------
    ValueError
        If `matrix` is not square or `labels` has the wrong length.
    ModuleNotFoundError
        If matplotlib is not installed.

    Examples
    --------
    >>> from xpcnn.plots import plot_confusion
    >>> plot_confusion([[5, 1], [0, 4]], "confusion.png", labels=["cat", "dog"])
    'confusion.png'
    """
    m = backend.to_numpy(matrix)  # a CuPy matrix too (np.asarray refuses it)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {m.shape}")
    k = m.shape[0]
    labels = [str(i) for i in range(k)] if labels is None else [str(s) for s in labels]
    if len(labels) != k:
        raise ValueError(f"labels must have {k} entries, got {len(labels)}")
    side = 1.2 + 0.45 * k
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = m.max() / 2 if m.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > threshold else "black")
    if title:
        ax.set_title(title)
    fig.savefig(os.fspath(path), dpi=110)
    return os.fspath(path)
