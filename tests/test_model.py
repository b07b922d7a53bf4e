"""Sequential and the losses: whole-network gradients by finite differences, training
to accuracy on digits, predict/evaluate/summary/to, and the robustness rules of fit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_host, to_xp
from gradcheck import assert_grad_close, numerical_grad

from xpcnn import backend
from xpcnn.data import load_digits
from xpcnn.layers import AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh
from xpcnn.losses import MSELoss, SoftmaxCrossEntropy
from xpcnn.model import Sequential
from xpcnn.optim import SGD, Adam

F64 = {"dtype": "float64"}


def _name(xp):
    return "cupy" if backend.is_device(xp) else "numpy"


def small_cnn(dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2D(2, 3, 3, padding=1, seed=rng, init="torch", dtype=dtype), ReLU(), MaxPool2D(2),
        Flatten(), Dense(12, 4, seed=rng, init="torch", dtype=dtype),
    )


@pytest.fixture(scope="module")
def digits():
    return load_digits()


# ---------------------------------------------------------------- gradients
def test_whole_network_gradients(xp, rng):
    """conv-relu-pool-flatten-dense-softmax cross-entropy: every gradient against finite differences."""
    x = rng.standard_normal((3, 2, 4, 4))
    labels = np.array([0, 3, 1])
    with backend.use(_name(xp)):
        model = small_cnn()
    loss = SoftmaxCrossEntropy()
    xd, yd = to_xp(xp, x), to_xp(xp, labels)
    loss(model.forward(xd, training=True), yd)
    dx = model.backward(loss.backward())

    def f(x_value):
        return float(loss(model.forward(to_xp(xp, x_value)), yd))

    assert_grad_close(dx, numerical_grad(f, x), name="dx")
    for layer, name in model.parameters():
        analytic = to_host(layer.grads[name]).copy()
        original = to_host(layer.params[name]).copy()

        def f_param(value, layer=layer, name=name):
            layer.params[name] = to_xp(xp, value)
            return float(loss(model.forward(xd), yd))

        numeric = numerical_grad(f_param, original)
        layer.params[name] = to_xp(xp, original)
        assert_grad_close(analytic, numeric, name=f"{layer!r}.{name}")


def test_deeper_network_gradients(rng):
    """Every other layer type in one float64 network, with an MSE loss."""
    model = Sequential(
        Conv2D(1, 4, 3, padding=1, seed=1, init="torch", **F64), BatchNorm2D(4, **F64), Tanh(),
        AvgPool2D(2), Conv2D(4, 2, 2, seed=2, init="torch", **F64), Sigmoid(), Flatten(),
        Dense(8, 3, seed=3, **F64), Dropout(0.3, seed=4),
    )
    x = rng.standard_normal((4, 1, 6, 6))
    target = rng.standard_normal((4, 3))
    loss = MSELoss()

    def f(x_value):
        # Dropout draws a new mask per call: a fresh seeded layer repeats the mask of the analytic pass.
        model.layers[-1] = Dropout(0.3, seed=4)
        return float(loss(model.forward(x_value, training=True), target))

    f(x)
    dx = model.backward(loss.backward())
    assert_grad_close(dx, numerical_grad(f, x), name="dx")


def test_losses_backward_by_finite_differences(rng):
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 3, 1, 2])
    ce = SoftmaxCrossEntropy()
    ce(logits, labels)
    assert_grad_close(ce.backward(), numerical_grad(lambda z: float(ce(z, labels)), logits))
    target = rng.standard_normal((5, 4))
    mse = MSELoss()
    mse(logits, target)
    assert_grad_close(mse.backward(), numerical_grad(lambda z: float(mse(z, target)), logits))
    assert_grad_close(mse.backward(0.5), 0.5 * numerical_grad(lambda z: float(mse(z, target)), logits))


def test_losses_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 5)) * 50  # large logits: log-sum-exp must not overflow
    labels = rng.integers(0, 5, 6)
    ce = SoftmaxCrossEntropy()
    zt = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(labels))
    ref.backward()
    np.testing.assert_allclose(float(ce(logits, labels)), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(ce.backward(), zt.grad.numpy(), rtol=1e-10, atol=1e-15)
    target = rng.standard_normal((6, 5))
    zt = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.mse_loss(zt, torch.tensor(target))
    ref.backward()
    mse = MSELoss()
    np.testing.assert_allclose(float(mse(logits, target)), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(mse.backward(), zt.grad.numpy(), rtol=1e-12)


def test_loss_errors():
    with pytest.raises(RuntimeError, match="before the loss was computed"):
        SoftmaxCrossEntropy().backward()
    with pytest.raises(ValueError, match=r"label 7 is outside the range \[0, 4\)"):
        SoftmaxCrossEntropy()(np.zeros((2, 4)), np.array([1, 7]))
    with pytest.raises(ValueError, match=r"shape \(2, 4\), got \(2, 3\)"):
        MSELoss()(np.zeros((2, 4)), np.zeros((2, 3)))


# ---------------------------------------------------------------- training
def test_training_on_digits_reaches_95_percent(digits):
    (x_train, y_train), (x_test, y_test) = digits
    rng = np.random.default_rng(1)
    model = Sequential(
        Conv2D(1, 16, 3, padding=1, seed=rng), ReLU(),
        Conv2D(16, 32, 3, padding=1, seed=rng), ReLU(), MaxPool2D(2),
        Flatten(), Dense(512, 64, seed=rng), ReLU(), Dense(64, 10, seed=rng),
    )
    history = model.fit(x_train, y_train, epochs=8, batch_size=32, optimizer=Adam(2e-3),
                        validation_data=(x_test, y_test), seed=1, progress=False)
    result = model.evaluate(x_test, y_test)
    assert result["accuracy"] >= 0.95, history
    assert history["val_accuracy"][-1] == pytest.approx(result["accuracy"])
    assert history["val_loss"][-1] == pytest.approx(result["loss"], rel=1e-5)
    assert history["loss"][-1] < history["loss"][0] / 5
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 8 for v in history.values())
    assert model.input_shape == (1, 8, 8)  # recorded by fit
    assert all(layer._cache is None for layer in model)  # no activations kept after training


def test_fit_regression_with_mse_and_sgd(rng):
    x = rng.standard_normal((256, 3)).astype(np.float32)
    w_true = np.array([[1.0, -2.0, 0.5]], np.float32)
    y = x @ w_true.T + 0.3
    model = Sequential(Dense(3, 1, seed=0))
    history = model.fit(x, y, epochs=30, batch_size=16, optimizer=SGD(0.05, momentum=0.9), loss=MSELoss(),
                        seed=0, progress=False)
    assert set(history) == {"loss"}
    assert history["loss"][-1] < 1e-6
    np.testing.assert_allclose(model[0].params["weight"], w_true, atol=1e-3)
    assert model.evaluate(x, y, loss=MSELoss()).keys() == {"loss"}


def test_fit_progress_bar_shows_loss_and_accuracy(rng, capsys):
    pytest.importorskip("tqdm")
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    Sequential(Dense(5, 3, seed=0)).fit(x, y, epochs=2, batch_size=8, validation_data=(x, y), progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "loss=" in err and "accuracy=" in err and "val_accuracy=" in err


def test_fit_is_reproducible_with_seeds(rng):
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = rng.integers(0, 3, 50)

    def run(seed):
        model = Sequential(Dense(4, 8, seed=0), ReLU(), Dropout(0.2, seed=1), Dense(8, 3, seed=2))
        model.fit(x, y, epochs=2, batch_size=7, seed=seed, progress=False)
        return model[0].params["weight"]

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


class _Seen(Flatten):
    """Flatten that notes the sample ids (column 0 of its input) of every training batch."""

    def __init__(self):
        super().__init__()
        self.ids = []

    def forward(self, x, training=False):
        if training:
            self.ids.extend(int(v) for v in to_host(x[:, 0]))
        return super().forward(x, training)


@pytest.mark.parametrize("batch_size", [7, 50])
def test_fit_visits_samples_in_a_new_order_every_epoch(rng, batch_size):
    n, epochs = 50, 3
    x = np.column_stack([np.arange(n), rng.standard_normal(n)]).astype(np.float32)
    y = rng.integers(0, 3, n)
    seen = _Seen()
    Sequential(seen, Dense(2, 3, seed=0)).fit(x, y, epochs=epochs, batch_size=batch_size, seed=0, progress=False)
    orders = [seen.ids[e * n:(e + 1) * n] for e in range(epochs)]
    assert len(seen.ids) == epochs * n
    for order in orders:  # every sample once per epoch, not in storage order
        assert sorted(order) == list(range(n)) and order != list(range(n))
    assert len({tuple(order) for order in orders}) == epochs


# ---------------------------------------------------------------- robustness
def _dense_problem(rng, n=48):
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = rng.integers(0, 4, n)
    return x, y


def _dense_model():
    return Sequential(Dense(6, 8, seed=0), ReLU(), Dense(8, 4, seed=1))


def _weights(model):
    return [to_host(layer.params[name]).copy() for layer, name in model.parameters()]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_stops_with_last_good_weights(rng, bad):
    x, y = _dense_problem(rng)
    x[8 * 3 + 2, 1] = bad  # first sample of trouble in batch 4 (no shuffling, batches of 8)
    model = _dense_model()
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 1, batch 4 of 6"):
        model.fit(x, y, epochs=3, batch_size=8, optimizer=SGD(0.1, momentum=0.9), shuffle=False, progress=False)
    twin = _dense_model()
    twin.fit(x[:24], y[:24], epochs=1, batch_size=8, optimizer=SGD(0.1, momentum=0.9), shuffle=False, progress=False)
    for a, b in zip(_weights(model), _weights(twin)):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


def test_finite_check_passes_large_gradients_and_catches_each_bad_value():
    model = _dense_model()
    big = np.finfo(np.float32).max  # finite; a sum of several would overflow in float32
    for layer, name in model.parameters():
        layer.grads[name] = np.full(layer.params[name].shape, big, dtype=np.float32)
    loss = np.asarray(np.float32(1.0))
    assert model._finite(loss, np)
    assert not model._finite(np.asarray(np.float32(np.nan)), np)
    for layer, name in model.parameters():
        for bad in (np.inf, -np.inf, np.nan):
            kept = layer.grads[name].flat[-1]
            layer.grads[name].flat[-1] = bad
            assert not model._finite(loss, np), (layer, name, bad)
            layer.grads[name].flat[-1] = kept


class _NaNOnCall(SoftmaxCrossEntropy):
    """A loss that turns non-finite on its `bad`-th call (1-based)."""

    def __init__(self, bad):
        super().__init__()
        self.calls, self.bad = 0, bad

    def __call__(self, logits, labels, *, check_range=True):
        self.calls += 1
        value = super().__call__(logits, labels, check_range=check_range)
        return value * np.nan if self.calls == self.bad else value


def test_non_finite_names_later_epoch_and_batch(rng):
    x, y = _dense_problem(rng)  # 6 batches of 8 per epoch
    model = _dense_model()
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 3, batch 2 of 6"):
        model.fit(x, y, epochs=5, batch_size=8, loss=_NaNOnCall(6 + 6 + 2), progress=False)
    twin = _dense_model()
    opt = Adam()
    twin.fit(x, y, epochs=2, batch_size=8, optimizer=opt, seed=0, progress=False, shuffle=False)
    twin.fit(x[:8], y[:8], epochs=1, batch_size=8, optimizer=opt, progress=False, shuffle=False)
    model2 = _dense_model()
    with pytest.raises(FloatingPointError):
        model2.fit(x, y, epochs=5, batch_size=8, loss=_NaNOnCall(14), shuffle=False, progress=False)
    for a, b in zip(_weights(model2), _weights(twin)):  # 13 steps applied, the 14th refused
        np.testing.assert_array_equal(a, b)


class _NaNGradient(Dense):
    """A Dense layer whose weight gradient turns NaN on its `bad`-th backward (the loss stays finite)."""

    def __init__(self, *args, bad, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.bad = 0, bad

    def backward(self, dy):
        dx = super().backward(dy)
        self.calls += 1
        if self.calls == self.bad:
            self.grads["weight"] = self.grads["weight"] * np.nan
        return dx


def test_non_finite_gradient_is_caught(rng):
    x, y = _dense_problem(rng)
    model = Sequential(_NaNGradient(6, 4, seed=0, bad=3))
    with pytest.raises(FloatingPointError, match=r"non-finite gradient at epoch 1, batch 3 of 6 \(loss \d"):
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False)
    twin = Sequential(Dense(6, 4, seed=0))
    twin.fit(x[:16], y[:16], epochs=1, batch_size=8, shuffle=False, progress=False)
    np.testing.assert_array_equal(model[0].params["weight"], twin[0].params["weight"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_stops_with_finite_weights(rng):
    x, y = _dense_problem(rng)
    model = _dense_model()
    # A learning rate so large that the loss overflows after a few steps.
    with pytest.raises(FloatingPointError, match=r"non-finite (loss|gradient) at epoch \d+, batch \d+ of 6") as info:
        model.fit(x * 1e3, y, epochs=50, batch_size=8, optimizer=SGD(1e6), progress=False)
    assert "last finite step" in str(info.value)
    for w in _weights(model):
        assert np.isfinite(w).all()


def test_non_finite_restores_batchnorm_statistics(rng):
    x = rng.standard_normal((16, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    x[9, 0, 0, 0] = np.nan  # batch 2 of 2

    def make():
        return Sequential(Conv2D(1, 2, 3, seed=0), BatchNorm2D(2), ReLU(), Flatten(), Dense(8, 2, seed=1))

    model = make()
    with pytest.raises(FloatingPointError, match="batch 2 of 2"):
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False)
    twin = make()
    twin.fit(x[:8], y[:8], epochs=1, batch_size=8, shuffle=False, progress=False)
    for key in ("running_mean", "running_var"):
        np.testing.assert_array_equal(model[1].buffers[key], twin[1].buffers[key])
        assert np.isfinite(model[1].buffers[key]).all()


@pytest.mark.parametrize("label", [4, -1])
def test_bad_labels_rejected_before_any_step(rng, label):
    x, y = _dense_problem(rng)
    y[30] = label
    model = _dense_model()
    before = _weights(model)
    with pytest.raises(ValueError, match=rf"label {label} is outside the range \[0, 4\)"):
        model.fit(x, y, epochs=1, progress=False)
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=rf"label {label}"):
        model.evaluate(x, y)
    with pytest.raises(ValueError, match=rf"label {label}"):
        model.fit(x[:5], y[:5], validation_data=(x, y), progress=False)


def test_wrong_input_shape_rejected_before_any_step(digits):
    (x_train, y_train), _ = digits
    model = Sequential(Conv2D(1, 4, 3, seed=0), ReLU(), Flatten(), Dense(4 * 6 * 6, 10, seed=1))
    before = _weights(model)
    big = np.zeros((4, 1, 10, 10), np.float32)
    with pytest.raises(ValueError, match=r"\(1, 10, 10\) does not fit layer 3.*expects per-sample input \(144,\), got shape \(256,\)"):
        model.fit(big, y_train[:4], progress=False)
    with pytest.raises(ValueError, match=r"expects 1 input channels, got 3"):
        model.predict(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(1, 8, 8\) = \(1, H, W\)|per-sample input \(C, H, W\)"):
        model.predict(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(TypeError, match="float array.*uint8"):
        model.fit((x_train * 16).astype(np.uint8), y_train, progress=False)
    with pytest.raises(TypeError, match="integer"):
        model.fit(x_train, y_train.astype(np.float32), progress=False)
    with pytest.raises(ValueError, match="y has 10 samples but the inputs have 1347"):
        model.fit(x_train, y_train[:10], progress=False)
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        model.fit(x_train, y_train, epochs=-1, progress=False)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        model.fit(x_train, y_train, batch_size=2.5, progress=False)
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- inference and helpers
def test_predict_batches_match_one_forward(rng):
    model = small_cnn("float32")
    x = rng.standard_normal((37, 2, 4, 4)).astype(np.float32)
    full = model.forward(x)
    for bs in (1, 5, 37, 256):
        np.testing.assert_allclose(model.predict(x, batch_size=bs), full, rtol=1e-6, atol=1e-6)
    assert all(layer._cache is None for layer in model)
    # float64 input is cast to the model's dtype.
    assert model.predict(x.astype(np.float64)).dtype == np.float32


def test_evaluate_matches_manual_computation(rng):
    model = small_cnn("float64")
    x = rng.standard_normal((23, 2, 4, 4))
    y = rng.integers(0, 4, 23)
    logits = model.forward(x)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    result = model.evaluate(x, y, batch_size=4)
    assert result["loss"] == pytest.approx(-logp[np.arange(23), y].mean(), rel=1e-12)
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == y).mean())


def test_summary_table():
    model = Sequential(Conv2D(1, 8, 3, padding=1), BatchNorm2D(8), ReLU(), MaxPool2D(2), Flatten(), Dense(128, 10),
                       input_shape=(1, 8, 8))
    text = model.summary()
    assert "(None, 8, 8, 8)" in text and "(None, 8, 4, 4)" in text and "(None, 128)" in text and "(None, 10)" in text
    assert "80" in text and "1,290" in text
    assert f"Total params: {80 + 16 + 1290:,}" in text
    assert "Non-trainable values (buffers): 16" in text
    unbuilt = Sequential(Dense(3, 2)).summary()
    assert "?" in unbuilt and "Total params: 8" in unbuilt
    with pytest.raises(ValueError, match=r"does not fit layer 0"):
        model.summary((3, 8, 8))


def test_sequential_basics():
    layers = [Dense(3, 4), ReLU(), Dense(4, 2)]
    model = Sequential(layers)
    assert len(model) == 3 and model[1] is layers[1] and list(model) == layers
    assert model.parameters() == [(layers[0], "weight"), (layers[0], "bias"), (layers[2], "weight"), (layers[2], "bias")]
    assert model.num_params() == 3 * 4 + 4 + 4 * 2 + 2
    assert model.backend == "numpy" and model.dtype == np.float32
    assert model.to("numpy") is model
    assert "Dense(3, 4)" in repr(model)
    with pytest.raises(TypeError, match="layer 1 must be an xpcnn.layers.Layer"):
        Sequential(Dense(2, 2), "relu")
    with pytest.raises(ValueError, match="does not fit layer 0"):
        Sequential(Dense(3, 2), input_shape=(4,))
    with pytest.raises(ValueError, match="unknown backend"):
        model.to("tpu")


def test_to_backend_moves_parameters(xp, rng):
    model = small_cnn("float32")
    x = rng.standard_normal((6, 2, 4, 4)).astype(np.float32)
    expected = model.predict(x)
    model.to(_name(xp))
    assert model.backend == _name(xp)
    assert all(backend.get_array_module(layer.params[name]) is xp for layer, name in model.parameters())
    out = model.predict(x)  # host data is moved to the model's backend
    assert backend.get_array_module(out) is xp
    np.testing.assert_allclose(to_host(out), expected, rtol=1e-5, atol=1e-6)
    history = model.fit(x, np.arange(6) % 4, epochs=2, batch_size=4, progress=False)
    assert all(isinstance(v, float) for v in history["loss"])
    model.to("numpy")
    assert model.backend == "numpy"


def test_backward_without_input_grad_fills_the_same_grads(rng):
    from xpcnn.layers import Conv2D, Dense, Flatten, ReLU
    from xpcnn.model import Sequential

    model = Sequential(Conv2D(1, 4, 3, seed=0), ReLU(), Flatten(), Dense(4 * 6 * 6, 3, seed=1))
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    dy = rng.standard_normal((5, 3)).astype(np.float32)
    model.forward(x, training=True)
    dx = model.backward(dy)
    full = {(i, k): v.copy() for i, layer in enumerate(model.layers) for k, v in layer.grads.items()}
    model.forward(x, training=True)
    assert model.backward(dy, input_grad=False) is None
    assert dx.shape == x.shape
    for (i, k), v in full.items():
        np.testing.assert_array_equal(model.layers[i].grads[k], v)
