"""xpcnn: convolutional neural networks on NumPy (CPU) and CuPy (CUDA GPU).

The same code runs on both backends: every op takes ``xp =
get_array_module(x)`` from its input. ``import xpcnn`` imports neither CuPy
nor any plotting or progress-bar library.
"""

from . import backend, config, functional
from .backend import BackendUnavailableError

__version__ = "0.1.0"

__all__ = ["BackendUnavailableError", "backend", "config", "functional", "__version__"]
