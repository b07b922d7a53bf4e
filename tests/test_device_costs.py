"""What device code costs on CuPy, counted on the stand-in (runs in every lane).

The stand-in (``xpcnn.testing.fakecupy``) counts device-to-host transfers,
the operand copies CuPy's ``matmul`` makes, and the random generators
created. Values are compared with the NumPy path (itself checked against
SciPy and finite differences in the other test files).
"""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import backend, layers
from xpcnn import functional as F
from xpcnn.commands.bench import machine
from xpcnn.functional import conv
from xpcnn.losses import MSELoss
from xpcnn.model import Sequential
from xpcnn.testing import fakecupy as fc


@pytest.fixture
def cp(monkeypatch):
    """The stand-in as xpcnn's CuPy backend (in the plain lane too), counters at zero."""
    with fc.installed(devices=2) as module:
        monkeypatch.setattr(backend, "_cupy", None)  # forget the probe: it finds the stand-in now
        monkeypatch.setattr(backend, "_cupy_error", None)
        fc.counts.reset()
        yield module


def _close(got, want, rtol=1e-10):
    np.testing.assert_allclose(backend.to_numpy(got), want, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 2)])
def test_conv_gemm_and_backward_give_matmul_contiguous_operands(cp, rng, stride, groups):
    x = rng.standard_normal((5, 4, 9, 8))
    w = rng.standard_normal((6, 4 // groups, 3, 3))
    dy = rng.standard_normal(F.conv2d(x, w, stride=stride, groups=groups).shape)
    kw = {"stride": stride, "groups": groups}
    want = [F.conv2d(x, w, **kw, algo="gemm"), *F.conv2d_backward(dy, x, w, **kw)]
    xd, wd, dyd = cp.asarray(x), cp.asarray(w), cp.asarray(dy)
    fc.counts.reset()
    got = [F.conv2d(xd, wd, **kw), *F.conv2d_backward(dyd, xd, wd, **kw)]
    assert fc.counts.matmul_copies == [] and fc.counts.transfers == 0
    # Forward: one product per chunk; backward: dw one per group, dx one (the batch fits one chunk).
    assert fc.counts.matmul_calls == 1 + groups + 1
    for g, w_ in zip(got, want):
        _close(g, w_)


@pytest.mark.parametrize("algo", ["shift", "rows"])
def test_shift_and_rows_never_copy_weights_on_the_device(cp, rng, algo):
    x, w = rng.standard_normal((3, 4, 7, 7)), rng.standard_normal((6, 2, 3, 3))
    want = F.conv2d(x, w, groups=2, padding=1, algo=algo)
    fc.counts.reset()
    got = F.conv2d(cp.asarray(x), cp.asarray(w), groups=2, padding=1, algo=algo)
    # CuPy copies each tap's input view (rows strided in the phase image), never the weights.
    assert fc.counts.matmul_copies and all(s[0] == 3 and len(s) == 4 for s in fc.counts.matmul_copies)
    assert fc.counts.transfers == 0
    _close(got, want)


def test_einsum_windows_make_no_device_reads(cp, rng):
    x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    want = F.conv2d(x, w, stride=2, dilation=2, padding=2, algo="einsum")
    got = F.conv2d(cp.asarray(x), cp.asarray(w), stride=2, dilation=2, padding=2, algo="einsum")
    assert fc.counts.transfers == 0  # sliding_window_view would read its window shape: 2 per chunk
    _close(got, want)


def test_workspace_buffers_are_per_stream_and_device(cp):
    a = conv._workspace(cp, "test", (4,), "float32")
    assert conv._workspace(cp, "test", (2, 2), "float32").data.ptr == a.data.ptr
    with cp.cuda.Stream():
        assert conv._workspace(cp, "test", (4,), "float32").data.ptr != a.data.ptr
    with cp.cuda.Device(1):
        assert conv._workspace(cp, "test", (4,), "float32").data.ptr != a.data.ptr
    assert conv._workspace(cp, "test", (4,), "float32").data.ptr == a.data.ptr


def _net(seed):
    return Sequential(layers.Conv2D(1, 4, 3, seed=seed), layers.ReLU(), layers.Flatten(),
                      layers.Dense(4 * 6 * 6, 3, seed=seed, init="torch"))


def test_layers_built_on_the_device_make_no_generator_and_match_numpy(cp):
    host = _net(3)
    with backend.use("cupy"):
        fc.counts.reset()
        dev = _net(3)
        unseeded = _net(None)
    assert fc.counts.generators == 0  # a CuPy generator per layer: 32,768 curand states each
    assert dev.backend == unseeded.backend == "cupy"
    for (layer_h, name), (layer_d, _) in zip(host.parameters(), dev.parameters()):
        np.testing.assert_array_equal(backend.to_numpy(layer_d.params[name]), layer_h.params[name])


@pytest.mark.parametrize("dloss", [np.float64(0.5), 0.5, "device float64"])
def test_loss_gradients_keep_float32(cp, rng, dloss):
    dloss = cp.asarray(np.float64(0.5)) if isinstance(dloss, str) else dloss
    out, target = (cp.asarray(rng.standard_normal((4, 3)).astype(np.float32)) for _ in range(2))
    loss = MSELoss()
    loss(out, target)
    grad = loss.backward(dloss)
    assert grad.dtype == np.float32
    _close(grad, 2 * 0.5 * (out - target).get().astype(np.float64) / out.size, rtol=1e-6)
    labels = cp.asarray(np.array([0, 2, 1, 1]))
    g = F.cross_entropy_backward(out, labels, dloss)
    assert g.dtype == np.float32
    want = F.cross_entropy_backward(out.get().astype(np.float64), np.array([0, 2, 1, 1])) * 0.5
    np.testing.assert_allclose(g.get(), want, rtol=1e-6, atol=1e-7)


def test_bench_names_the_current_device(cp):
    with cp.cuda.Device(1):
        assert machine(cp).endswith("on fakecupy CPU stand-in 1")
    assert machine(cp).endswith("on fakecupy CPU stand-in 0")


def test_fit_reads_the_device_once_per_batch_and_predict_never(cp, rng):
    x = rng.random((40, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 40)
    model = _net(0).to("cupy")
    model.fit(x, y, epochs=1, batch_size=8, progress=False)  # warm: labels checked, Adam state made
    fc.counts.reset()
    epochs, batches = 2, 5
    model.fit(x, y, epochs=epochs, batch_size=8, progress=False, seed=0)
    # Documented (Sequential.fit, Notes): one finiteness read per batch; the
    # epoch's loss and accuracy sums once per epoch; the label range once per call.
    assert fc.counts.transfers <= epochs * (batches + 2) + 2, fc.counts.transfer_kinds
    xd = cp.asarray(x)
    fc.counts.reset()
    out = model.predict(xd, batch_size=8)
    assert fc.counts.transfers == 0 and out.shape == (40, 3)


def test_a_training_step_through_every_layer_reads_nothing_from_the_device(cp, rng):
    from xpcnn.losses import SoftmaxCrossEntropy
    from xpcnn.optim import SGD, Adam

    model = Sequential(
        layers.Conv2D(2, 4, 3, padding=1, seed=0), layers.BatchNorm2D(4), layers.LeakyReLU(0.1),
        layers.MaxPool2D(2), layers.Conv2D(4, 4, 3, stride=2, padding=1, groups=2, seed=1), layers.Tanh(),
        layers.AvgPool2D(2, padding=1), layers.Sigmoid(), layers.Flatten(), layers.Dropout(0.2, seed=2),
        layers.Dense(4 * 2 * 2, 3, seed=3), layers.ReLU(),
    ).to("cupy")
    x = cp.asarray(rng.random((6, 2, 12, 12), dtype=np.float32))
    labels = cp.asarray(rng.integers(0, 3, 6))
    loss = SoftmaxCrossEntropy()
    for optimizer in (SGD(0.1, momentum=0.9), Adam()):
        fc.counts.reset()
        value = loss(model.forward(x, training=True), labels, check_range=False)
        model.backward(loss.backward())
        optimizer.step(model)
        model.predict(x)
        assert fc.counts.transfers == 0, fc.counts.transfer_kinds
        assert value.ndim == 0 and np.isfinite(float(value))


def test_train_evaluate_and_bench_commands_on_the_device(cp, tmp_path, capsys):
    from xpcnn.cli import main

    out = tmp_path / "m.npz"
    assert main(["train", "--backend", "cupy", "--epochs", "1", "--out", str(out), "--no-plot", "--no-progress"]) == 0
    accuracy = float(capsys.readouterr().out.split("test accuracy:")[1].split("%")[0])
    assert accuracy > 50  # as tests/test_train_cli.py asks of the NumPy run
    assert main(["evaluate", str(out), "--dataset", "digits"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["bench", "--backend", "cupy", "--repeat", "1", "--shapes", "2"]) == 0
    assert "on fakecupy CPU stand-in 0" in capsys.readouterr().out
