"""Sequential.predict over Dask arrays: the values of the in-memory predict, lazy,
chunked by images; the weights go to each worker once; a killed worker's
tasks are rerun and the result is still exact (real LocalCluster, processes)."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest
from conftest import NO_DASHBOARD, to_host

da = pytest.importorskip("dask.array", reason='the dask extra is not installed (pip install "xpcnn[dask]")')
distributed = pytest.importorskip("distributed", reason='the dask extra is not installed (pip install "xpcnn[dask]")')

from xpcnn import scaleout  # noqa: E402
from xpcnn.layers import Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU  # noqa: E402
from xpcnn.model import Sequential  # noqa: E402

B = 8  # batch size; chunks are multiples of it so a chunk's batches are the in-memory predict's batches


def small_cnn(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2D(1, 4, 3, padding=1, seed=rng), ReLU(), MaxPool2D(2),
        Flatten(), Dense(4 * 4 * 4, 10, seed=rng), input_shape=(1, 8, 8),
    )


def images(n, seed=1):
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


class Unflatten(Layer):
    """(F,) -> (F // 2, 2): a per-sample output with more axes than the input."""

    def forward(self, x, training=False):
        return x.reshape(len(x), -1, 2)

    def output_shape(self, input_shape):
        return (input_shape[0] // 2, 2)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on the loopback, closed after the module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  **NO_DASHBOARD) as cluster, distributed.Client(cluster) as c:
        yield c


# ---------------------------------------------------------------- values and chunks (threaded scheduler)
@pytest.mark.parametrize("chunks", [(16, 1, 8, 8), (24, 1, 3, 5), ((8, 0, 40, 32), 1, 8, 8)])
def test_lazy_predict_equals_in_memory_predict(chunks):
    model, x = small_cnn(), images(80)
    xd = da.from_array(x, chunks=chunks)
    y = model.predict(xd, batch_size=B)
    assert isinstance(y, da.Array)
    assert y.shape == (80, 10) and y.dtype == np.float32
    assert y.chunks == (xd.chunks[0], (10,))  # axis 0 as the input, per-sample axes whole
    assert type(y._meta) is np.ndarray and y._meta.ndim == 2
    got = y.compute(scheduler="threads")
    np.testing.assert_array_equal(got, model.predict(x, batch_size=B))


@pytest.mark.parametrize(
    "layers, out_shape",
    [
        ((Conv2D(1, 3, 3, seed=0), ReLU()), (3, 6, 6)),  # same number of axes
        ((Flatten(), Dense(64, 6, seed=0), Unflatten()), (3, 2)),  # fewer axes than the input
    ],
)
def test_output_axes_follow_the_model(layers, out_shape):
    model, x = Sequential(*layers), images(20)
    y = model.predict(da.from_array(x, chunks=(8, 1, 4, 8)), batch_size=B)
    assert y.shape == (20,) + out_shape and y.chunks[1:] == tuple((s,) for s in out_shape)
    assert y._meta.ndim == 1 + len(out_shape)
    np.testing.assert_array_equal(y.compute(scheduler="threads"), model.predict(x, batch_size=B))


def test_more_output_axes_than_input_axes():
    model = Sequential(Dense(6, 4, seed=0), Unflatten())
    x = np.random.default_rng(0).random((10, 6), dtype=np.float32)
    y = model.predict(da.from_array(x, chunks=(4, 3)), batch_size=B)
    assert y.shape == (10, 2, 2) and y.chunks == ((4, 4, 2), (2,), (2,))
    np.testing.assert_array_equal(y.compute(scheduler="sync"), model.predict(x, batch_size=B))


def test_chunks_of_either_backend_give_outputs_on_it(xp):
    """NumPy chunks in, NumPy out; CuPy in, CuPy out: a host model is copied to the device once per worker."""
    model, x = small_cnn(), images(40)
    xd = da.from_array(x, chunks=(16, 1, 8, 8)).map_blocks(xp.asarray, meta=xp.empty((0,) * 4, dtype=x.dtype))
    y = model.predict(xd, batch_size=B)
    assert type(y._meta) is type(xp.empty(0)) and y._meta.dtype == np.float32
    counts = getattr(xp, "counts", None)  # the CuPy stand-in counts device-to-host copies
    if counts is not None:
        counts.reset()
    got = y.compute(scheduler="threads")
    assert type(got) is type(xp.empty(0))
    if counts is not None:
        assert counts.transfers == 0
    assert model.backend == "numpy"  # the caller's model is left where it was
    np.testing.assert_allclose(to_host(got), model.predict(x, batch_size=B), rtol=1e-6, atol=1e-6)


def test_float64_input_gives_the_model_dtype():
    model, x = small_cnn(), images(16).astype(np.float64)
    y = model.predict(da.from_array(x, chunks=8), batch_size=B)
    assert y.dtype == np.float32 and y._meta.dtype == np.float32
    np.testing.assert_array_equal(y.compute(scheduler="sync"), model.predict(x, batch_size=B))


def test_bad_input_is_refused_before_any_task():
    model = small_cnn()
    with pytest.raises(TypeError, match="float array.*uint8"):
        model.predict(da.zeros((4, 1, 8, 8), dtype=np.uint8, chunks=2))
    with pytest.raises(ValueError, match=r"per-sample input shape \(1, 10, 10\) does not fit layer 4"):
        model.predict(da.zeros((4, 1, 10, 10), dtype=np.float32, chunks=2))
    with pytest.raises(ValueError, match="at least one sample"):
        model.predict(da.zeros((0, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        model.predict(da.zeros((4, 1, 8, 8), dtype=np.float32), batch_size=0)


def test_missing_dask_array_names_the_extra(monkeypatch):
    x = da.zeros((4, 1, 8, 8), dtype=np.float32)
    monkeypatch.setitem(sys.modules, "dask.array", None)  # import dask.array now fails
    with pytest.raises(ModuleNotFoundError, match=r'pip install "xpcnn\[dask\]"'):
        small_cnn().predict(x)


def test_is_dask_array():
    assert scaleout.is_dask_array(da.zeros(3))
    assert not scaleout.is_dask_array(np.zeros(3))
    assert not scaleout.is_dask_array(da.zeros(3).to_delayed()[0])


# ---------------------------------------------------------------- on worker processes
def test_weights_reach_each_worker_once(client):
    """12 chunks on 2 workers: each worker unpickles the model at most once (per chunk: 6 times each)."""
    model, x = small_cnn(), images(96)
    before = client.run(scaleout.models_received)
    y = model.predict(da.from_array(x, chunks=(8, 1, 8, 8)), batch_size=B)
    got = client.compute(y).result()
    after = client.run(scaleout.models_received)
    loads = {w: after[w] - before.get(w, 0) for w in after}
    assert y.numblocks[0] == 12
    assert sum(loads.values()) >= 1 and all(n <= 1 for n in loads.values()), loads
    np.testing.assert_array_equal(got, model.predict(x, batch_size=B))


def test_killed_worker_is_rerun_and_the_output_is_exact(client, tmp_path):
    """A task SIGKILLs its own worker process once, mid-run; the nanny restarts it, Dask reruns."""
    model, x = small_cnn(), images(160)
    flag = str(tmp_path / "killed")
    before = set(client.scheduler_info()["workers"])

    def kill_worker_once(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 3 and not os.path.exists(flag):
            open(flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return block

    xd = da.from_array(x, chunks=(8, 1, 8, 8)).map_blocks(kill_worker_once, dtype=x.dtype)
    got = client.compute(model.predict(xd, batch_size=B)).result(timeout=60)
    assert os.path.exists(flag)  # the kill ran: its process cannot have survived
    client.wait_for_workers(2, timeout=30)
    assert set(client.scheduler_info()["workers"]) != before  # a new worker replaced the killed one
    np.testing.assert_array_equal(got, model.predict(x, batch_size=B))
