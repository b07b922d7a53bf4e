"""Stateful layers: parameters, gradients, ``forward`` and ``backward``.

Every layer follows one protocol:

- ``forward(x, training=False) -> y``. With ``training=True`` the layer keeps
  what its backward needs (its input, a dropout mask...); with
  ``training=False`` (inference) it keeps nothing, so ``predict`` holds no
  activations.
- ``backward(dy) -> dx``, after a ``forward(..., training=True)``. It
  *overwrites* ``grads`` (it never adds to them) and returns the gradient
  with respect to the layer's input.
- ``params`` and ``grads``: dicts with PyTorch's names and shapes
  (``"weight"``, ``"bias"``; no ``"bias"`` key when ``bias=False``), so
  weights move between xpcnn and PyTorch unchanged. Assigning
  ``layer.params["weight"] = array`` is the supported way to set weights.
- ``buffers``: state that is saved with the model but not trained
  (BatchNorm's running statistics).
- ``output_shape(input_shape)``: the per-sample output shape (without the
  batch dimension) for a per-sample input shape; it checks the shape and
  raises ``ValueError`` naming the expected and the actual value, touching
  no data. :class:`~xpcnn.model.Sequential` uses it to reject a wrong input
  before training starts and to print its summary.
- ``get_config()``: the constructor arguments as JSON-friendly values, which
  is what a model file stores (see :data:`REGISTRY`).

Layers compute with :mod:`xpcnn.functional` and never name an array library:
the input's module (``get_array_module(x)``) does the work, so the same layer
runs on NumPy and CuPy.

Initialisation
--------------
:class:`Conv2D` and :class:`Dense` draw their weights from a uniform
distribution at construction, on the default backend
(:func:`xpcnn.backend.module`):

``init="he"`` (default)
    He/Kaiming uniform for layers followed by ReLU:
    ``U(-b, b)`` with ``b = sqrt(6 / fan_in)`` (``torch.nn.init.kaiming_uniform_``
    with ``nonlinearity="relu"``); bias zero.
``init="glorot"``
    Glorot/Xavier uniform, ``b = sqrt(6 / (fan_in + fan_out))``, for tanh or
    sigmoid layers; bias zero.
``init="torch"``
    PyTorch's own default for ``nn.Conv2d`` / ``nn.Linear``: weight and bias
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

``fan_in = in_channels / groups * KH * KW`` (``in_features`` for Dense) and
``fan_out = out_channels / groups * KH * KW``. The ``seed`` argument takes
an int (a fresh NumPy ``default_rng(seed)``: weights are drawn on the host,
then moved to the default backend, so a seed gives the same weights on
NumPy and CuPy), ``None`` (fresh entropy) or an existing generator (NumPy's
or CuPy's ``default_rng(...)``; share one across layers to seed a whole
network with one number). CuPy's generator gives different numbers than
NumPy's for the same seed.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any

from . import backend
from . import functional as F
from .backend import Array, get_array_module
from .functional._utils import int_arg, out_size, pair, real_arg, seed_arg

__all__ = [
    "AvgPool2D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "REGISTRY",
    "ReLU",
    "Sigmoid",
    "Tanh",
]

_DTYPES = ("float32", "float64")
_INITS = ("he", "glorot", "torch")


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    if name not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return name


def _generator(seed: Any):
    """A random generator: `seed` itself if it is one, else NumPy's ``default_rng(seed)``.

    Initial weights are drawn on the host and then moved (once, by
    :func:`_uniform`): a CuPy generator per layer would hold 32,768 curand
    states, and the same seed now gives the same weights on every backend.
    """
    seed = seed_arg(seed)
    if _blueprint.on:
        return None
    if hasattr(seed, "random"):
        return seed
    return backend.module("numpy").random.default_rng(seed)


class _Blueprint(threading.local):
    on = False


_blueprint = _Blueprint()


@contextlib.contextmanager
def _shapes_only():
    """Layers built inside get zero-strided read-only placeholders as parameters.

    They have the right shapes and dtypes but take no memory and draw no
    random numbers, whatever sizes the arguments claim: what
    ``Sequential.load`` builds from a file's architecture before it reads
    (or trusts) any array.
    """
    _blueprint.on = True
    try:
        yield
    finally:
        _blueprint.on = False


def _placeholder(shape: tuple, dtype: str) -> Array:
    host = backend.module("numpy")
    try:
        return host.broadcast_to(host.zeros((), dtype=dtype), shape)
    except ValueError:  # a size beyond what an array can index
        raise ValueError(f"parameter shape {shape} is too large for an array") from None


def _uniform(gen, shape: tuple, bound: float, dtype: str) -> Array:
    """``U(-bound, bound)`` drawn by `gen`, placed on the default backend in `dtype`."""
    if _blueprint.on:
        return _placeholder(shape, dtype)
    u = gen.random(shape)
    return backend.asarray((2.0 * u - 1.0) * bound, dtype=dtype)


def _constant(shape: tuple, value: float, dtype: str) -> Array:
    """An array filled with `value` on the default backend."""
    if _blueprint.on:
        return _placeholder(shape, dtype)
    return backend.module().full(shape, value, dtype=dtype)


def _short(p: tuple[int, int]) -> str:
    """``(3, 3)`` -> ``"3"``, ``(3, 2)`` -> ``"(3, 2)"``: how a user would write the argument."""
    return str(p[0]) if p[0] == p[1] else str(p)


class Layer:
    """Base class: no parameters, identity shape, no cache.

    Subclasses override :meth:`forward`, :meth:`backward` and, when they
    change the shape, :meth:`output_shape`.

    Examples
    --------
    A layer without parameters: it keeps what its backward needs only when
    training.

    >>> import numpy as np
    >>> from xpcnn.layers import Layer
    >>> class Double(Layer):
    ...     def forward(self, x, training=False):
    ...         return 2 * x
    ...     def backward(self, dy):
    ...         return 2 * dy
    >>> Double().forward(np.array([1.0, 2.0]))
    array([2., 4.])
    """

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.buffers: dict[str, Array] = {}
        self._cache: Any = None

    # -- protocol -----------------------------------------------------------
    def forward(self, x: Array, training: bool = False) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def output_shape(self, input_shape: tuple) -> tuple:
        """Per-sample output shape for a per-sample `input_shape` (identity here)."""
        return tuple(input_shape)

    def get_config(self) -> dict:
        """Constructor arguments as JSON-friendly values (none here)."""
        return {}

    # -- helpers --------------------------------------------------------------
    def parameters(self) -> list[tuple[Layer, str]]:
        """``[(self, name), ...]`` for every trainable parameter, as :meth:`Sequential.parameters`."""
        return [(self, name) for name in self.params]

    def num_params(self) -> int:
        """Number of trainable scalars."""
        return sum(int(p.size) for p in self.params.values())

    def to(self, name: str) -> Layer:
        """Move parameters and buffers to backend `name`; drop gradients and caches."""
        self.params = {k: backend.asarray(v, name) for k, v in self.params.items()}
        self.buffers = {k: backend.asarray(v, name) for k, v in self.buffers.items()}
        self.grads = {}
        self._cache = None
        return self

    def _keep(self, training: bool, cache: Any) -> None:
        self._cache = cache if training else None

    def _cached(self) -> Any:
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called without a preceding forward(x, training=True)"
            )
        return self._cache

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_chw(input_shape: tuple, channels: int, who: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(f"{who} expects per-sample input (C, H, W) = ({channels}, H, W), got shape {shape}")
    if channels and shape[0] != channels:
        raise ValueError(f"{who} expects {channels} input channels, got {shape[0]} (input shape {shape})")
    return shape  # type: ignore[return-value]


class Conv2D(Layer):
    """2-D convolution layer (cross-correlation, as ``torch.nn.Conv2d``).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the output.
    kernel_size, stride, padding, dilation : int or (int, int)
        As :func:`xpcnn.functional.conv2d`.
    groups : int
        Must divide both channel counts.
    bias : bool
        Whether the layer has a ``"bias"`` parameter.
    init : {"he", "glorot", "torch"}
        Weight initialisation (see the module docstring).
    seed : int, generator or None
        Where the initial weights come from (see the module docstring).
    dtype : {"float32", "float64"}
        Parameter dtype; inputs must have the same.
    algo : {"auto", "einsum", "gemm", "shift", "rows"}
        Convolution algorithm for the forward pass (see ``F.conv2d``).

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape ``(out_channels, in_channels // groups, KH, KW)``
        and ``"bias"`` of shape ``(out_channels,)`` (if `bias`).

    Raises
    ------
    TypeError, ValueError
        For non-integer or non-positive sizes, groups that do not divide the
        channels, an unknown init, dtype or algo.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import Conv2D
    >>> conv = Conv2D(3, 8, 3, padding=1, seed=0)
    >>> conv.params["weight"].shape, conv.params["bias"].shape, conv.params["weight"].dtype
    ((8, 3, 3, 3), (8,), dtype('float32'))
    >>> x = np.zeros((2, 3, 32, 32), dtype=np.float32)
    >>> conv.forward(x).shape, conv.output_shape((3, 32, 32))
    ((2, 8, 32, 32), (8, 32, 32))
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, init="he", seed=None, dtype="float32", algo="auto"):
        super().__init__()
        self.in_channels = int_arg(in_channels, "in_channels", 1)
        self.out_channels = int_arg(out_channels, "out_channels", 1)
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        self.groups = int_arg(groups, "groups", 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels ({self.in_channels}) and out_channels ({self.out_channels})"
            )
        if init not in _INITS:
            raise ValueError(f"init must be one of {', '.join(_INITS)}, got {init!r}")
        if algo not in F.ALGOS:
            raise ValueError(f"algo must be one of {', '.join(F.ALGOS)}, got {algo!r}")
        self.use_bias = bool(bias)
        self.init, self.dtype, self.algo = init, _dtype_name(dtype), algo
        KH, KW = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, KH, KW)
        fan_in = shape[1] * KH * KW
        fan_out = self.out_channels // self.groups * KH * KW
        gen = _generator(seed)
        bound = {"he": math.sqrt(6.0 / fan_in), "glorot": math.sqrt(6.0 / (fan_in + fan_out)),
                 "torch": 1.0 / math.sqrt(fan_in)}[init]
        self.params["weight"] = _uniform(gen, shape, bound, self.dtype)
        if self.use_bias:
            if init == "torch":
                self.params["bias"] = _uniform(gen, (self.out_channels,), 1.0 / math.sqrt(fan_in), self.dtype)
            else:
                self.params["bias"] = _constant((self.out_channels,), 0.0, self.dtype)

    def _conv_args(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups}

    def forward(self, x, training=False):
        y = F.conv2d(x, self.params["weight"], self.params.get("bias"), algo=self.algo, **self._conv_args())
        self._keep(training, x)
        return y

    def backward(self, dy, need_dx=True):
        """Fill ``grads``; return the input gradient (``None`` if `need_dx` is False)."""
        x = self._cached()
        dx, dw, db = F.conv2d_backward(dy, x, self.params["weight"], need_dx=need_dx, **self._conv_args())
        self.grads["weight"] = dw
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def output_shape(self, input_shape):
        C, H, W = _check_chw(input_shape, self.in_channels, repr(self))
        g = F.conv_geometry((1, C, H, W), self.params["weight"].shape, **self._conv_args())
        return (self.out_channels, g.OH, g.OW)

    def get_config(self):
        return {
            "in_channels": self.in_channels, "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size), "stride": list(self.stride),
            "padding": list(self.padding), "dilation": list(self.dilation), "groups": self.groups,
            "bias": self.use_bias, "init": self.init, "dtype": self.dtype, "algo": self.algo,
        }

    def __repr__(self):
        args = [str(self.in_channels), str(self.out_channels), _short(self.kernel_size)]
        for name, value, default in (("stride", self.stride, 1), ("padding", self.padding, 0),
                                     ("dilation", self.dilation, 1)):
            if value != (default, default):
                args.append(f"{name}={_short(value)}")
        if self.groups != 1:
            args.append(f"groups={self.groups}")
        if not self.use_bias:
            args.append("bias=False")
        return f"Conv2D({', '.join(args)})"


class Dense(Layer):
    """Fully connected layer ``y = x @ weight.T + bias`` (``torch.nn.Linear``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    init, seed, dtype
        As :class:`Conv2D`.

    Attributes
    ----------
    params : dict
        ``"weight"`` ``(out_features, in_features)``, ``"bias"`` ``(out_features,)``.

    Notes
    -----
    The input must be 2-D ``(N, in_features)``; put a :class:`Flatten` after
    convolutions.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import Dense
    >>> dense = Dense(4, 2, seed=0)
    >>> dense.params["weight"] = np.array([[1, 1, 1, 1], [1, 0, 0, -1]], dtype=np.float32)
    >>> dense.params["bias"] = np.array([0.5, 0.0], dtype=np.float32)
    >>> dense.forward(np.array([[1, 2, 3, 4]], dtype=np.float32))
    array([[10.5, -3. ]], dtype=float32)
    """

    def __init__(self, in_features, out_features, bias=True, *, init="he", seed=None, dtype="float32"):
        super().__init__()
        self.in_features = int_arg(in_features, "in_features", 1)
        self.out_features = int_arg(out_features, "out_features", 1)
        if init not in _INITS:
            raise ValueError(f"init must be one of {', '.join(_INITS)}, got {init!r}")
        self.use_bias = bool(bias)
        self.init, self.dtype = init, _dtype_name(dtype)
        gen = _generator(seed)
        fan_in, fan_out = self.in_features, self.out_features
        bound = {"he": math.sqrt(6.0 / fan_in), "glorot": math.sqrt(6.0 / (fan_in + fan_out)),
                 "torch": 1.0 / math.sqrt(fan_in)}[init]
        self.params["weight"] = _uniform(gen, (fan_out, fan_in), bound, self.dtype)
        if self.use_bias:
            if init == "torch":
                self.params["bias"] = _uniform(gen, (fan_out,), 1.0 / math.sqrt(fan_in), self.dtype)
            else:
                self.params["bias"] = _constant((fan_out,), 0.0, self.dtype)

    def forward(self, x, training=False):
        y = F.linear(x, self.params["weight"], self.params.get("bias"))
        self._keep(training, x)
        return y

    def backward(self, dy):
        x = self._cached()
        dx, dw, db = F.linear_backward(dy, x, self.params["weight"])
        self.grads["weight"] = dw
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def output_shape(self, input_shape):
        shape = tuple(int(s) for s in input_shape)
        if shape != (self.in_features,):
            raise ValueError(
                f"{self!r} expects per-sample input ({self.in_features},), got shape {shape}"
                + (" (add a Flatten layer before it)" if len(shape) > 1 else "")
            )
        return (self.out_features,)

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.use_bias,
                "init": self.init, "dtype": self.dtype}

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features}{'' if self.use_bias else ', bias=False'})"


class _Pool2D(Layer):
    _name = ""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        if self.padding[0] > self.kernel_size[0] // 2 or self.padding[1] > self.kernel_size[1] // 2:
            raise ValueError(f"padding {self.padding} must be at most half the kernel size {self.kernel_size}")

    def _args(self):
        return self.kernel_size, self.stride, self.padding

    def output_shape(self, input_shape):
        C, H, W = _check_chw(input_shape, 0, repr(self))
        (KH, KW), (SH, SW), (PH, PW) = self._args()
        if KH > H + 2 * PH or KW > W + 2 * PW:
            raise ValueError(f"{self!r}: window {(KH, KW)} is larger than the padded input {(H + 2 * PH, W + 2 * PW)}")
        return (C, out_size(H, KH, SH, PH), out_size(W, KW, SW, PW))

    def get_config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding)}

    def __repr__(self):
        args = [_short(self.kernel_size)]
        if self.stride != self.kernel_size:
            args.append(f"stride={_short(self.stride)}")
        if self.padding != (0, 0):
            args.append(f"padding={_short(self.padding)}")
        return f"{type(self).__name__}({', '.join(args)})"


class MaxPool2D(_Pool2D):
    """Max pooling (``torch.nn.MaxPool2d``, floor mode).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to `kernel_size`.
    padding : int or (int, int)
        ``-inf`` padding, at most ``kernel_size // 2``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import MaxPool2D
    >>> MaxPool2D(2).forward(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> MaxPool2D(2).output_shape((16, 7, 7))  # floor mode
    (16, 3, 3)
    """

    def forward(self, x, training=False):
        y = F.max_pool2d(x, *self._args())
        self._keep(training, (x, y))  # the output too: the backward need not recompute it
        return y

    def backward(self, dy):
        x, y = self._cached()
        return F.max_pool2d_backward(dy, x, *self._args(), y=y)


class AvgPool2D(_Pool2D):
    """Average pooling (``torch.nn.AvgPool2d``, floor mode, padded zeros counted).

    Parameters as :class:`MaxPool2D`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import AvgPool2D
    >>> AvgPool2D(2).forward(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """

    def forward(self, x, training=False):
        y = F.avg_pool2d(x, *self._args())
        if training:
            # The backward reads only the input's shape and dtype: keep a
            # zero-strided stand-in instead of the activations.
            xp = get_array_module(x)
            self._keep(True, xp.broadcast_to(xp.zeros((), dtype=x.dtype), x.shape))
        else:
            self._keep(False, None)
        return y

    def backward(self, dy):
        return F.avg_pool2d_backward(dy, self._cached(), *self._args())


class ReLU(Layer):
    """``max(x, 0)``; the gradient at 0 is 0, as in PyTorch.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import ReLU
    >>> relu = ReLU()
    >>> relu.forward(np.array([-1.0, 0.0, 3.0]), training=True)  # keeps x for backward
    array([0., 0., 3.])
    >>> relu.backward(np.array([5.0, 5.0, 5.0]))
    array([0., 0., 5.])
    """

    def forward(self, x, training=False):
        self._keep(training, x)
        return F.relu(x)

    def backward(self, dy):
        return F.relu_backward(dy, self._cached())


class LeakyReLU(Layer):
    """`x` for ``x > 0``, else ``negative_slope * x`` (``torch.nn.LeakyReLU``).

    Parameters
    ----------
    negative_slope : float, default 0.01

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import LeakyReLU
    >>> LeakyReLU(0.1).forward(np.array([-10.0, 10.0]))
    array([-1., 10.])
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = real_arg(negative_slope, "negative_slope")

    def forward(self, x, training=False):
        self._keep(training, x)
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, dy):
        return F.leaky_relu_backward(dy, self._cached(), self.negative_slope)

    def get_config(self):
        return {"negative_slope": self.negative_slope}


class Sigmoid(Layer):
    """Logistic function; its backward uses the cached output.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import Sigmoid
    >>> s = Sigmoid()
    >>> s.forward(np.array([0.0]), training=True), s.backward(np.array([1.0]))
    (array([0.5]), array([0.25]))
    """

    def forward(self, x, training=False):
        y = F.sigmoid(x)
        self._keep(training, y)
        return y

    def backward(self, dy):
        return F.sigmoid_backward(dy, self._cached())


class Tanh(Layer):
    """Hyperbolic tangent; its backward uses the cached output.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import Tanh
    >>> t = Tanh()
    >>> t.forward(np.array([0.0]), training=True), t.backward(np.array([1.0]))
    (array([0.]), array([1.]))
    """

    def forward(self, x, training=False):
        y = F.tanh(x)
        self._keep(training, y)
        return y

    def backward(self, dy):
        return F.tanh_backward(dy, self._cached())


class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1 * d2 * ...)`` (a view when the input is contiguous).

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import Flatten
    >>> Flatten().forward(np.zeros((2, 32, 4, 4))).shape, Flatten().output_shape((32, 4, 4))
    ((2, 512), (512,))
    """

    def forward(self, x, training=False):
        if x.ndim < 1:
            raise ValueError(f"Flatten expects a batch (N, ...), got a {x.ndim}-D array")
        self._keep(training, tuple(x.shape))
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._cached())

    def output_shape(self, input_shape):
        return (math.prod(int(s) for s in input_shape),)


class Dropout(Layer):
    """Inverted dropout (``torch.nn.Dropout``).

    In training each element is zeroed with probability `p` and the others
    are scaled by ``1 / (1 - p)``, so inference is the identity.

    Parameters
    ----------
    p : float in [0, 1]
        Probability of dropping an element.
    seed : int, generator or None
        Source of the masks. An int gives the same sequence of masks on a
        backend; the generator is created on the input's backend at the
        first training forward.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import Dropout
    >>> drop = Dropout(0.5, seed=0)
    >>> x = np.ones(1000)
    >>> drop.forward(x) is x  # inference: the identity
    True
    >>> y = drop.forward(x, training=True)
    >>> sorted(set(y.tolist()))  # dropped, or scaled by 1 / (1 - p)
    [0.0, 2.0]
    """

    def __init__(self, p=0.5, *, seed=None):
        super().__init__()
        self.p = real_arg(p, "dropout probability p", 0.0, 1.0)
        seed = seed_arg(seed)
        self._seed = seed
        self._rng = seed if hasattr(seed, "random") else None

    def forward(self, x, training=False):
        if not training or self.p == 0.0:
            self._keep(training, None if not training else 1.0)
            return x
        xp = get_array_module(x)
        if self._rng is None:
            self._rng = xp.random.default_rng(self._seed)
        if self.p == 1.0:
            mask = xp.zeros(x.shape, dtype=x.dtype)
        else:
            # A generator of the other backend (passed by the user) draws
            # there; its numbers are moved once per batch.
            u = self._rng.random(x.shape, dtype=x.dtype)
            keep = backend.asarray(u, backend.name_of(xp)) >= x.dtype.type(self.p)
            mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._keep(True, mask)
        return x * mask

    def backward(self, dy):
        mask = self._cached()
        return dy if isinstance(mask, float) else dy * mask

    def get_config(self):
        return {"p": self.p}

    def to(self, name):
        if not hasattr(self._seed, "random"):
            self._rng = None  # re-created on the new backend from the seed
        return super().to(name)


class BatchNorm2D(Layer):
    """Batch normalisation over ``(N, H, W)`` per channel (``torch.nn.BatchNorm2d``).

    In training it normalises with the batch's mean and biased variance and
    updates the running statistics
    ``running = (1 - momentum) * running + momentum * batch``, where the
    running variance takes the *unbiased* batch variance, as PyTorch does.
    In inference it normalises with the running statistics.

    Parameters
    ----------
    num_features : int
        Channels ``C``.
    eps : float, default 1e-5
    momentum : float, default 0.1
    affine : bool, default True
        Whether there are learnable ``"weight"`` (ones) and ``"bias"`` (zeros).
    dtype : {"float32", "float64"}

    Attributes
    ----------
    buffers : dict
        ``"running_mean"`` (zeros) and ``"running_var"`` (ones), shape ``(C,)``.

    Raises
    ------
    ValueError
        In training, if a channel has a single value (``N * H * W == 1``),
        like PyTorch.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn.layers import BatchNorm2D
    >>> bn = BatchNorm2D(1, dtype="float64")
    >>> x = np.array([1.0, 3.0]).reshape(2, 1, 1, 1)  # batch mean 2, variance 1
    >>> bn.forward(x, training=True).ravel().round(4)
    array([-1.,  1.])
    >>> bn.buffers["running_mean"], bn.buffers["running_var"]  # 0.9 * old + 0.1 * batch (unbiased var 2)
    (array([0.2]), array([1.1]))
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, *, dtype="float32"):
        super().__init__()
        self.num_features = int_arg(num_features, "num_features", 1)
        self.eps = real_arg(eps, "eps", 0.0)
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.momentum = real_arg(momentum, "momentum", 0.0, 1.0)
        self.affine = bool(affine)
        self.dtype = _dtype_name(dtype)
        C = (self.num_features,)
        if self.affine:
            self.params["weight"] = _constant(C, 1.0, self.dtype)
            self.params["bias"] = _constant(C, 0.0, self.dtype)
        self.buffers["running_mean"] = _constant(C, 0.0, self.dtype)
        self.buffers["running_var"] = _constant(C, 1.0, self.dtype)

    def forward(self, x, training=False):
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"{self!r} expects a 4-D batch (N, {self.num_features}, H, W), got shape {tuple(x.shape)}"
            )
        xp = get_array_module(x)
        C = self.num_features
        if training:
            n = x.shape[0] * x.shape[2] * x.shape[3]
            if n < 2:
                raise ValueError(f"{self!r}: expected more than 1 value per channel when training, got input shape {tuple(x.shape)}")
            mean = x.mean(axis=(0, 2, 3))
            var = x.var(axis=(0, 2, 3))
            m = x.dtype.type(self.momentum)
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= 1 - m
            rm += m * mean
            rv *= 1 - m
            rv += (m * x.dtype.type(n / (n - 1))) * var
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        inv_std = 1 / xp.sqrt(var + x.dtype.type(self.eps))
        xhat = (x - mean.reshape(1, C, 1, 1)) * inv_std.reshape(1, C, 1, 1)
        self._keep(training, (xhat, inv_std))
        if not self.affine:
            return xhat
        return xhat * self.params["weight"].reshape(1, C, 1, 1) + self.params["bias"].reshape(1, C, 1, 1)

    def backward(self, dy):
        xhat, inv_std = self._cached()
        C = self.num_features
        if self.affine:
            self.grads["weight"] = (dy * xhat).sum(axis=(0, 2, 3))
            self.grads["bias"] = dy.sum(axis=(0, 2, 3))
            dxhat = dy * self.params["weight"].reshape(1, C, 1, 1)
        else:
            dxhat = dy
        mean_d = dxhat.mean(axis=(0, 2, 3)).reshape(1, C, 1, 1)
        mean_dx = (dxhat * xhat).mean(axis=(0, 2, 3)).reshape(1, C, 1, 1)
        return (dxhat - mean_d - xhat * mean_dx) * inv_std.reshape(1, C, 1, 1)

    def output_shape(self, input_shape):
        return _check_chw(input_shape, self.num_features, repr(self))

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "dtype": self.dtype}

    def __repr__(self):
        return f"BatchNorm2D({self.num_features})"


#: Layer types a model file may name: ``{"Conv2D": Conv2D, ...}``. Loading
#: builds only these, from their ``get_config()`` arguments.
REGISTRY: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Conv2D, Dense, MaxPool2D, AvgPool2D, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Dropout, BatchNorm2D)
}
