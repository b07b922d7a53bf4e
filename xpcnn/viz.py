"""Figures: feature maps of the tutorial's network (and, later, training curves).

Host-side only. matplotlib is imported inside each function, so ``import
xpcnn.viz`` stays light and ``import xpcnn`` never loads it. The functions
here draw on a bare :class:`matplotlib.figure.Figure` and save it to a file:
no pyplot, no window and no GUI backend is involved (the PNG is rendered by
Agg), so they work on a headless server and do not touch pyplot's global
state.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from .backend import to_numpy

__all__ = ["save_feature_maps", "save_overview"]


def _as_host_maps(a: Any, name: str) -> np.ndarray:
    a = to_numpy(a)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"{name} must be feature maps (H, W, F) or one map (H, W), got shape {a.shape}")
    return a


def _clean_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_map(fig, ax, a, title: str) -> None:
    """One feature map in gray with its own colour bar (maps differ a lot in range)."""
    im = ax.imshow(a, cmap="gray", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
    ax.set_title(title, fontsize=9)
    _clean_axes(ax)


def _save(fig, path, title: str | None, dpi: int) -> str:
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(os.fspath(path), dpi=dpi)
    return os.fspath(path)


def save_feature_maps(
    path: str | os.PathLike,
    stages: Mapping[str, Any],
    *,
    title: str | None = None,
    dpi: int = 72,
) -> str:
    """Draw each stage's feature maps in a grid and save it as an image.

    Parameters
    ----------
    path : str or path-like
        Output file; the format follows the suffix (``.png`` usually).
    stages : mapping of str to array, each (H, W, F) or (H, W)
        One row per entry, in order (e.g. ``{"conv": a, "ReLU": b, "pool":
        c}``), one column per feature map. NumPy or CuPy arrays (copied to
        the host). Rows may have different numbers of maps; empty cells are
        left blank.
    title : str, optional
        Figure title.
    dpi : int
        Resolution of the saved image.

    Returns
    -------
    str
        `path`, as a string.

    Raises
    ------
    ValueError
        If `stages` is empty or an array is not 2-D or 3-D.
    OSError
        If the file cannot be written.

    Notes
    -----
    Every map gets its own gray colour scale and colour bar (the ranges of
    conv, ReLU and pooled maps differ a lot), and its title names the stage,
    the map number and its shape ``(H, W)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import tutorial
    >>> from xpcnn.viz import save_feature_maps
    >>> img = np.random.default_rng(0).random((32, 32))
    >>> maps = tutorial.conv(img, np.ones((2, 3, 3)))
    >>> save_feature_maps("layer1.png", {"conv": maps, "relu": tutorial.relu(maps)})
    'layer1.png'
    """
    from matplotlib.figure import Figure  # noqa: PLC0415 -- lazy: optional dependency

    if not stages:
        raise ValueError("stages is empty: nothing to draw")
    rows = [(str(label), _as_host_maps(a, f"stages[{label!r}]")) for label, a in stages.items()]
    ncols = max(a.shape[2] for _, a in rows)
    nrows = len(rows)
    # size each cell by the first row's aspect ratio, bounded to stay readable
    h, w = rows[0][1].shape[:2]
    cell_w = 3.6
    cell_h = min(max((cell_w - 0.7) * h / w, 1.4), 4.5) + 0.35  # 0.7 in: colour bar
    fig = Figure(figsize=(cell_w * ncols + 0.8, cell_h * nrows + (0.5 if title else 0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r, (label, maps) in enumerate(rows):
        for f in range(ncols):
            ax = axes[r, f]
            if f >= maps.shape[2]:
                ax.set_axis_off()
                continue
            _draw_map(fig, ax, maps[:, :, f], f"{label}, map {f + 1}  {maps.shape[:2]}")
    return _save(fig, path, title, dpi)


def save_overview(
    path: str | os.PathLike,
    image: Any,
    final_maps: Any,
    *,
    title: str | None = None,
    dpi: int = 72,
) -> str:
    """Save the input image next to the network's final feature map(s).

    Parameters
    ----------
    path : str or path-like
        Output file (``.png`` usually).
    image : array, (H, W) gray or (H, W, 3) RGB with values in [0, 1]
        NumPy or CuPy (copied to the host). RGB values are clipped to [0, 1]
        for display.
    final_maps : array, (H', W', F) or (H', W')
        One panel per map, each with its colour bar and shape.
    title : str, optional
        Figure title.
    dpi : int
        Resolution of the saved image.

    Returns
    -------
    str
        `path`, as a string.

    Raises
    ------
    ValueError
        If `image` is not (H, W), (H, W, 1) or (H, W, 3), or `final_maps` is
        not 2-D or 3-D.
    OSError
        If the file cannot be written.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.viz import save_overview
    >>> img = np.random.default_rng(0).random((32, 32))
    >>> save_overview("overview.png", img, img[::4, ::4])
    'overview.png'
    """
    from matplotlib.figure import Figure  # noqa: PLC0415 -- lazy: optional dependency

    img = to_numpy(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {img.shape}")
    maps = _as_host_maps(final_maps, "final_maps")
    n = 1 + maps.shape[2]
    h, w = img.shape[:2]
    cell_w = 4.2
    cell_h = min(max((cell_w - 0.7) * h / w, 1.4), 5.0) + 0.35
    fig = Figure(figsize=(cell_w * n + 0.8, cell_h + (0.5 if title else 0)), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    if img.ndim == 2:
        axes[0].imshow(img, cmap="gray")
    else:
        axes[0].imshow(np.clip(img, 0.0, 1.0))
    axes[0].set_title(f"input  {img.shape}", fontsize=9)
    _clean_axes(axes[0])
    for f in range(maps.shape[2]):
        _draw_map(fig, axes[1 + f], maps[:, :, f], f"final map {f + 1}  {maps.shape[:2]}")
    return _save(fig, path, title, dpi)
