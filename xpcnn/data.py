"""Data sets and mini-batches (host-side I/O).

Loaders return NumPy arrays on the host: images as float32 NCHW in ``[0, 1]``
and labels as int64 class ids. Move them to a device with
:func:`xpcnn.backend.asarray`. :func:`iterate_minibatches` works on NumPy and
CuPy arrays alike.

scikit-learn is an optional dependency (the ``train`` extra); it is imported
only when :func:`load_digits` is called, so ``import xpcnn`` stays light.
"""

from __future__ import annotations

import gzip
import io
import math
import numbers
import operator
import os
import struct
import zlib

import numpy as np

from xpcnn.backend import get_array_module

__all__ = ["load_digits", "load_mnist", "read_idx", "iterate_minibatches"]

MNIST_URL = "http://yann.lecun.com/exdb/mnist/"

# IDX type codes -> big-endian dtypes (the format stores multi-byte values
# most-significant byte first).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# (split, role) -> file stem; both the canonical ``-idx`` and the dotted
# ``.idx`` spellings occur on mirrors.
_MNIST_FILES = {
    ("train", "images"): ("train-images", "idx3-ubyte"),
    ("train", "labels"): ("train-labels", "idx1-ubyte"),
    ("test", "images"): ("t10k-images", "idx3-ubyte"),
    ("test", "labels"): ("t10k-labels", "idx1-ubyte"),
}


# --------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------

def load_digits(test_size=0.25, seed=0):
    """Load scikit-learn's bundled 8x8 handwritten digits, split train/test.

    The 1797 images ship with scikit-learn, so nothing is downloaded. The
    split is stratified by class and reproducible for a given ``seed``.

    Parameters
    ----------
    test_size : float, default 0.25
        Fraction of the samples that go to the test set, strictly between
        0 and 1.
    seed : int or None, default 0
        Seed of the split (``random_state`` of
        :func:`sklearn.model_selection.train_test_split`). ``None`` gives a
        different split on every call.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        ``x_*`` are float32 of shape ``(N, 1, 8, 8)`` with values in
        ``[0, 1]`` (the raw 0..16 intensities divided by 16); ``y_*`` are
        int64 of shape ``(N,)`` with class ids in ``[0, 9]``.

    Raises
    ------
    ValueError
        If ``test_size`` is not a number strictly between 0 and 1.
    ModuleNotFoundError
        If scikit-learn is not installed.

    Examples
    --------
    >>> from xpcnn.data import load_digits
    >>> (x_train, y_train), (x_test, y_test) = load_digits()
    >>> x_train.shape, x_train.dtype, y_test.shape, y_test.dtype
    ((1347, 1, 8, 8), dtype('float32'), (450,), dtype('int64'))
    >>> float(x_train.min()), float(x_train.max())
    (0.0, 1.0)
    """
    # bool is an int subclass; True would silently mean "1 sample" in sklearn.
    if (not isinstance(test_size, numbers.Real) or isinstance(test_size, bool)
            or not 0.0 < test_size < 1.0):
        raise ValueError(
            f"test_size must be a fraction strictly between 0 and 1, "
            f"got {test_size!r}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ModuleNotFoundError(
            "xpcnn.data.load_digits needs scikit-learn, which is not "
            'installed; install it with: pip install "xpcnn[train]"',
            name="sklearn") from exc

    bunch = _sk_load_digits()
    x = (bunch.data.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=float(test_size), stratify=y, random_state=seed)
    return (x_train, y_train), (x_test, y_test)


# --------------------------------------------------------------------------
# IDX / MNIST
# --------------------------------------------------------------------------

#: Bytes read at a time from an IDX payload: memory follows what the file
#: really holds, not what its header claims.
_IDX_CHUNK = 16 * 2**20


class _Source:
    """An IDX file as a binary stream, gzip-decompressed on the fly (detected from the content)."""

    def __init__(self, file):
        if hasattr(file, "read"):
            self.name = str(getattr(file, "name", repr(file)))
            raw, self._own = file, None
        else:
            self.name = os.fspath(file)
            raw = self._own = open(self.name, "rb")
        if not raw.seekable():
            raw = io.BytesIO(raw.read())
        start = raw.tell()
        # Sniff the gzip magic instead of trusting the suffix: an IDX header
        # always starts with two zero bytes, so the two can never be confused,
        # and mirrors sometimes serve decompressed files still named *.gz.
        self.gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(start)
        self.stream = gzip.GzipFile(fileobj=raw, mode="rb") if self.gzip else raw

    def read(self, n: int) -> bytes:
        """Up to `n` bytes, fewer only at the end of the (decompressed) stream."""
        parts, left = [], n
        try:
            while left > 0:
                part = self.stream.read(min(left, _IDX_CHUNK))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
        except (EOFError, OSError, zlib.error) as exc:  # OSError covers BadGzipFile
            raise ValueError(f"{self.name}: corrupt or truncated gzip stream ({exc})") from None
        return b"".join(parts)

    def close(self) -> None:
        if self._own is not None:
            self._own.close()


def read_idx(file):
    """Read one IDX file (the MNIST container format), raw or gzip-compressed.

    The header is read first, then exactly the bytes it announces (and one
    more, to detect trailing data): a file never costs more memory than the
    smaller of what its header announces and what it holds, so a gzip bomb
    is refused after reading one byte past the announced payload.

    Parameters
    ----------
    file : str, os.PathLike or binary file object
        The file to read. Gzip compression is detected from the content, not
        the file name.

    Returns
    -------
    numpy.ndarray
        A new, writeable, native-endian array whose shape is the dims in the
        header and whose dtype follows the header's type code: 0x08 uint8,
        0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. An
        MNIST image file gives uint8 ``(N, 28, 28)``, a label file uint8
        ``(N,)``.

    Raises
    ------
    FileNotFoundError
        If ``file`` is a path that does not exist.
    ValueError
        If the header is malformed (non-zero leading bytes, unknown type
        code, zero dimensions, short header), if the dimensions' product is
        too large for an array, if the payload is not exactly
        ``prod(dims) * itemsize`` bytes (message names the file and the
        expected and actual byte counts), or if the gzip stream is corrupt.

    Examples
    --------
    A 2 x 3 uint8 array: two zero bytes, the type code 0x08, two dimensions,
    each a big-endian int32, then the data.

    >>> import io
    >>> from xpcnn.data import read_idx
    >>> header = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    >>> read_idx(io.BytesIO(header + bytes(range(6))))
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    src = _Source(file)
    try:
        return _read_idx(src, src.name)
    finally:
        src.close()


def _read_idx(src: _Source, name: str):
    head = src.read(4)
    if len(head) < 4:
        raise ValueError(
            f"{name}: not an IDX file: {len(head)} bytes, shorter than the "
            f"4-byte magic number")
    zero0, zero1, code, ndim = head
    magic = int.from_bytes(head, "big")
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{name}: not an IDX file: magic number 0x{magic:08X}; expected "
            f"0x0000TTDD with type code TT in "
            f"{{{', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)}}} and DD >= 1 "
            f"dimensions (e.g. 0x00000803 for MNIST images, 0x00000801 for "
            f"labels)")
    header_len = 4 + 4 * ndim
    dims_raw = src.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise ValueError(
            f"{name}: truncated IDX header: {ndim} dimensions need "
            f"{header_len} header bytes, the file has {4 + len(dims_raw)}")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # a Python int: never wraps
    if expected > np.iinfo(np.intp).max:
        raise ValueError(
            f"{name}: IDX dims {tuple(dims)} of {dtype.itemsize}-byte items "
            f"need {expected} bytes, more than an array can hold")
    data = src.read(expected + 1)
    actual = len(data)
    if actual != expected:
        what = "truncated" if actual < expected else "trailing data in"
        found = actual if actual < expected else f"more than {expected}"
        raise ValueError(
            f"{name}: {what} IDX payload: dims {tuple(dims)} of "
            f"{dtype.itemsize}-byte items need {expected} bytes after the "
            f"{header_len}-byte header, found {found}")
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    # frombuffer over bytes is read-only and big-endian; one copy fixes both.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_mnist_file(folder, split, role):
    stem, suffix = _MNIST_FILES[(split, role)]
    candidates = [f"{stem}-{suffix}", f"{stem}.{suffix}"]
    for base in candidates:
        for name in (base, base + ".gz"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def _mnist_hint(folder):
    return (f"download the four IDX files (train-images-idx3-ubyte.gz, "
            f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            f"t10k-labels-idx1-ubyte.gz) from the MNIST site ({MNIST_URL} "
            f"or a mirror) into {folder}")


def _load_mnist_split(images_path, labels_path):
    images = read_idx(images_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{images_path}: expected an IDX image file (magic 0x00000803: "
            f"uint8, 3 dims), got {images.dtype} with {images.ndim} dims")
    labels = read_idx(labels_path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected an IDX label file (magic 0x00000801: "
            f"uint8, 1 dim), got {labels.dtype} with {labels.ndim} dims")
    if len(images) != len(labels):
        raise ValueError(
            f"image/label count mismatch: {images_path} has {len(images)} "
            f"images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        bad = int(labels[labels > 9][0])
        raise ValueError(
            f"{labels_path}: label {bad} outside the digit range [0, 9]")
    n, h, w = images.shape
    x = images.reshape(n, 1, h, w).astype(np.float32)
    # In place: the full training set is ~190 MB as float32.
    x /= np.float32(255.0)
    return x, labels.astype(np.int64)


def load_mnist(path):
    """Load MNIST (or a drop-in such as Fashion-MNIST) from IDX files.

    ``path`` must hold the four standard files, each raw or gzip-compressed
    (``.gz``), under the canonical names ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte`` or the dotted spelling some mirrors use
    (``train-images.idx3-ubyte``, ...). Raw and compressed files may be
    mixed; when both exist the raw one is read.

    Parameters
    ----------
    path : str or os.PathLike
        Folder containing the files.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        ``x_*`` are float32 of shape ``(N, 1, H, W)`` (``H = W = 28`` for
        MNIST) with values in ``[0, 1]`` (pixel / 255); ``y_*`` are int64 of
        shape ``(N,)`` with class ids in ``[0, 9]``.

    Raises
    ------
    FileNotFoundError
        If the folder or any of the four files is missing; the message names
        every missing file and where to download MNIST.
    ValueError
        If a file is not a valid IDX file (see :func:`read_idx`), an image
        file is not uint8 with 3 dims or a label file not uint8 with 1 dim,
        the image and label counts differ, or a label is above 9.
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"MNIST folder {folder!r} does not exist; {_mnist_hint(folder)}")
    found, missing = {}, []
    for key in _MNIST_FILES:
        found[key] = _find_mnist_file(folder, *key)
        if found[key] is None:
            stem, suffix = _MNIST_FILES[key]
            missing.append(f"{stem}-{suffix}[.gz]")
    if missing:
        raise FileNotFoundError(
            f"MNIST file(s) missing in {folder!r}: {', '.join(missing)}; "
            f"{_mnist_hint(folder)}")
    train = _load_mnist_split(found[("train", "images")],
                              found[("train", "labels")])
    test = _load_mnist_split(found[("test", "images")],
                             found[("test", "labels")])
    return train, test


# --------------------------------------------------------------------------
# Mini-batches
# --------------------------------------------------------------------------

def iterate_minibatches(x, y, batch_size, shuffle=True, seed=None):
    """Iterate once over ``(x, y)`` in mini-batches.

    Arguments are checked when this function is called, not at the first
    ``next()``. The permutation is drawn on the host and moved to the arrays'
    module once per call, so device arrays stay on the device.

    Parameters
    ----------
    x : numpy.ndarray or cupy.ndarray, shape (N, ...)
        Inputs, any dtype.
    y : numpy.ndarray or cupy.ndarray, shape (N, ...)
        Targets, any dtype; may live on a different backend than ``x``.
    batch_size : int
        Samples per batch, >= 1. The last batch holds the ``N % batch_size``
        remaining samples when ``N`` is not a multiple.
    shuffle : bool, default True
        Visit the samples in a random order; otherwise in storage order
        (and the batches are views, not copies).
    seed : int, numpy.random.Generator or None, default None
        Passed to :func:`numpy.random.default_rng`. An int repeats the same
        order; pass one Generator across epochs to get a fresh order each
        epoch; ``None`` uses fresh OS entropy.

    Returns
    -------
    iterator of (xb, yb)
        ``ceil(N / batch_size)`` pairs; ``xb`` has shape ``(b, ...)`` and
        the dtype and module of ``x`` (likewise ``yb``), with
        ``b <= batch_size``. Every sample appears exactly once.

    Raises
    ------
    TypeError
        If ``batch_size`` is not an integer.
    ValueError
        If ``batch_size < 1`` or ``len(x) != len(y)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.data import iterate_minibatches
    >>> x, y = np.arange(5.0), np.arange(5)
    >>> [yb.tolist() for _, yb in iterate_minibatches(x, y, 2, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    >>> sorted(int(v) for _, yb in iterate_minibatches(x, y, 2, seed=0) for v in yb)
    [0, 1, 2, 3, 4]
    """
    if isinstance(batch_size, bool):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    try:
        batch_size = operator.index(batch_size)
    except TypeError:
        raise TypeError(
            f"batch_size must be an int, got {type(batch_size).__name__} "
            f"{batch_size!r}") from None
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, n_y = len(x), len(y)
    if n != n_y:
        raise ValueError(
            f"x and y must have the same number of samples, got len(x)={n} "
            f"and len(y)={n_y}")
    if shuffle:
        perm = np.random.default_rng(seed).permutation(n)
        # One host->device copy per epoch, not per batch.
        perm_x = get_array_module(x).asarray(perm)
        perm_y = get_array_module(y).asarray(perm)
    else:
        perm_x = perm_y = None
    return _batches(x, y, n, batch_size, perm_x, perm_y)


def _batches(x, y, n, batch_size, perm_x, perm_y):
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if perm_x is None:
            yield x[start:stop], y[start:stop]
        else:
            yield x[perm_x[start:stop]], y[perm_y[start:stop]]
