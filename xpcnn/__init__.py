"""xpcnn: convolutional neural networks on NumPy (CPU) and CuPy (CUDA GPU).

The same code runs on both backends: every op takes ``xp =
get_array_module(x)`` from its input. ``import xpcnn`` imports neither CuPy
nor any plotting, progress-bar or dataset library.

Examples
--------
>>> import numpy as np
>>> import xpcnn
>>> model = xpcnn.Sequential(
...     xpcnn.Conv2D(1, 4, 3, padding=1, seed=0), xpcnn.ReLU(), xpcnn.MaxPool2D(2),
...     xpcnn.Flatten(), xpcnn.Dense(4 * 4 * 4, 10, seed=1), input_shape=(1, 8, 8))
>>> model.predict(np.zeros((5, 1, 8, 8), dtype=np.float32)).shape
(5, 10)
"""

from . import backend, config, data, functional, layers, losses, model, models, optim
from .backend import BackendUnavailableError
from .layers import (
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
from .losses import MSELoss, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam, StepLR

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AvgPool2D",
    "BackendUnavailableError",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "LeakyReLU",
    "MSELoss",
    "MaxPool2D",
    "ReLU",
    "SGD",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "StepLR",
    "Tanh",
    "backend",
    "config",
    "data",
    "functional",
    "layers",
    "losses",
    "model",
    "models",
    "optim",
    "__version__",
]
