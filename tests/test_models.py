"""The model zoo (:mod:`xpcnn.models`): each network against the same layers
built in PyTorch with the same weights, and what seeding promises."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import backend, models
from xpcnn.layers import Conv2D, Dense
from xpcnn.optim import Adam


def _torch_twin(model):
    """The same network in PyTorch, layer by layer, with `model`'s weights copied in."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    layers = []
    for layer in model.layers:
        name = type(layer).__name__
        if isinstance(layer, Conv2D):
            c = layer.get_config()
            t = nn.Conv2d(c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"], c["padding"])
        elif isinstance(layer, Dense):
            c = layer.get_config()
            t = nn.Linear(c["in_features"], c["out_features"])
        else:
            t = {"ReLU": nn.ReLU(), "Flatten": nn.Flatten()}.get(name) or nn.MaxPool2d(layer.get_config()["kernel_size"])
        for key, value in getattr(layer, "params", {}).items():
            getattr(t, key).data = torch.tensor(backend.to_numpy(value))
        layers.append(t)
    return torch, nn.Sequential(*layers)


@pytest.mark.parametrize("build, shape", [(models.digits_cnn, (1, 8, 8)), (models.lenet5, (1, 28, 28)),
                                          (models.mnist_default, (1, 28, 28))])
def test_network_matches_torch(build, shape):
    model = build(seed=0)
    assert model.input_shape == shape
    torch, twin = _torch_twin(model)
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
    expected = twin(torch.tensor(x)).detach().numpy()
    got = backend.to_numpy(model.predict(backend.module().asarray(x)))
    assert got.shape == (3, 10) == (3, *model.output_shape())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert model.num_params() == sum(p.numel() for p in twin.parameters())


def test_lenet5_other_sizes_and_bad_size():
    model = models.lenet5(seed=0, input_size=32, classes=3)
    assert model.input_shape == (1, 32, 32) and model.output_shape() == (3,)
    assert model.layers[7].get_config()["in_features"] == 16 * 6 * 6  # (32 // 2 - 4) // 2 = 6
    with pytest.raises(ValueError, match="input_size >= 12, got 8"):
        models.lenet5(input_size=8)


@pytest.mark.parametrize("build", [models.digits_cnn, models.lenet5])
def test_seed_fixes_every_weight(build):
    def weights(seed):
        return [backend.to_numpy(v) for layer in build(seed=seed).layers for v in getattr(layer, "params", {}).values()]

    same, other = weights(3), weights(4)
    for a, b in zip(weights(3), same):
        np.testing.assert_array_equal(a, b)
    assert not any(np.array_equal(a, b) for a, b in zip(same, other) if a.std() > 0)


def test_recipes_name_a_network_and_settings():
    assert set(models.RECIPES) == {"digits", "mnist"}
    assert models.RECIPES["mnist"]["model"] is models.mnist_default
    for recipe in models.RECIPES.values():
        assert recipe["epochs"] >= 1 and recipe["batch_size"] >= 1 and set(recipe["lr"]) == {"adam", "sgd"}


def test_lenet5_training_steps_match_torch():
    """Three Adam steps of fit on LeNet-5 end with PyTorch's weights, to float32 rounding."""
    model = models.lenet5(seed=0)
    torch, twin = _torch_twin(model)
    rng = np.random.default_rng(2)
    x = rng.random((24, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 24)
    model.fit(x, y, epochs=1, batch_size=8, optimizer=Adam(1e-3), shuffle=False, progress=False)
    opt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    for i in range(0, 24, 8):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.tensor(x[i:i + 8])), torch.tensor(y[i:i + 8])).backward()
        opt.step()
    theirs = [p.detach().numpy() for p in twin.parameters()]
    ours = [backend.to_numpy(layer.params[name]) for layer, name in model.parameters()]
    for a, b in zip(ours, theirs):
        # Adam moves each weight by about lr per step whatever the gradient's size: compare on that scale.
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-6)
