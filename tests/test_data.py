"""Tests for xpcnn.data: digits, IDX/MNIST loading, mini-batch iteration."""

import gzip
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from xpcnn import data
from xpcnn.data import iterate_minibatches, load_digits, load_mnist, read_idx

sklearn_datasets = pytest.importorskip("sklearn.datasets")


# --------------------------------------------------------------------------
# load_digits
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sk_digits():
    bunch = sklearn_datasets.load_digits()
    return bunch.data, bunch.target


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_digits_shapes_dtypes_range(digits):
    (xtr, ytr), (xte, yte) = digits
    for x, y in ((xtr, ytr), (xte, yte)):
        assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == (1, 8, 8) and x.ndim == 4
        assert y.shape == (x.shape[0],)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert set(np.unique(y)) <= set(range(10))
    # The raw pixels reach 16, so the scaled max must reach exactly 1.
    assert max(xtr.max(), xte.max()) == 1.0


@pytest.mark.parametrize("test_size", [0.25, 0.1, 0.5])
def test_digits_split_sizes(sk_digits, test_size):
    (xtr, _), (xte, _) = load_digits(test_size=test_size)
    n = len(sk_digits[0])
    assert n == 1797
    assert len(xtr) + len(xte) == n
    assert abs(len(xte) - test_size * n) <= 1


def test_digits_stratified(sk_digits, digits):
    _, target = sk_digits
    (_, ytr), (_, yte) = digits
    full = np.bincount(target, minlength=10)
    test_counts = np.bincount(yte, minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * full) <= 1)
    assert np.array_equal(np.bincount(ytr, minlength=10) + test_counts, full)


def test_digits_are_sklearn_rows_with_their_labels(sk_digits, digits):
    # The multiset of (pixels*16, label) rows over train+test must equal
    # sklearn's: every sample used exactly once, pixels and labels paired.
    raw, target = sk_digits
    (xtr, ytr), (xte, yte) = digits
    ours = np.concatenate([
        np.column_stack([xtr.reshape(len(xtr), -1) * 16, ytr]),
        np.column_stack([xte.reshape(len(xte), -1) * 16, yte]),
    ])
    ref = np.column_stack([raw, target]).astype(np.float64)
    sort = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    assert np.array_equal(sort(ours.astype(np.float64)), sort(ref))


def test_digits_deterministic_per_seed():
    (a_tr, a_ytr), (a_te, _) = load_digits(seed=3)
    (b_tr, b_ytr), (b_te, _) = load_digits(seed=3)
    (c_tr, _), _ = load_digits(seed=4)
    assert np.array_equal(a_tr, b_tr) and np.array_equal(a_te, b_te)
    assert np.array_equal(a_ytr, b_ytr)
    assert not np.array_equal(a_tr, c_tr)


@pytest.mark.parametrize("bad", [0, 1, 0.0, 1.0, -0.1, 1.5, float("nan"),
                                 True, "0.2", None])
def test_digits_bad_test_size(bad):
    with pytest.raises(ValueError, match="test_size") as info:
        load_digits(test_size=bad)
    assert repr(bad) in str(info.value)


def test_digits_without_sklearn_gives_install_hint(monkeypatch):
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    monkeypatch.setitem(sys.modules, "sklearn.model_selection", None)
    with pytest.raises(ImportError, match=r'pip install "xpcnn\[train\]"'):
        load_digits()


def test_import_does_not_load_sklearn():
    root = os.path.dirname(os.path.dirname(os.path.abspath(data.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import sys, xpcnn.data; "
            "sys.exit(int('sklearn' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# --------------------------------------------------------------------------
# IDX / MNIST
# --------------------------------------------------------------------------

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
          np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(arr):
    """Independent IDX writer: magic, big-endian uint32 dims, big-endian data."""
    arr = np.asarray(arr)
    head = bytes([0, 0, _CODES[arr.dtype], arr.ndim])
    dims = np.array(arr.shape, dtype=">u4").tobytes()
    return head + dims + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr, gz=False):
    payload = idx_bytes(arr)
    if gz:
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


NAMES = {"xtr": "train-images-idx3-ubyte", "ytr": "train-labels-idx1-ubyte",
         "xte": "t10k-images-idx3-ubyte", "yte": "t10k-labels-idx1-ubyte"}


def make_mnist(folder, gz=(False,) * 4, n_train=5, n_test=3, seed=0,
               dotted=False):
    rng = np.random.default_rng(seed)
    arrays = {
        "xtr": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "ytr": rng.integers(0, 10, n_train, dtype=np.uint8),
        "xte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "yte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    # Make sure both extremes are present so scaling is checked at the ends.
    arrays["xtr"][0, 0, 0], arrays["xtr"][0, 0, 1] = 0, 255
    for (key, name), z in zip(NAMES.items(), gz):
        if dotted:
            name = name.replace("-idx", ".idx")
        write_idx(folder / (name + (".gz" if z else "")), arrays[key], gz=z)
    return arrays


def check_round_trip(loaded, arrays):
    (xtr, ytr), (xte, yte) = loaded
    for x, y, xk, yk in ((xtr, ytr, "xtr", "ytr"), (xte, yte, "xte", "yte")):
        n = len(arrays[xk])
        assert x.dtype == np.float32 and x.shape == (n, 1, 28, 28)
        assert y.dtype == np.int64 and y.shape == (n,)
        assert x.min() >= 0.0 and x.max() <= 1.0
        np.testing.assert_allclose(x[:, 0], arrays[xk] / 255.0, rtol=1e-6)
        assert np.array_equal(np.rint(x[:, 0] * 255).astype(np.uint8),
                              arrays[xk])
        assert np.array_equal(y, arrays[yk])
    assert xtr[0, 0, 0, 0] == 0.0 and xtr[0, 0, 0, 1] == 1.0


@pytest.mark.parametrize("gz", [(False,) * 4, (True,) * 4,
                                (True, False, False, True)],
                         ids=["raw", "gzip", "mixed"])
def test_mnist_round_trip(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    check_round_trip(load_mnist(tmp_path), arrays)


def test_mnist_raw_file_wins_over_its_gz_copy(tmp_path):
    make_mnist(tmp_path, gz=(True,) * 4, n_train=4, n_test=2, seed=1)
    arrays = make_mnist(tmp_path, gz=(False,) * 4, seed=0)  # other contents, other counts
    check_round_trip(load_mnist(tmp_path), arrays)


#: The real MNIST files, beside the repository (``../shared/data/mnist``); a
#: user's clone has no such folder, and the test below then skips.
REAL_MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mnist")


@pytest.mark.skipif(not os.path.isdir(REAL_MNIST), reason=f"no real MNIST files at {os.path.normpath(REAL_MNIST)} "
                    "(../shared/data/mnist from the repository root)")
def test_real_mnist_files():
    (x, y), (xt, yt) = load_mnist(REAL_MNIST)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == xt.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    # The class counts published with the data set (LeCun, Cortes and Burges).
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_dotted_names_and_pathlike(tmp_path):
    arrays = make_mnist(tmp_path, gz=(True, False, True, False), dotted=True)
    check_round_trip(load_mnist(str(tmp_path)), arrays)


def test_mnist_missing_file_named(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte" in msg
    assert "train-images" not in msg.split(";")[0]  # only the missing one
    assert "MNIST" in msg and str(tmp_path) in msg


def test_mnist_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="download"):
        load_mnist(tmp_path / "nope")


def test_mnist_truncated_file(tmp_path):
    make_mnist(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    expected = 5 * 28 * 28
    with pytest.raises(ValueError) as info:
        load_mnist(tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg
    assert str(expected) in msg and str(expected - 10) in msg


def test_mnist_truncated_gzip(tmp_path):
    make_mnist(tmp_path, gz=(True,) * 4)
    f = tmp_path / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_mnist_wrong_magic(tmp_path):
    make_mnist(tmp_path)
    f = tmp_path / "train-labels-idx1-ubyte"
    raw = bytearray(f.read_bytes())
    raw[:4] = b"\x12\x34\x08\x01"
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="magic"):
        load_mnist(tmp_path)


def test_mnist_labels_file_in_place_of_images(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte",
              np.zeros(5, dtype=np.uint8))
    with pytest.raises(ValueError, match="0x00000803"):
        load_mnist(tmp_path)


def test_mnist_count_mismatch(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte",
              np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="mismatch"):
        load_mnist(tmp_path)


def test_mnist_label_out_of_range(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte",
              np.array([1, 10, 2], dtype=np.uint8))
    with pytest.raises(ValueError, match="label 10"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_idx_dtypes_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((3, 4, 2)) * 100).astype(dtype)
    for gz in (False, True):
        out = read_idx(write_idx(tmp_path / f"a{gz}", arr, gz=gz))
        assert out.dtype == np.dtype(dtype).newbyteorder("=")
        assert out.shape == arr.shape and np.array_equal(out, arr)
        assert out.flags.writeable


def test_read_idx_file_object(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    f = write_idx(tmp_path / "x.gz", arr, gz=True)
    with open(f, "rb") as fh:
        assert np.array_equal(read_idx(fh), arr)


def test_read_idx_trailing_bytes(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"\0")
    with pytest.raises(ValueError, match="trailing"):
        read_idx(f)


@pytest.mark.parametrize("payload", [b"", b"\0\0", b"\0\0\x07\x01" + b"\0" * 8,
                                     b"\0\0\x08\x00", b"\0\0\x08\x03\0\0\0\1"],
                         ids=["empty", "short", "bad-type", "0-dims",
                              "short-header"])
def test_read_idx_bad_headers(tmp_path, payload):
    f = tmp_path / "bad"
    f.write_bytes(payload)
    with pytest.raises(ValueError, match="bad"):
        read_idx(f)


def test_read_idx_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


# --------------------------------------------------------------------------
# iterate_minibatches
# --------------------------------------------------------------------------

def _xy(n=23):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64) * 10
    return x, y


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n,bs", [(23, 5), (20, 5), (3, 10), (7, 1), (0, 4)])
def test_batches_cover_each_sample_once(shuffle, n, bs):
    x, y = _xy(n)
    batches = list(iterate_minibatches(x, y, bs, shuffle=shuffle, seed=0))
    assert len(batches) == -(-n // bs)
    sizes = [len(xb) for xb, _ in batches]
    assert all(s == bs for s in sizes[:-1])
    if n:
        assert sizes[-1] == n - bs * (len(batches) - 1)  # partial last batch
    xs = np.concatenate([xb for xb, _ in batches]) if batches else x[:0]
    ys = np.concatenate([yb for _, yb in batches]) if batches else y[:0]
    # Pairs stay together and every sample appears exactly once.
    assert np.array_equal(xs[:, 0] / 2 * 10, ys)
    assert np.array_equal(np.sort(ys), y)


def test_no_shuffle_preserves_order():
    x, y = _xy()
    xs = np.concatenate([xb for xb, _ in iterate_minibatches(x, y, 4,
                                                             shuffle=False)])
    assert np.array_equal(xs, x)


def test_shuffle_reproducible_and_seed_dependent():
    x, y = _xy(50)
    order = lambda seed: np.concatenate(  # noqa: E731
        [yb for _, yb in iterate_minibatches(x, y, 8, seed=seed)])
    a, b, c = order(7), order(7), order(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, y)  # really shuffled


def test_shared_generator_gives_new_order_each_epoch():
    x, y = _xy(50)
    rng = np.random.default_rng(0)
    e1 = np.concatenate([yb for _, yb in iterate_minibatches(x, y, 50, seed=rng)])
    e2 = np.concatenate([yb for _, yb in iterate_minibatches(x, y, 50, seed=rng)])
    assert not np.array_equal(e1, e2)


@pytest.mark.parametrize("bs", [0, -3])
def test_bad_batch_size_value(bs):
    x, y = _xy()
    with pytest.raises(ValueError, match=f"batch_size.*{bs}"):
        iterate_minibatches(x, y, bs)  # raises at call, not at first next()


@pytest.mark.parametrize("bs", [2.0, "4", None, True])
def test_bad_batch_size_type(bs):
    x, y = _xy()
    with pytest.raises(TypeError, match="batch_size"):
        iterate_minibatches(x, y, bs)


def test_length_mismatch():
    x, y = _xy(10)
    with pytest.raises(ValueError, match=r"len\(x\)=10.*len\(y\)=9"):
        iterate_minibatches(x, y[:9], 3)


class _DeviceArray:
    """Stand-in for a device array: refuses to be indexed by host arrays."""

    def __init__(self, a):
        self.a = np.asarray(a)

    def __len__(self):
        return len(self.a)

    def __getitem__(self, key):
        if isinstance(key, np.ndarray):
            raise TypeError("host index into a device array")
        if isinstance(key, _DeviceArray):
            return _DeviceArray(self.a[key.a])
        return _DeviceArray(self.a[key])


def test_permutation_moved_to_each_arrays_module(monkeypatch):
    fake_xp = types.SimpleNamespace(asarray=_DeviceArray)
    monkeypatch.setattr(
        data, "get_array_module",
        lambda *a: fake_xp if isinstance(a[0], _DeviceArray) else np)
    x, y = _xy(11)
    # x "on the device", y on the host: each must be indexed in its own module.
    out = list(iterate_minibatches(_DeviceArray(x), y, 4, seed=1))
    assert all(isinstance(xb, _DeviceArray) for xb, _ in out)
    assert all(isinstance(yb, np.ndarray) for _, yb in out)
    xs = np.concatenate([xb.a for xb, _ in out])
    ys = np.concatenate([yb for _, yb in out])
    assert np.array_equal(xs[:, 0] / 2 * 10, ys)
    assert not np.array_equal(ys, y)
