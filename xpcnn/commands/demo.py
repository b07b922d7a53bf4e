"""``xpcnn demo``: the tutorial's three-layer CNN on an image, every feature map drawn.

The network is the one of the classic NumPy tutorial: layer 1 has its two
3x3 edge filters (vertical, horizontal), layer 2 three random 5x5 filters,
layer 3 one random 7x7 filter; each layer is conv -> ReLU -> 2x2 max pool,
computed by :func:`xpcnn.tutorial.pipeline` on the chosen backend. The
command prints a table of the stages (output shape, milliseconds) and writes
one PNG per layer plus an overview.

The pieces are usable without the command (``benchmarks/tutorial_speed.py``
does): :func:`load_image` and :func:`tutorial_filters` prepare the inputs on
the host, then ``tutorial.pipeline(img, banks)`` runs the network.
"""

from __future__ import annotations

import os
import re
import statistics
import warnings

import numpy as np

from .. import backend, tutorial

DEFAULT_OUT = "xpcnn-demo"
DEFAULT_MAX_SIDE = 1024
DEPS_HINT = 'pip install "xpcnn[demo]"'

#: The tutorial's layer-1 filters: a vertical and a horizontal edge detector.
EDGE_FILTERS = (
    ((-1, 0, 1), (-1, 0, 1), (-1, 0, 1)),
    ((1, 1, 1), (0, 0, 0), (-1, -1, -1)),
)
#: (number of filters, kernel side) per layer, as in the tutorial.
LAYERS = ((2, 3), (3, 5), (1, 7))
POOL = 2


def _usage_error(message: str) -> Exception:
    from ..cli import UsageError  # noqa: PLC0415 -- cli imports the commands lazily; avoid a cycle

    return UsageError(f"xpcnn demo: {message}")


def _output_side(n: int) -> int:
    """Side of the final map for an input side `n` (0 if the network does not fit)."""
    for _, k in LAYERS:
        n = n - k + 1
        if n < POOL:
            return 0
        n = (n - POOL) // POOL + 1
    return n


#: Smallest image side the three layers accept (42 pixels).
MIN_SIDE = next(n for n in range(1, 1000) if _output_side(n) >= 1)


def tutorial_filters(depth: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """The tutorial's three filter banks, as float64 NumPy arrays on the host.

    Parameters
    ----------
    depth : int or None
        Channels of the input image. ``None`` (gray image) gives the
        depth-less ``(2, 3, 3)`` edge bank of the tutorial; an int gives
        ``(2, 3, 3, depth)``, each edge filter repeated over the channels.
    seed : int
        Seed of the random filters of layers 2 and 3, drawn uniformly from
        [0, 1) (the tutorial's ``numpy.random.rand``) by
        ``numpy.random.default_rng(seed)``, so every backend gets the same
        numbers.

    Returns
    -------
    list of numpy.ndarray
        ``[(2, 3, 3[, depth]), (3, 5, 5, 2), (1, 7, 7, 3)]``.

    Raises
    ------
    ValueError
        If `depth` is given and below 1.
    """
    if depth is not None and int(depth) < 1:
        raise ValueError(f"depth must be >= 1 or None, got {depth}")
    l1 = np.array(EDGE_FILTERS, dtype=np.float64)
    if depth is not None:
        l1 = np.repeat(l1[..., None], int(depth), axis=-1)
    rng = np.random.default_rng(seed)
    banks = [l1]
    maps = LAYERS[0][0]
    for n_filters, k in LAYERS[1:]:
        banks.append(rng.random((n_filters, k, k, maps)))
        maps = n_filters
    return banks


def load_image(spec: str = "chelsea", *, color: bool = False, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Read the demo's input image as float64 on the host, values in [0, 1].

    Parameters
    ----------
    spec : str
        ``"chelsea"`` (scikit-image's bundled cat photo, the tutorial's
        input) or the path of an image file (PNG, JPEG, or anything
        ``skimage.io.imread`` reads).
    color : bool
        False: convert to gray with ``skimage.color.rgb2gray``, as the
        tutorial does, giving ``(H, W)``. True: keep three channels, ``(H, W,
        3)`` (a gray file is repeated over them).
    max_side : int or None
        Images whose longer side exceeds it are downscaled (anti-aliased) to
        it, so a camera photo does not need gigabytes, but never below
        :data:`MIN_SIDE` on the shorter side. ``None`` or 0: never.

    Returns
    -------
    numpy.ndarray, float64, (H, W) or (H, W, 3)

    Raises
    ------
    xpcnn.cli.UsageError
        If the file is missing or unreadable, its shape is not an image, or
        the image is smaller than :data:`MIN_SIDE` pixels on a side.
    """
    import skimage.color  # noqa: PLC0415 -- lazy: optional dependency
    import skimage.data  # noqa: PLC0415
    import skimage.io  # noqa: PLC0415
    import skimage.transform  # noqa: PLC0415
    import skimage.util  # noqa: PLC0415

    if spec == "chelsea":
        raw = skimage.data.chelsea()
    else:
        path = os.path.expanduser(spec)
        if not os.path.exists(path):
            raise _usage_error(f"--image {spec!r}: no such file (give an image path, or 'chelsea')")
        if os.path.isdir(path):
            raise _usage_error(f"--image {spec!r} is a directory, not an image file")
        try:
            with warnings.catch_warnings():  # imageio warns while it tries plugins: keep stderr to one line
                warnings.simplefilter("ignore")
                raw = skimage.io.imread(path)
        except Exception as exc:  # each imageio/Pillow plugin raises its own type
            reason = re.split(r"\.\s", str(exc))[0].strip()[:160]  # imageio appends plugin install hints: drop them
            raise _usage_error(
                f"cannot read image {spec!r}: not a picture scikit-image can read ({type(exc).__name__}: {reason})"
            ) from None
    raw = np.asarray(raw)
    if raw.ndim == 3 and raw.shape[2] in (1, 2):  # gray, or gray + alpha
        raw = raw[:, :, 0]
    if raw.ndim == 3 and raw.shape[2] == 4:
        raw = skimage.color.rgba2rgb(raw)
    if not (raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] == 3)) or raw.dtype.kind not in "biuf":
        raise _usage_error(
            f"image {spec!r} has shape {raw.shape} and dtype {raw.dtype}; expected a gray (H, W) "
            "or colour (H, W, 3|4) picture"
        )
    img = skimage.util.img_as_float(raw).astype(np.float64, copy=False)
    if color and img.ndim == 2:
        img = skimage.color.gray2rgb(img)
    elif not color and img.ndim == 3:
        img = skimage.color.rgb2gray(img)
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise _usage_error(
            f"image {spec!r} is {h}x{w} pixels; the three layers need at least {MIN_SIDE}x{MIN_SIDE}"
        )
    if max_side and max(h, w) > max_side:
        # Never below MIN_SIDE on the short side: a valid long, thin image stays valid.
        scale = max(max_side / max(h, w), MIN_SIDE / min(h, w))
        if scale < 1:
            shape = (max(MIN_SIDE, round(h * scale)), max(MIN_SIDE, round(w * scale))) + img.shape[2:]
            img = skimage.transform.resize(img, shape, anti_aliasing=True)
    return np.ascontiguousarray(img, dtype=np.float64)


def add_arguments(parser) -> None:
    """Options of ``xpcnn demo``."""
    parser.add_argument(
        "--image",
        default="chelsea",
        metavar="PATH",
        help="'chelsea' (scikit-image's cat photo, the default) or a PNG/JPEG file",
    )
    parser.add_argument(
        "--color",
        action="store_true",
        help="keep the three colour channels (layer-1 filters get depth 3) instead of converting to gray",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random layer-2 and layer-3 filters (default 0)")
    parser.add_argument(
        "--backend",
        default=None,
        metavar="NAME",
        help="numpy or cupy (default: xpcnn's default backend, i.e. $XPCNN_BACKEND or numpy)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder for the PNGs, made if missing (default ./{DEFAULT_OUT})",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the table shows each stage's median (default 5)")
    parser.add_argument("--dpi", type=int, default=72, help="resolution of the PNGs (default 72)")
    parser.add_argument(
        "--max-side",
        type=int,
        default=DEFAULT_MAX_SIDE,
        metavar="N",
        help=f"downscale images whose longer side exceeds N pixels (default {DEFAULT_MAX_SIDE}; 0: never)",
    )


def _prepare_out(out: str) -> str:
    """Make the output folder (and check it is writable) before any work."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise _usage_error(f"cannot create --out folder {out!r}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise _usage_error(f"--out folder {out!r} is not writable")
    return out


def _table(stages: list[tutorial.Stage], backend_name: str) -> str:
    rows = [("layer", "stage", "output shape", "ms", "backend")]
    for s in stages:
        rows.append((str(s.layer), s.stage, str(tuple(s.output.shape)), f"{s.ms:.2f}", backend_name))
    rows.append(("all", "", "", f"{sum(s.ms for s in stages):.2f}", backend_name))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {3}  # numbers align right

    def fmt(r):
        return "  ".join(c.rjust(wd) if i in right else c.ljust(wd) for i, (c, wd) in enumerate(zip(r, widths))).rstrip()

    return "\n".join(fmt(r) for r in rows)


def run(args) -> int:
    """Run the demo; returns 0. User mistakes raise UsageError (exit code 2)."""
    try:
        import matplotlib  # noqa: F401, PLC0415 -- lazy: optional dependencies
        import skimage  # noqa: F401, PLC0415
    except ImportError as exc:
        raise _usage_error(f"needs scikit-image and matplotlib ({exc}); install them with: {DEPS_HINT}") from None
    from .. import viz  # noqa: PLC0415

    try:
        xp = backend.module(args.backend)
    except ValueError as exc:
        raise _usage_error(f"--backend: {exc}" if args.backend is not None else str(exc)) from None
    name = backend.name_of(xp)
    if args.max_side is not None and args.max_side < 0:
        raise _usage_error(f"--max-side must be >= 0, got {args.max_side}")
    if args.repeat < 1:
        raise _usage_error(f"--repeat must be >= 1, got {args.repeat}")
    if not 10 <= args.dpi <= 600:
        raise _usage_error(f"--dpi must be between 10 and 600, got {args.dpi}")
    out = _prepare_out(args.out)
    img = load_image(args.image, color=args.color, max_side=args.max_side)
    banks = tutorial_filters(depth=img.shape[2] if img.ndim == 3 else None, seed=args.seed)

    x = backend.asarray(img, name)
    banks_xp = [backend.asarray(b, name) for b in banks]
    tutorial.pipeline(x, banks_xp)  # warm-up: first calls pay for kernel compilation and caches
    # Keep the times, not every run's feature maps: kept, each stage wrote into
    # fresh pages, and on NumPy the page faults took longer than a ReLU's work.
    times = [[s.ms for s in tutorial.pipeline(x, banks_xp)] for _ in range(args.repeat - 1)]
    last = tutorial.pipeline(x, banks_xp)
    times.append([s.ms for s in last])
    stages = [s._replace(ms=statistics.median(t[i] for t in times)) for i, s in enumerate(last)]

    source = "chelsea" if args.image == "chelsea" else os.path.basename(args.image)
    mode = "colour" if img.ndim == 3 else "gray"
    print(f"xpcnn demo: {source} ({mode}, {img.shape[0]}x{img.shape[1]}), seed {args.seed}, backend {name}")
    print(f"milliseconds per stage: median of {args.repeat} run(s) after one warm-up run")
    print(_table(stages, name))

    written = []
    labels = {"conv": "conv", "relu": "ReLU", "pool": "pool"}
    for layer in sorted({s.layer for s in stages}):
        maps = {labels[s.stage]: s.output for s in stages if s.layer == layer}
        n_filters, k = LAYERS[layer - 1]
        path = os.path.join(out, f"layer{layer}.png")
        written.append(
            viz.save_feature_maps(
                path, maps, title=f"Layer {layer}: {n_filters} filter(s) {k}x{k} -> ReLU -> {POOL}x{POOL} max pool",
                dpi=args.dpi,
            )
        )
    path = os.path.join(out, "overview.png")
    title = f"{source}: input and the output of three conv-ReLU-pool layers"
    written.append(viz.save_overview(path, img, stages[-1].output, title=title, dpi=args.dpi))
    print("wrote:")
    for p in written:
        print(f"  {p}")
    return 0
