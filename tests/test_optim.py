"""Optimizers: single steps against hand-computed values, several steps against
PyTorch's torch.optim (where installed), and argument checking."""

from __future__ import annotations

import pickle
from copy import deepcopy

import numpy as np
import pytest
from conftest import to_host, to_xp

from xpcnn import backend
from xpcnn.layers import Dense
from xpcnn.model import Sequential
from xpcnn.optim import SGD, Adam, StepLR


def scalar_layer(value=1.0):
    """A layer holding one float64 weight, the easiest thing to step by hand."""
    layer = Dense(1, 1, bias=False, dtype="float64")
    layer.params["weight"] = np.array([[value]])
    return layer


def steps(opt, grads, value=1.0):
    layer = scalar_layer(value)
    out = []
    for g in grads:
        layer.grads["weight"] = np.array([[g]])
        opt.step(layer)
        out.append(float(layer.params["weight"][0, 0]))
    return out


# Worked by hand with p0 = 1, gradient 0.5 at both steps, lr = 0.1.
def test_sgd_plain_by_hand():
    assert steps(SGD(0.1), [0.5, 0.5]) == pytest.approx([0.95, 0.90])


def test_sgd_momentum_weight_decay_by_hand():
    # g1 = 0.5 + 0.1*1 = 0.6, buf = 0.6, p1 = 1 - 0.06 = 0.94
    # g2 = 0.5 + 0.1*0.94 = 0.594, buf = 0.9*0.6 + 0.594 = 1.134, p2 = 0.94 - 0.1134 = 0.8266
    assert steps(SGD(0.1, momentum=0.9, weight_decay=0.1), [0.5, 0.5]) == pytest.approx([0.94, 0.8266], abs=1e-12)


def test_sgd_nesterov_by_hand():
    # step 1: g = 0.6, buf = 0.6, d = 0.6 + 0.9*0.6 = 1.14, p1 = 1 - 0.114 = 0.886
    # step 2: g = 0.5 + 0.0886 = 0.5886, buf = 0.54 + 0.5886 = 1.1286,
    #         d = 0.5886 + 0.9*1.1286 = 1.60434, p2 = 0.886 - 0.160434 = 0.725566
    got = steps(SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1), [0.5, 0.5])
    assert got == pytest.approx([0.886, 0.725566], abs=1e-12)


def test_sgd_dampening_by_hand():
    # first step: buf = g (no dampening, as PyTorch); then buf = 0.9*0.5 + 0.5*0.5 = 0.7
    assert steps(SGD(0.1, momentum=0.9, dampening=0.5), [0.5, 0.5]) == pytest.approx([0.95, 0.88], abs=1e-12)


def test_adam_two_steps_by_hand():
    # Step 1: m = 0.05, v = 0.00025, m_hat = 0.5, v_hat = 0.25: p1 = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
    # Step 2 (same gradient): m = 0.095, v = 0.00049975, m_hat = 0.5, v_hat = 0.25: p2 = p1 - the same
    step = 0.1 * 0.5 / (0.5 + 1e-8)
    assert steps(Adam(0.1), [0.5, 0.5]) == pytest.approx([1 - step, 1 - 2 * step], abs=1e-12)
    # Step 2 with another gradient (-0.25): m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625
    m_hat = 0.02 / (1 - 0.9**2)
    v_hat = (0.999 * 0.00025 + 0.001 * 0.0625) / (1 - 0.999**2)
    p2 = 1 - step - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)
    assert steps(Adam(0.1), [0.5, -0.25]) == pytest.approx([1 - step, p2], abs=1e-12)


def test_adam_weight_decay_by_hand():
    # L2 form: g = 0.5 + 0.2*1 = 0.7 enters both moments, so m_hat = 0.7 and v_hat = 0.49.
    assert steps(Adam(0.1, weight_decay=0.2), [0.5]) == pytest.approx([1 - 0.1 * 0.7 / (0.7 + 1e-8)], abs=1e-12)
    # AdamW's decoupled decay would give 1 - 0.1*0.2 - 0.1 = 0.88 instead.


def _torch_run(torch, make_torch_opt, make_ours, rng, n_steps=3):
    """Run the same gradients through both optimizers on a small model; return both final weights."""
    model = Sequential(Dense(4, 3, seed=0, dtype="float64"), Dense(3, 2, seed=1, dtype="float64"))
    tparams = [torch.tensor(to_host(layer.params[name]).copy(), requires_grad=True) for layer, name in model.parameters()]
    topt = make_torch_opt(tparams)
    ours = make_ours()
    for _ in range(n_steps):
        for (layer, name), tp in zip(model.parameters(), tparams):
            g = rng.standard_normal(tp.shape)
            layer.grads[name] = g
            tp.grad = torch.tensor(g)
        ours.step(model)
        topt.step()
    return [to_host(layer.params[name]) for layer, name in model.parameters()], [tp.detach().numpy() for tp in tparams]


SGD_CASES = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-3},
]


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=["plain", "momentum", "nesterov-wd", "dampening-wd"])
def test_sgd_matches_torch(rng, kwargs):
    torch = pytest.importorskip("torch")
    ours, theirs = _torch_run(torch, lambda p: torch.optim.SGD(p, **kwargs), lambda: SGD(**kwargs), rng)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs", [{"lr": 1e-2}, {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}],
                         ids=["default", "custom-wd"])
def test_adam_matches_torch(rng, kwargs):
    torch = pytest.importorskip("torch")
    ours, theirs = _torch_run(torch, lambda p: torch.optim.Adam(p, foreach=False, **kwargs), lambda: Adam(**kwargs), rng)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_step_is_in_place_and_per_backend(xp, rng):
    name = "cupy" if backend.is_device(xp) else "numpy"
    with backend.use(name):
        layer = Dense(3, 2, seed=0)
    w = layer.params["weight"]
    start = to_host(w).copy()
    g = rng.standard_normal(w.shape).astype(np.float32)
    layer.grads = {"weight": to_xp(xp, g), "bias": xp.zeros(2, dtype=xp.float32)}
    opt = Adam(0.01)
    opt.step(layer)
    assert layer.params["weight"] is w  # updated in place
    assert backend.get_array_module(opt.state[(id(layer), "weight")]["exp_avg"]) is xp
    np.testing.assert_allclose(to_host(w), start - 0.01 * np.sign(g), rtol=1e-5, atol=1e-6)


def test_state_follows_model_to_another_backend(rng):
    model = Sequential(Dense(3, 2, seed=0, dtype="float64"))
    opt = SGD(0.1, momentum=0.9)
    model[0].grads = {"weight": np.ones((2, 3)), "bias": np.ones(2)}
    opt.step(model)
    model.to("numpy")  # same backend: state is reused as is
    model[0].grads = {"weight": np.ones((2, 3)), "bias": np.ones(2)}
    opt.step(model)
    np.testing.assert_allclose(opt.state[(id(model[0]), "bias")]["momentum_buffer"], 1.9)


@pytest.mark.parametrize("copy", [lambda x: pickle.loads(pickle.dumps(x)), deepcopy])
def test_model_and_optimizer_copied_together_keep_training(copy):
    model = Sequential(Dense(3, 2, seed=0, dtype="float64"))
    opt = Adam(0.1)
    grads = [{"weight": np.full((2, 3), v), "bias": np.full(2, v)} for v in (1.0, -2.0, 0.5)]
    model[0].grads = grads[0]
    opt.step(model)
    model2, opt2 = copy((model, opt))
    for m, o in ((model, opt), (model2, opt2)):
        for g in grads[1:]:
            m[0].grads = dict(g)
            o.step(m)
    # the copy's Adam kept its moments and step count: the same weights as the original
    np.testing.assert_array_equal(model2[0].params["weight"], model[0].params["weight"])
    assert opt2.state[(id(model2[0]), "weight")]["step"] == 3


def test_step_without_gradient_raises():
    layer = Dense(2, 2)
    with pytest.raises(RuntimeError, match="no gradient for 'weight'.*backward"):
        SGD(0.1).step(layer)
    layer.grads = {"weight": np.zeros((3, 2), np.float32), "bias": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match=r"shape \(3, 2\), parameter \(2, 2\)"):
        SGD(0.1).step(layer)
    with pytest.raises(TypeError, match="Sequential, a layer or a list"):
        SGD(0.1).step(42)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: SGD(-0.1), ValueError, "lr"),
        (lambda: SGD("0.1"), TypeError, "lr"),
        (lambda: SGD(0.1, momentum=-1), ValueError, "momentum"),
        (lambda: SGD(0.1, nesterov=True), ValueError, "nesterov"),
        (lambda: SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "dampening"),
        (lambda: SGD(0.1, weight_decay=float("nan")), ValueError, "weight_decay"),
        (lambda: Adam(betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
        (lambda: Adam(betas=0.9), TypeError, "betas"),
        (lambda: Adam(eps=-1), ValueError, "eps"),
    ],
)
def test_bad_hyperparameters(call, err, match):
    with pytest.raises(err, match=match):
        call()


@pytest.mark.parametrize("step_size, gamma", [(1, 0.5), (3, 0.1), (2, 1.0)])
def test_step_lr_matches_torch(step_size, gamma):
    torch = pytest.importorskip("torch")
    opt = SGD(0.3)
    schedule = StepLR(opt, step_size, gamma)
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    t_schedule = torch.optim.lr_scheduler.StepLR(t_opt, step_size, gamma)
    for _ in range(8):
        assert opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-12)
        schedule.step()
        t_opt.step()
        t_schedule.step()


def test_fit_steps_the_schedule_after_each_epoch(rng):
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)

    def model():
        return Sequential(Dense(5, 3, seed=0))

    scheduled, opt = model(), Adam(0.1)
    scheduled.fit(x, y, epochs=3, batch_size=8, optimizer=opt, scheduler=StepLR(opt, 1, 0.5),
                  seed=np.random.default_rng(7), progress=False)
    assert opt.lr == pytest.approx(0.1 * 0.5**3)
    by_hand, opt2, order = model(), Adam(0.1), np.random.default_rng(7)
    for epoch in range(3):  # the same shuffles: one generator carried through
        opt2.lr = 0.1 * 0.5**epoch
        by_hand.fit(x, y, epochs=1, batch_size=8, optimizer=opt2, seed=order, progress=False)
    np.testing.assert_array_equal(scheduled[0].params["weight"], by_hand[0].params["weight"])


def test_step_lr_errors():
    opt = Adam()
    with pytest.raises(TypeError, match="optimizer must be an xpcnn.optim.Optimizer, got str"):
        StepLR("adam", 2)
    with pytest.raises(ValueError, match="step_size must be >= 1, got 0"):
        StepLR(opt, 0)
    with pytest.raises(TypeError, match="step_size must be an int, got float 2.5"):
        StepLR(opt, 2.5)
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0.0, got -1.0"):
        StepLR(opt, 1, gamma=-1)
    with pytest.raises(ValueError, match="must schedule the optimizer given to fit"):
        Sequential(Dense(2, 2)).fit(np.zeros((4, 2), np.float32), np.zeros(4, int), optimizer=Adam(),
                                    scheduler=StepLR(opt, 1), progress=False)


# ------------------------------------------------------- parameters updated together

OPTIMIZERS = [
    lambda: SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda: SGD(0.05),
    lambda: Adam(0.01, weight_decay=0.02),
]


def _two_layer_model(seed=0):
    return Sequential(Dense(5, 4, seed=seed), Dense(4, 3, seed=seed + 1))


def _random_grads(model, rng):
    for layer in model:
        layer.grads = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in layer.params.items()}


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_parameters_updated_together_match_one_at_a_time_bit_for_bit(make):
    # The grouped step works on one flat array; the reference steps each parameter
    # alone: its own optimizer and a stand-in layer holding only it (a group of one).
    together, alone = _two_layer_model(), _two_layer_model()
    opt = make()
    singles = {(i, name): (Dense(1, 1, bias=False), make()) for i, layer in enumerate(alone) for name in layer.params}
    rng = np.random.default_rng(0)
    for _ in range(3):
        _random_grads(together, rng)
        opt.step(together)
        for (i, name), (single, single_opt) in singles.items():
            single.params = {"weight": alone[i].params[name]}
            single.grads = {"weight": together[i].grads[name]}
            single_opt.step(single)
    for a, b in zip(together, alone):
        for name in a.params:
            np.testing.assert_array_equal(a.params[name], b.params[name])


def test_state_of_parameters_updated_together_reads_per_parameter():
    model = _two_layer_model()
    opt = Adam(0.01)
    rng = np.random.default_rng(1)
    for _ in range(2):
        _random_grads(model, rng)
        opt.step(model)
    state = opt.state[(id(model[1]), "bias")]
    assert state["step"] == 2 and state["exp_avg"].shape == (3,)
    # after two steps m = 0.19 g1 + 0.1 g2 is not 0 where the gradients were not
    assert np.all(state["exp_avg"] != 0)
    state["exp_avg"] = np.zeros(3, np.float32)  # replaced by hand: the next step must use it
    _random_grads(model, rng)
    g = model[1].grads["bias"].copy()
    opt.step(model)
    np.testing.assert_allclose(opt.state[(id(model[1]), "bias")]["exp_avg"], 0.1 * g, rtol=1e-6)


def test_a_layer_added_after_some_steps_trains_with_the_others():
    first = Dense(3, 2, seed=0)
    opt = Adam(0.1)
    rng = np.random.default_rng(2)
    first.grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in first.params.items()}
    opt.step([first])
    second = Dense(2, 2, seed=1)
    before = second.params["weight"].copy()
    for layer in (first, second):
        layer.grads = {k: np.ones_like(v) for k, v in layer.params.items()}
    opt.step([first, second])  # step counts 2 and 1: updated one at a time
    assert opt.state[(id(first), "weight")]["step"] == 2 and opt.state[(id(second), "weight")]["step"] == 1
    np.testing.assert_allclose(second.params["weight"], before - 0.1, rtol=1e-5)  # Adam's first step: lr * sign
