"""Pure array functions, forward and backward, written once against ``xp``.

Imported as ``from xpcnn import functional as F``. Layout NCHW; weights in
PyTorch's shapes. Every op has a public backward.

Examples
--------
>>> import numpy as np
>>> from xpcnn import functional as F
>>> x = np.random.default_rng(0).standard_normal((8, 3, 32, 32), dtype=np.float32)
>>> w = np.random.default_rng(1).standard_normal((16, 3, 3, 3), dtype=np.float32)
>>> y = F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
>>> y.shape, y.dtype
((8, 16, 16, 16), dtype('float32'))
"""

from .activations import (
    leaky_relu,
    leaky_relu_backward,
    log_softmax,
    log_softmax_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from .conv import ALGOS, choose_algo, clear_autotune_cache, conv2d, conv2d_backward, conv_geometry, rule_algo
from .linear import linear, linear_backward
from .loss import check_labels, cross_entropy, cross_entropy_backward
from .pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = [
    "ALGOS",
    "avg_pool2d",
    "avg_pool2d_backward",
    "check_labels",
    "choose_algo",
    "clear_autotune_cache",
    "conv2d",
    "conv2d_backward",
    "conv_geometry",
    "cross_entropy",
    "cross_entropy_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "log_softmax",
    "log_softmax_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "relu",
    "relu_backward",
    "rule_algo",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
]
