"""Optimizers with PyTorch's update rules: :class:`SGD` and :class:`Adam`;
a learning-rate schedule, :class:`StepLR`.

``opt.step(model)`` reads every parameter's gradient (what
``model.backward`` left in ``layer.grads``) and updates ``layer.params`` in
place. The state (momentum buffers, Adam's moments and step count) is kept
per parameter inside the optimizer, so one optimizer belongs to one model.
Weight decay is PyTorch's L2 form: ``weight_decay * param`` is added to the
gradient before the update (not AdamW's decoupled decay).

If the model moves to another backend (``model.to("cupy")``) after some
steps, the state follows it at the next step.
"""

from __future__ import annotations

import math
from typing import Any

from . import backend
from .backend import Array, get_array_module
from .functional._utils import int_arg, real_arg

__all__ = ["Adam", "Optimizer", "SGD", "StepLR"]


def _parameters(model: Any) -> list:
    if hasattr(model, "parameters"):
        return list(model.parameters())
    if isinstance(model, (list, tuple)):
        return [pair for layer in model for pair in layer.parameters()]
    raise TypeError(f"step expects a Sequential, a layer or a list of layers, got {type(model).__name__}")


def _same_backend(state: Array, p: Array) -> Array:
    if type(state) is type(p):
        return state
    xp = get_array_module(p)
    if get_array_module(state) is xp:
        return state
    return backend.asarray(state, backend.name_of(xp))


class Optimizer:
    """Base class: finds each parameter's gradient and state, then calls :meth:`_update`."""

    def __init__(self, lr: float, weight_decay: float) -> None:
        self.lr = real_arg(lr, "lr", 0.0)
        self.weight_decay = real_arg(weight_decay, "weight_decay", 0.0)
        self.state: dict[tuple[int, str], dict] = {}
        self._flat: dict = {}  # (backend, dtype) -> _Flat

    def step(self, model: Any) -> None:
        """Update every parameter of `model` in place from its gradient.

        Parameters
        ----------
        model : Sequential, Layer or list of layers

        Raises
        ------
        RuntimeError
            If a parameter has no gradient (``backward`` was not called).
        ValueError
            If a gradient's shape differs from its parameter's.

        Notes
        -----
        Parameters of one backend and dtype are updated together, as one
        flat array (PyTorch's "foreach" idea): a dozen operations per step
        instead of a dozen per parameter, which for LeNet-5's ten small
        parameters cost more than the arithmetic. Each parameter's state is
        a view of the flat state, and every element goes through the same
        operations as it would alone: the results are the same bits.
        """
        groups: dict = {}
        for layer, name in _parameters(model):
            p = layer.params[name]
            g = layer.grads.get(name)
            if g is None:
                raise RuntimeError(
                    f"{layer!r} has no gradient for {name!r}: call model.backward(...) before optimizer.step"
                )
            if g.shape != p.shape:
                raise ValueError(f"{layer!r}: gradient of {name!r} has shape {tuple(g.shape)}, parameter {tuple(p.shape)}")
            # The layer object is stored with its state so that its id stays unique.
            state = self.state.setdefault((id(layer), name), {"layer": layer})
            for key, value in state.items():
                if key != "layer" and hasattr(value, "shape"):
                    state[key] = _same_backend(value, p)
            groups.setdefault((backend.name_of(get_array_module(p)), p.dtype), []).append((p, g, state))
        for key, group in groups.items():
            if len(group) > 1 and self._step_flat(key, group):
                continue
            for p, g, state in group:
                if self.weight_decay:
                    g = g + p * p.dtype.type(self.weight_decay)
                self._update(p, g, state)

    def _step_flat(self, key: tuple, group: list) -> bool:
        """Update a group of parameters as one flat array; False if their states differ (then one by one)."""
        flat = self._flat.get(key)
        if flat is None or not flat.holds(group):
            flat = _Flat.build(group)
            if flat is None:
                return False
            self._flat[key] = flat
        xp = get_array_module(flat.p)
        xp.concatenate([p.reshape(-1) for p, _, _ in group], out=flat.p)
        xp.concatenate([g.reshape(-1) for _, g, _ in group], out=flat.g)
        g = flat.g
        if self.weight_decay:
            g = g + flat.p * flat.p.dtype.type(self.weight_decay)
        self._update(flat.p, g, flat.state)
        flat.scatter(group)
        return True

    def __getstate__(self) -> dict:
        saved = self.__dict__.copy()
        saved.pop("_flat", None)  # the state holds views of it: rebuilt from them at the next step
        return saved

    def __setstate__(self, saved: dict) -> None:
        # A copy or an unpickled optimizer holds copies of the layers: key their
        # state by the copies' ids, so a model and its optimizer copied together
        # (pickle, copy.deepcopy) keep training where they stopped.
        self.__dict__.update(saved)
        self.state = {(id(s["layer"]), name): s for (_, name), s in saved["state"].items()}
        self._flat = {}

    def _update(self, p: Array, g: Array, state: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state (momentum buffers, moments, step counts)."""
        self.state.clear()
        self._flat.clear()


class _Flat:
    """A group of parameters' values, gradients and optimizer state, each as one flat array.

    Each parameter's state dict holds views of the flat state; the
    parameters stay the layers' own arrays, copied in and out at each step.
    """

    def __init__(self, group: list, state: dict) -> None:
        p0 = group[0][0]
        self.owners = [s for _, _, s in group]
        self.shapes = [p.shape for p, _, _ in group]
        self.sizes = [p.size for p, _, _ in group]
        self.p = get_array_module(p0).empty(sum(self.sizes), dtype=p0.dtype)
        self.g = get_array_module(p0).empty_like(self.p)
        self.state = state
        self.views: list[dict] = [{} for _ in group]

    @classmethod
    def build(cls, group: list) -> "_Flat | None":
        """Gather the group's states into flat arrays; None unless they have the same keys and step counts."""
        states = [{k: v for k, v in s.items() if k != "layer"} for _, _, s in group]
        if any(set(s) != set(states[0]) for s in states):
            return None
        state = {}
        for k in states[0]:
            values = [s[k] for s in states]
            if all(hasattr(v, "shape") for v in values):
                state[k] = get_array_module(values[0]).concatenate([v.reshape(-1) for v in values])
            elif all(v == values[0] for v in values):
                state[k] = values[0]
            else:
                return None
        flat = cls(group, state)
        flat._bind()
        return flat

    def holds(self, group: list) -> bool:
        """Whether `group` is the parameters this was built for, their states still its views."""
        if len(group) != len(self.owners):
            return False
        for (p, _, s), owner, shape, views in zip(group, self.owners, self.shapes, self.views):
            if s is not owner or p.shape != shape:
                return False
            for k, v in views.items():
                if s.get(k) is not v:
                    return False
        return True

    def _bind(self) -> None:
        """Point each parameter's state at its part of the flat state (new keys appear at the first step)."""
        start = 0
        for owner, size, shape, views in zip(self.owners, self.sizes, self.shapes, self.views):
            for k, v in self.state.items():
                if hasattr(v, "shape"):
                    views[k] = owner[k] = v[start : start + size].reshape(shape)
                else:
                    owner[k] = v
            start += size

    def scatter(self, group: list) -> None:
        """Copy the updated flat values into the layers' arrays and the step counts into their states."""
        start = 0
        for (p, _, _), size in zip(group, self.sizes):
            p[...] = self.p[start : start + size].reshape(p.shape)
            start += size
        if len(self.views[0]) != sum(hasattr(v, "shape") for v in self.state.values()):
            self._bind()  # the first step made the state's arrays
            return
        counts = [(k, v) for k, v in self.state.items() if not hasattr(v, "shape")]
        for owner in self.owners:
            owner.update(counts)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    With ``g = grad + weight_decay * p``::

        buf = g                                        (first step)
        buf = momentum * buf + (1 - dampening) * g     (later steps)
        g = g + momentum * buf  if nesterov  else  buf (when momentum != 0)
        p = p - lr * g

    Parameters
    ----------
    lr : float
        Learning rate, >= 0.
    momentum : float, default 0
    dampening : float, default 0
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``, as in PyTorch.
    weight_decay : float, default 0
        L2 penalty added to the gradient.

    Raises
    ------
    TypeError, ValueError
        For a non-number or negative hyperparameter, or Nesterov without
        momentum or with dampening.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import SGD, Dense
    >>> layer = Dense(2, 1, bias=False, dtype="float64")
    >>> layer.params["weight"] = np.array([[1.0, 2.0]])
    >>> layer.grads["weight"] = np.array([[0.5, -1.0]])  # as backward leaves it
    >>> opt = SGD(lr=0.1, momentum=0.9)
    >>> opt.step([layer])
    >>> layer.params["weight"]  # p - lr * g
    array([[0.95, 2.1 ]])
    >>> opt.step([layer])  # the momentum buffer is now 0.9 * g + g
    >>> layer.params["weight"]
    array([[0.855, 2.29 ]])
    """

    def __init__(self, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = real_arg(momentum, "momentum", 0.0)
        self.dampening = real_arg(dampening, "dampening", 0.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                f"nesterov momentum requires momentum > 0 and dampening = 0, got momentum={self.momentum}, "
                f"dampening={self.dampening}"
            )

    def _update(self, p, g, state):
        t = p.dtype.type
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= t(self.momentum)
                buf += g * t(1.0 - self.dampening)
            g = g + buf * t(self.momentum) if self.nesterov else buf
        p -= g * t(self.lr)

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, dampening={self.dampening}, "
                f"nesterov={self.nesterov}, weight_decay={self.weight_decay})")


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (``amsgrad=False``).

    With ``g = grad + weight_decay * p`` and step count ``t``::

        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in ``[0, 1)``.
    eps : float, default 1e-8
    weight_decay : float, default 0
        L2 penalty added to the gradient.

    Examples
    --------
    Adam's first step moves every weight by about `lr`, whatever the size of
    its gradient:

    >>> import numpy as np
    >>> from xpcnn import Adam, Dense
    >>> layer = Dense(2, 1, bias=False, dtype="float64")
    >>> layer.params["weight"] = np.array([[1.0, 2.0]])
    >>> layer.grads["weight"] = np.array([[0.5, -300.0]])
    >>> Adam(lr=0.01).step([layer])
    >>> layer.params["weight"].round(6)
    array([[0.99, 2.01]])
    """

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair of numbers, got {betas!r}") from None
        self.betas = (real_arg(b1, "betas[0]", 0.0, 1.0, True), real_arg(b2, "betas[1]", 0.0, 1.0, True))
        self.eps = real_arg(eps, "eps", 0.0)

    def _update(self, p, g, state):
        xp = get_array_module(p)
        t = p.dtype.type
        beta1, beta2 = self.betas
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
            state["scratch"] = xp.empty_like(p)  # every temporary below, in turn: no allocation per step
        state["step"] += 1
        m, v, step, tmp = state["exp_avg"], state["exp_avg_sq"], state["step"], state["scratch"]
        xp.subtract(g, m, out=tmp)
        tmp *= t(1.0 - beta1)
        m += tmp
        v *= t(beta2)
        xp.multiply(g, g, out=tmp)
        tmp *= t(1.0 - beta2)
        v += tmp
        step_size = self.lr / (1.0 - beta1**step)
        denom = xp.sqrt(v, out=tmp)
        denom /= t(math.sqrt(1.0 - beta2**step))
        denom += t(self.eps)
        xp.divide(m, denom, out=tmp)
        tmp *= t(step_size)
        p -= tmp

    def __repr__(self):
        return f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay})"


class StepLR:
    """Multiply an optimizer's learning rate by `gamma` every `step_size` epochs.

    As ``torch.optim.lr_scheduler.StepLR``: after ``e`` calls of
    :meth:`step` (one per epoch; ``fit(..., scheduler=...)`` makes them), the
    rate is ``base_lr * gamma ** (e // step_size)``, where ``base_lr`` is the
    optimizer's rate when the schedule was made.

    Parameters
    ----------
    optimizer : Optimizer
        Its ``lr`` is set by each :meth:`step`.
    step_size : int
        Epochs between two decays, >= 1.
    gamma : float, default 0.1
        Factor of each decay, >= 0.

    Raises
    ------
    TypeError, ValueError
        If `optimizer` is not an :class:`Optimizer`, `step_size` is not an
        int >= 1 or `gamma` is not a number >= 0.

    Examples
    --------
    >>> from xpcnn.optim import Adam, StepLR
    >>> opt = Adam(2e-3)
    >>> schedule = StepLR(opt, step_size=2)
    >>> rates = []
    >>> for epoch in range(5):
    ...     rates.append(opt.lr)  # ... train one epoch ...
    ...     schedule.step()
    >>> [float(f"{r:.0e}") for r in rates]
    [0.002, 0.002, 0.0002, 0.0002, 2e-05]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an xpcnn.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer, self.step_size = optimizer, int_arg(step_size, "step_size", 1)
        self.gamma = real_arg(gamma, "gamma", 0.0)
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def step(self) -> None:
        """End of an epoch: set the optimizer's rate for the next one."""
        self.last_epoch += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.last_epoch // self.step_size)

    def __repr__(self):
        return f"StepLR(step_size={self.step_size}, gamma={self.gamma})"
