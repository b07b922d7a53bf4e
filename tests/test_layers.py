"""Layers: gradients against float64 finite differences, the params/grads protocol,
initialisation, dropout and batch normalisation (against PyTorch where installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import to_host, to_xp
from gradcheck import assert_grad_close, numerical_grad

from xpcnn import backend
from xpcnn.layers import (
    REGISTRY,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)


def _name(xp):
    return "cupy" if backend.is_device(xp) else "numpy"


def check_layer_gradients(xp, make, x, rng):
    """Compare a layer's backward (input and parameter gradients) with finite differences.

    `make()` builds a fresh float64 layer on the current default backend; its
    parameters are replaced by the same host values for every evaluation, so
    that f is a deterministic function of the input and of each parameter.
    """
    with backend.use(_name(xp)):
        layer = make()
        params = {k: to_host(v).copy() for k, v in layer.params.items()}
        y = layer.forward(to_xp(xp, x), training=True)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(to_xp(xp, dy))
        assert set(layer.grads) == set(layer.params)

        def f(x_value, override=None):
            fresh = make()
            for k, v in {**params, **(override or {})}.items():
                fresh.params[k] = to_xp(xp, v)
            out = fresh.forward(to_xp(xp, x_value), training=True)
            return float((to_host(out) * dy).sum())

        assert_grad_close(dx, numerical_grad(f, x), name="dx")
        for k, value in params.items():
            g = numerical_grad(lambda v, k=k: f(x, {k: v}), value)
            assert_grad_close(layer.grads[k], g, name=k)


F64 = {"dtype": "float64"}

CONV_CASES = {
    "plain": ({"in_channels": 3, "out_channels": 4, "kernel_size": 3}, (2, 3, 5, 5)),
    "pad-stride": ({"in_channels": 2, "out_channels": 3, "kernel_size": (3, 2), "stride": 2, "padding": 1}, (2, 2, 6, 5)),
    "dilation": ({"in_channels": 2, "out_channels": 2, "kernel_size": 2, "dilation": 2, "padding": (1, 0)}, (1, 2, 5, 6)),
    "groups-nobias": ({"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2, "bias": False}, (2, 4, 4, 4)),
    "many-channels": ({"in_channels": 16, "out_channels": 2, "kernel_size": 3, "padding": 1}, (1, 16, 3, 3)),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_gradients(xp, rng, case):
    kwargs, shape = CONV_CASES[case]
    check_layer_gradients(xp, lambda: Conv2D(**kwargs, seed=1, init="torch", **F64), rng.standard_normal(shape), rng)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradients(xp, rng, bias):
    check_layer_gradients(xp, lambda: Dense(7, 4, bias=bias, seed=2, init="torch", **F64), rng.standard_normal((3, 7)), rng)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MaxPool2D(2),
        lambda: MaxPool2D(3, stride=2, padding=1),
        lambda: AvgPool2D(2),
        lambda: AvgPool2D((3, 2), stride=(1, 2), padding=(1, 1)),
        lambda: ReLU(),
        lambda: LeakyReLU(0.2),
        lambda: Sigmoid(),
        lambda: Tanh(),
        lambda: Flatten(),
        lambda: Dropout(0.4, seed=7),
        lambda: BatchNorm2D(3, **F64),
        lambda: BatchNorm2D(3, affine=False, **F64),
    ],
    ids=["max", "max-s2p1", "avg", "avg-rect", "relu", "leaky", "sigmoid", "tanh", "flatten", "dropout", "bn",
         "bn-noaffine"],
)
def test_parameter_free_and_bn_gradients(xp, rng, make):
    x = rng.standard_normal((2, 3, 5, 4))
    if isinstance(make(), BatchNorm2D):
        # Non-trivial scale and shift so that the weight and bias gradients differ from the input's.
        def make_bn(make=make):
            layer = make()
            if layer.affine:
                layer.params["weight"] = backend.asarray(np.array([0.5, -1.5, 2.0]))
                layer.params["bias"] = backend.asarray(np.array([0.1, 0.0, -0.3]))
            return layer

        check_layer_gradients(xp, make_bn, x, rng)
    else:
        check_layer_gradients(xp, make, x, rng)


def test_param_names_and_shapes_match_pytorch():
    conv = Conv2D(4, 6, (3, 2), groups=2)
    assert {k: v.shape for k, v in conv.params.items()} == {"weight": (6, 2, 3, 2), "bias": (6,)}
    assert list(Conv2D(4, 6, 3, bias=False).params) == ["weight"]
    dense = Dense(5, 3)
    assert {k: v.shape for k, v in dense.params.items()} == {"weight": (3, 5), "bias": (3,)}
    assert list(Dense(5, 3, bias=False).params) == ["weight"]
    bn = BatchNorm2D(4)
    assert {k: v.shape for k, v in bn.params.items()} == {"weight": (4,), "bias": (4,)}
    assert {k: v.shape for k, v in bn.buffers.items()} == {"running_mean": (4,), "running_var": (4,)}
    for layer in (MaxPool2D(2), AvgPool2D(2), ReLU(), LeakyReLU(), Sigmoid(), Tanh(), Flatten(), Dropout()):
        assert layer.params == {} and layer.grads == {}
    assert conv.params["weight"].dtype == np.float32


def test_backward_overwrites_grads(rng):
    layer = Dense(4, 3, seed=0, **F64)
    x, dy = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    layer.forward(x, training=True)
    layer.backward(dy)
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.forward(x, training=True)
    layer.backward(dy)
    for k in first:
        np.testing.assert_array_equal(layer.grads[k], first[k])
    np.testing.assert_allclose(layer.grads["weight"], dy.T @ x)


@pytest.mark.parametrize("make", [lambda: Conv2D(2, 2, 3), lambda: ReLU(), lambda: MaxPool2D(2), lambda: Flatten(),
                                  lambda: Dropout(0.5), lambda: BatchNorm2D(2), lambda: AvgPool2D(2)])
def test_inference_keeps_no_cache(make, rng):
    layer = make()
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    layer.forward(x, training=True)
    layer.forward(x)  # inference drops what training kept
    assert layer._cache is None
    with pytest.raises(RuntimeError, match="forward\\(x, training=True\\)"):
        layer.backward(np.ones((2, 2, 2, 2), np.float32))


def test_seeded_init_is_reproducible_and_seeds_differ():
    a, b, c = Conv2D(3, 8, 3, seed=5), Conv2D(3, 8, 3, seed=5), Conv2D(3, 8, 3, seed=6)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    assert not np.array_equal(a.params["weight"], c.params["weight"])
    # A shared generator gives different layers different weights, reproducibly.
    g1, g2 = np.random.default_rng(0), np.random.default_rng(0)
    d1, e1 = Dense(4, 4, seed=g1), Dense(4, 4, seed=g1)
    d2 = Dense(4, 4, seed=g2)
    assert not np.array_equal(d1.params["weight"], e1.params["weight"])
    np.testing.assert_array_equal(d1.params["weight"], d2.params["weight"])


@pytest.mark.parametrize("init", ["he", "glorot", "torch"])
def test_init_bounds_and_spread(init):
    # 64 x 32 x 3 x 3 weights: fan_in 288, fan_out 576.
    layer = Conv2D(32, 64, 3, init=init, seed=0)
    w, b = layer.params["weight"], layer.params["bias"]
    bound = {"he": math.sqrt(6 / 288), "glorot": math.sqrt(6 / (288 + 576)), "torch": 1 / math.sqrt(288)}[init]
    assert np.abs(w).max() <= bound
    # A uniform law on [-bound, bound] has standard deviation bound / sqrt(3).
    assert abs(w.std() - bound / math.sqrt(3)) < 0.03 * bound
    assert abs(w.mean()) < 0.02 * bound
    if init == "torch":
        assert 0 < np.abs(b).max() <= 1 / math.sqrt(288)
    else:
        assert not b.any()


@pytest.mark.parametrize("init", ["he", "glorot", "torch"])
def test_grouped_init_bounds_count_one_group(init):
    # 4 groups: each output sees 32 / 4 = 8 input channels, fan_in 8 * 3 * 3 = 72, fan_out 64 / 4 * 9 = 144.
    layer = Conv2D(32, 64, 3, groups=4, init=init, seed=0)
    w = layer.params["weight"]
    assert w.shape == (64, 8, 3, 3)
    bound = {"he": math.sqrt(6 / 72), "glorot": math.sqrt(6 / (72 + 144)), "torch": 1 / math.sqrt(72)}[init]
    assert np.abs(w).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.03 * bound
    if init == "torch":
        b = layer.params["bias"]
        assert 0.75 / math.sqrt(72) < np.abs(b).max() <= 1 / math.sqrt(72)


def test_init_on_default_backend(xp):
    with backend.use(_name(xp)):
        layer = Conv2D(2, 3, 3, seed=0)
        bn = BatchNorm2D(3)
    assert backend.get_array_module(layer.params["weight"]) is xp
    assert backend.get_array_module(bn.buffers["running_var"]) is xp


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: Conv2D(3, 4, 0), ValueError, "kernel_size"),
        (lambda: Conv2D(3, 4, 3, groups=2), ValueError, "groups=2"),
        (lambda: Conv2D(3, 4, 3, stride=0), ValueError, "stride"),
        (lambda: Conv2D(3, 4, 3, init="xavier"), ValueError, "init"),
        (lambda: Conv2D(3, 4, 3, dtype="float16"), TypeError, "float16"),
        (lambda: Conv2D(3.0, 4, 3), TypeError, "in_channels"),
        (lambda: Dense(0, 3), ValueError, "in_features"),
        (lambda: Dense(3, 3, seed="x"), TypeError, "seed"),
        (lambda: MaxPool2D(2, padding=2), ValueError, "padding"),
        (lambda: Dropout(1.5), ValueError, "1.5"),
        (lambda: LeakyReLU("a"), TypeError, "negative_slope"),
        (lambda: BatchNorm2D(3, momentum=2), ValueError, "momentum"),
    ],
)
def test_bad_constructor_arguments(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_output_shape_checks_name_expected_and_actual():
    assert Conv2D(3, 8, 3, padding=1).output_shape((3, 10, 12)) == (8, 10, 12)
    assert Conv2D(3, 8, 3, stride=2).output_shape((3, 9, 9)) == (8, 4, 4)
    assert MaxPool2D(2).output_shape((8, 5, 7)) == (8, 2, 3)
    assert Flatten().output_shape((8, 2, 3)) == (48,)
    assert Dense(48, 10).output_shape((48,)) == (10,)
    with pytest.raises(ValueError, match=r"3 input channels, got 1"):
        Conv2D(3, 8, 3).output_shape((1, 8, 8))
    with pytest.raises(ValueError, match=r"\(48,\), got shape \(8, 2, 3\).*Flatten"):
        Dense(48, 10).output_shape((8, 2, 3))
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2D(1, 1, 5).output_shape((1, 3, 3))


def test_dropout_statistics_and_inference_identity(xp):
    x = xp.ones((200, 50), dtype=xp.float32)
    layer = Dropout(0.3, seed=1)
    assert layer.forward(x) is x  # inference: identity, no copy
    y = to_host(layer.forward(x, training=True))
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    dx = to_host(layer.backward(xp.ones_like(x)))
    np.testing.assert_array_equal(dx, y)  # same mask, same scale
    # Two training passes draw different masks; the same seed repeats them.
    y2 = to_host(layer.forward(x, training=True))
    assert not np.array_equal(y, y2)
    np.testing.assert_array_equal(to_host(Dropout(0.3, seed=1).forward(x, training=True)), y)
    assert not to_host(Dropout(1.0).forward(x, training=True)).any()
    np.testing.assert_array_equal(to_host(Dropout(0.0).forward(x, training=True)), to_host(x))


def test_batchnorm_running_stats_and_eval_by_hand(rng):
    x = rng.standard_normal((4, 2, 3, 3)) * 3 + 1
    bn = BatchNorm2D(2, momentum=0.1, **F64)
    y = bn.forward(x, training=True)
    n = 4 * 3 * 3
    mean = x.mean(axis=(0, 2, 3))
    var_biased = ((x - mean[None, :, None, None]) ** 2).sum(axis=(0, 2, 3)) / n
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.1 * mean)
    np.testing.assert_allclose(bn.buffers["running_var"], 0.9 + 0.1 * var_biased * n / (n - 1))
    np.testing.assert_allclose(y, (x - mean[None, :, None, None]) / np.sqrt(var_biased[None, :, None, None] + 1e-5))
    rm, rv = bn.buffers["running_mean"].copy(), bn.buffers["running_var"].copy()
    y_eval = bn.forward(x)
    np.testing.assert_allclose(y_eval, (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5))
    np.testing.assert_array_equal(bn.buffers["running_mean"], rm)  # eval does not update
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.forward(x[:1, :, :1, :1], training=True)
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        bn.forward(x[:, :1])


def test_batchnorm_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((6, 3, 4, 5)) * 2 - 0.5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gamma = np.array([1.5, -0.5, 0.8], np.float32)
    beta = np.array([0.2, 0.0, -1.0], np.float32)
    ref = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(gamma))
        ref.bias.copy_(torch.from_numpy(beta))
    ours = BatchNorm2D(3)
    ours.params["weight"], ours.params["bias"] = gamma.copy(), beta.copy()
    for step in range(3):  # several steps: the running statistics accumulate
        xs = x * (step + 1)
        xt = torch.from_numpy(xs).requires_grad_(True)
        yt = ref.train()(xt)
        yt.backward(torch.from_numpy(dy))
        y = ours.forward(xs, training=True)
        dx = ours.backward(dy)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.grads["weight"], ref.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ours.grads["bias"], ref.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
        ref.zero_grad()
    np.testing.assert_allclose(ours.buffers["running_mean"], ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.buffers["running_var"], ref.running_var.numpy(), rtol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(ours.forward(x), ref.eval()(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_conv_and_dense_layers_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    conv = Conv2D(4, 6, 3, stride=2, padding=1, groups=2, init="torch", seed=0)
    dense = Dense(6 * 3 * 3, 5, init="torch", seed=1)
    tconv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    tdense = torch.nn.Linear(54, 5)
    with torch.no_grad():
        for ours, theirs in ((conv, tconv), (dense, tdense)):
            theirs.weight.copy_(torch.from_numpy(ours.params["weight"]))
            theirs.bias.copy_(torch.from_numpy(ours.params["bias"]))
    x = rng.standard_normal((3, 4, 6, 5)).astype(np.float32)
    dy = rng.standard_normal((3, 5)).astype(np.float32)
    flat = Flatten()
    y = dense.forward(flat.forward(conv.forward(x, True), True), True)
    dx = conv.backward(flat.backward(dense.backward(dy)))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = tdense(tconv(xt).flatten(1))
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    for ours, theirs in ((conv, tconv), (dense, tdense)):
        np.testing.assert_allclose(ours.grads["weight"], theirs.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.grads["bias"], theirs.bias.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_registry_and_config_round_trip():
    layers = [Conv2D(2, 4, 3, stride=2, padding=1, dilation=1, groups=2, bias=False, init="glorot", dtype="float64",
                     algo="gemm"),
              Dense(3, 2, bias=False, init="torch"), MaxPool2D(3, 2, 1), AvgPool2D(2), ReLU(), LeakyReLU(0.3),
              Sigmoid(), Tanh(), Flatten(), Dropout(0.25), BatchNorm2D(5, eps=1e-3, momentum=0.2, affine=False)]
    assert {type(layer).__name__ for layer in layers} == set(REGISTRY)
    for layer in layers:
        clone = REGISTRY[type(layer).__name__](**layer.get_config())
        assert clone.get_config() == layer.get_config()
        assert {k: v.shape for k, v in clone.params.items()} == {k: v.shape for k, v in layer.params.items()}
