"""``xpcnn predict``: .npy and zarr in and out on a real dask.distributed cluster, the
values of the in-memory predict, one-line errors before any work, and no complete-
looking output after an interrupted run."""

from __future__ import annotations

import os

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason='the dask extra is not installed (pip install "xpcnn[dask]")')
zarr = pytest.importorskip("zarr", reason='the dask extra is not installed (pip install "xpcnn[dask]")')
from conftest import NO_DASHBOARD  # noqa: E402
from test_cli import _one_line_error  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from xpcnn.cli import main  # noqa: E402
from xpcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU  # noqa: E402
from xpcnn.model import Sequential  # noqa: E402

N = 150


@pytest.fixture(scope="module")
def scheduler():
    """Address of two single-threaded worker processes on the loopback, closed after the module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  **NO_DASHBOARD) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    model = Sequential(Conv2D(2, 4, 3, padding=1, seed=rng), ReLU(), MaxPool2D(2),
                       Flatten(), Dense(4 * 5 * 5, 7, seed=rng), input_shape=(2, 10, 10))
    path = str(tmp_path_factory.mktemp("model") / "model.npz")
    model.save(path)
    return path


def expected(model_file, x):
    """The in-memory predict, with one BLAS thread as the workers run (threads round the last bits differently)."""
    with threadpool_limits(1):
        return Sequential.load(model_file).predict(x, batch_size=16)


def write_input(path, x):
    if path.endswith(".npy"):
        np.save(path, x)
    else:
        zarr.open_array(path, mode="w", shape=x.shape, chunks=(40,) + x.shape[1:], dtype=x.dtype)[...] = x


def read_output(path):
    return np.load(path) if path.endswith(".npy") else zarr.open_array(path, mode="r")[...]


@pytest.mark.parametrize("inp, out", [("x.npy", "y.npy"), ("x.zarr", "y.zarr"), ("x.npy", "y.zarr")])
def test_output_holds_predicts_values(tmp_path, capsys, scheduler, model_file, inp, out):
    x = np.random.default_rng(1).random((N, 2, 10, 10), dtype=np.float32)
    inp, out = str(tmp_path / inp), str(tmp_path / out)
    write_input(inp, x)
    argv = ["predict", model_file, inp, "--out", out, "--batch-size", "16", "--chunk-size", "32", "--scheduler", scheduler]
    assert main(argv) == 0
    assert f"{N} predictions of shape (7,)" in capsys.readouterr().out
    got = read_output(out)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected(model_file, x))
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(inp), os.path.basename(out)])  # no partial left


@pytest.mark.parametrize("out", ["y.npy", "y.zarr"])
def test_an_older_output_is_replaced(tmp_path, capsys, scheduler, model_file, out):
    out = str(tmp_path / out)
    for seed in (4, 5):
        x = np.random.default_rng(seed).random((20, 2, 10, 10), dtype=np.float32)
        np.save(tmp_path / "x.npy", x)
        assert main(["predict", model_file, str(tmp_path / "x.npy"), "--out", out, "--batch-size", "16",
                     "--no-progress", "--scheduler", scheduler]) == 0
    np.testing.assert_array_equal(read_output(out), expected(model_file, x))
    assert sorted(os.listdir(tmp_path)) == sorted(["x.npy", os.path.basename(out)])


def test_uint8_single_channel_is_scaled_as_the_loaders(tmp_path, capsys, scheduler):
    """(N, H, W) uint8 is read as (N, 1, H, W) float32 pixel / 255, as xpcnn.data.load_mnist gives."""
    model = Sequential(Conv2D(1, 3, 3, seed=0), ReLU(), Flatten(), Dense(3 * 6 * 6, 5, seed=1))
    model.save(str(tmp_path / "m.npz"))
    raw = np.random.default_rng(2).integers(0, 256, size=(70, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "x.npy", raw)
    argv = ["predict", str(tmp_path / "m.npz"), str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
            "--batch-size", "16", "--no-progress", "--scheduler", scheduler]
    assert main(argv) == 0
    scaled = (raw / 255.0).astype(np.float32)[:, None]  # the loader's scaling, computed another way
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected(str(tmp_path / "m.npz"), scaled))


def test_local_cluster_by_default_with_a_progress_bar(tmp_path, capsys, model_file):
    x = np.random.default_rng(3).random((40, 2, 10, 10), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    argv = ["predict", model_file, str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"), "--batch-size", "16",
            "--workers", "1", "--threads-per-worker", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "100% Completed" in out and "on 1 threads" in out
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected(model_file, x))


def test_local_cluster_leaves_malloc_adaptive(monkeypatch):
    """Its workers run without distributed's MALLOC_TRIM_THRESHOLD_ (1.3-1.7x the CPU time per image with it)."""
    from xpcnn.commands.predict import local_cluster

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # other clusters' nannies leak it into this process
    with local_cluster(1, 1, **NO_DASHBOARD) as cluster, distributed.Client(cluster) as client:
        env = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OPENBLAS_NUM_THREADS")))
    assert list(env.values()) == [(None, "1")]  # distributed's other settings stay


def test_interrupted_run_leaves_no_output_and_keeps_the_old_one(tmp_path, capsys, monkeypatch, scheduler, model_file):
    np.save(tmp_path / "x.npy", np.zeros((N, 2, 10, 10), np.float32))
    np.save(tmp_path / "y.npy", np.arange(3.0))  # an older output

    def interrupt(future, **kwargs):  # Ctrl-C while the progress bar runs
        assert len([f for f in os.listdir(tmp_path) if ".partial-" in f]) == 1  # writing goes to the partial file
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "progress", interrupt)
    argv = ["predict", model_file, str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"), "--scheduler", scheduler]
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.arange(3.0))
    assert sorted(os.listdir(tmp_path)) == ["x.npy", "y.npy"]


def test_input_that_does_not_fit_fails_before_any_work(tmp_path, capsys, monkeypatch, model_file):
    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    np.save(tmp_path / "x.npy", np.zeros((5, 3, 10, 10), np.float32))
    _one_line_error(capsys, ["predict", model_file, str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")],
                    "does not fit")
    assert os.listdir(tmp_path) == ["x.npy"]


@pytest.mark.parametrize(
    "make, extra, expect",
    [
        (lambda p: np.save(p / "x.npy", np.zeros((5, 10, 10), np.int16)), [], "dtype int16; expected float"),
        (lambda p: np.save(p / "x.npy", np.zeros((5, 100), np.float32)), [], "expected (N, C, H, W) or (N, H, W)"),
        (lambda p: np.save(p / "x.npy", np.zeros((0, 2, 10, 10), np.float32)), [], "with N >= 1"),
        (lambda p: np.savez((p / "x.npy").open("wb"), a=np.zeros(3)), [], "is an .npz archive"),
        (lambda p: (p / "x.npy").write_bytes(b"not numpy"), [], "is not a .npy file (it starts with b'not nu')"),
        (lambda p: np.save(p / "x.npy", np.array([{"a": 1}], dtype=object)), [], "not a readable .npy file"),
        (lambda p: None, [], "x.npy does not exist"),
        (lambda p: (p / "x.zarr").mkdir(), [], "not a readable zarr array"),
        (lambda p: np.save(p / "x.npy", np.zeros((5, 2, 10, 10), np.float32)), ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
         "not with --scheduler"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, model_file, make, extra, expect):
    make(tmp_path)
    inp = str(tmp_path / ("x.zarr" if (tmp_path / "x.zarr").exists() else "x.npy"))
    _one_line_error(capsys, ["predict", model_file, inp, "--out", str(tmp_path / "y.npy")] + extra, expect)


@pytest.mark.parametrize(
    "out, expect",
    [("y.txt", "ending in .npy or .zarr"), ("missing/y.npy", "does not exist"), ("x.npy", "is INPUT itself"),
     ("folder.zarr", "is not a zarr array")],
)
def test_bad_output_is_one_line(tmp_path, capsys, model_file, out, expect):
    np.save(tmp_path / "x.npy", np.zeros((5, 2, 10, 10), np.float32))
    (tmp_path / "folder.zarr").mkdir()
    (tmp_path / "folder.zarr" / "notes.txt").write_text("mine")
    _one_line_error(capsys, ["predict", model_file, str(tmp_path / "x.npy"), "--out", str(tmp_path / out)], expect)
    assert (tmp_path / "folder.zarr" / "notes.txt").read_text() == "mine"


def test_unreachable_scheduler_is_one_line(tmp_path, capsys, model_file):
    dask = pytest.importorskip("dask")
    np.save(tmp_path / "x.npy", np.zeros((5, 2, 10, 10), np.float32))
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        _one_line_error(capsys, ["predict", model_file, str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
                                 "--scheduler", "tcp://127.0.0.1:9"], "xpcnn: error: Timed out")
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]
