"""Ready-made networks and the training recipes of ``xpcnn train``.

Each function returns a fresh, randomly initialised
:class:`~xpcnn.model.Sequential` on the default backend
(:func:`xpcnn.backend.module`), float32, with its per-sample
``input_shape`` set. ``seed`` takes an int, ``None`` or a random generator
(one generator is shared by all the layers, so one number seeds the whole
network; see :mod:`xpcnn.layers`, *Initialisation*).

========================  ==================  ==========  ============================
function                  input (per sample)  parameters  used by
========================  ==================  ==========  ============================
:func:`digits_cnn`        ``(1, 8, 8)``       38,282      ``xpcnn train`` (digits)
:func:`lenet5`            ``(1, 28, 28)``     61,706      ``xpcnn train --dataset mnist``
:func:`classifier`        any                 by shape    ``xpcnn.sklearn.CNNClassifier``
========================  ==================  ==========  ============================

:data:`RECIPES` holds the settings ``xpcnn train`` uses for each data set
(network, epochs, batch size, learning rates and their decay), so a script
can train exactly what the command trains.
"""

from __future__ import annotations

from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, _generator
from .model import Sequential

__all__ = ["RECIPES", "classifier", "digits_cnn", "lenet5", "mnist_default"]


def digits_cnn(seed=None) -> Sequential:
    """A small CNN for scikit-learn's 8x8 digits (``xpcnn train``'s default network).

    Conv(1->16, 3x3, pad 1)-ReLU-Conv(16->32, 3x3, pad 1)-ReLU-MaxPool 2-
    Flatten-Dense(512->64)-ReLU-Dense(64->10): 38,282 parameters.

    Parameters
    ----------
    seed : int, random generator or None, default None
        Seeds all the weights.

    Returns
    -------
    Sequential
        Input ``(N, 1, 8, 8)`` float32, output ``(N, 10)`` logits.

    Examples
    --------
    >>> from xpcnn.models import digits_cnn
    >>> model = digits_cnn(seed=0)
    >>> model.input_shape, model.output_shape(), model.num_params()
    ((1, 8, 8), (10,), 38282)
    """
    rng = _generator(seed)
    return Sequential(
        Conv2D(1, 16, 3, padding=1, seed=rng), ReLU(),
        Conv2D(16, 32, 3, padding=1, seed=rng), ReLU(),
        MaxPool2D(2), Flatten(),
        Dense(32 * 4 * 4, 64, seed=rng), ReLU(),
        Dense(64, 10, seed=rng),
        input_shape=(1, 8, 8),
    )


def lenet5(seed=None, input_size: int = 28, classes: int = 10) -> Sequential:
    """LeNet-5 (LeCun et al., 1998) with ReLU and max pooling, for square gray images.

    Conv(1->6, 5x5, pad 2)-ReLU-MaxPool 2-Conv(6->16, 5x5)-ReLU-MaxPool 2-
    Flatten-Dense(16*s*s->120)-ReLU-Dense(120->84)-ReLU-Dense(84->classes),
    with ``s = (input_size // 2 - 4) // 2`` (5 for MNIST's 28x28: 61,706
    parameters). The original's tanh/sigmoid and subsampling layers are
    replaced by ReLU and max pooling, as most modern re-implementations do;
    the weights use He initialisation (``init="he"``).

    Parameters
    ----------
    seed : int, random generator or None, default None
        Seeds all the weights.
    input_size : int, default 28
        Height and width of the input; at least 12.
    classes : int, default 10
        Number of outputs.

    Returns
    -------
    Sequential
        Input ``(N, 1, input_size, input_size)`` float32, output
        ``(N, classes)`` logits.

    Raises
    ------
    ValueError
        If `input_size` is below 12 (the feature map would vanish).

    Examples
    --------
    >>> from xpcnn.models import lenet5
    >>> model = lenet5(seed=0)
    >>> model.input_shape, model.output_shape(), model.num_params()
    ((1, 28, 28), (10,), 61706)
    >>> lenet5(seed=0, input_size=32, classes=3).output_shape()
    (3,)
    """
    side = ((input_size // 2) - 4) // 2
    if side < 1:
        raise ValueError(f"lenet5 needs input_size >= 12, got {input_size}")
    rng = _generator(seed)
    return Sequential(
        Conv2D(1, 6, 5, padding=2, seed=rng), ReLU(), MaxPool2D(2),
        Conv2D(6, 16, 5, seed=rng), ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(16 * side * side, 120, seed=rng), ReLU(),
        Dense(120, 84, seed=rng), ReLU(),
        Dense(84, classes, seed=rng),
        input_shape=(1, input_size, input_size),
    )


def mnist_default(seed=None, input_size: int = 28) -> Sequential:
    """The network ``xpcnn train --dataset mnist`` trains: :func:`lenet5`.

    Parameters
    ----------
    seed : int, random generator or None, default None
        Seeds all the weights.
    input_size : int, default 28
        Height and width of the images.

    Returns
    -------
    Sequential
        Input ``(N, 1, input_size, input_size)`` float32, output ``(N, 10)``.

    Examples
    --------
    >>> from xpcnn.models import mnist_default
    >>> mnist_default(seed=0).num_params()
    61706
    """
    return lenet5(seed, input_size=input_size)


def classifier(input_shape, n_classes, seed=None) -> Sequential:
    """A classifier for any per-sample shape: what :class:`xpcnn.sklearn.CNNClassifier` builds by default.

    Parameters
    ----------
    input_shape : tuple of int
        Per-sample input shape: ``(C, H, W)`` for images, ``(n_features,)``
        for tabular rows.
    n_classes : int
        Outputs (logits) of the last layer.
    seed : int, generator or None
        Seeds all the weights.

    Returns
    -------
    Sequential
        For ``(C, H, W)``: Conv(3x3, pad 1, 16 channels)-ReLU-Conv(3x3, pad 1,
        32 channels)-ReLU, 2x2 max pooling (repeated while more than 8x8
        values are left; none if ``H`` or ``W`` is 1), then Dropout(0.25)-
        Flatten-Dense(64)-ReLU-Dropout(0.5)-Dense(`n_classes`). For ``(1, 8,
        8)`` that is :func:`digits_cnn` with two dropout layers (5-fold
        cross-validation on the digits over ten seeds: 97.1-97.7%; with a
        single dropout layer 96.6-98.4%).
        For ``(n_features,)``: Dense(100)-ReLU-Dense(`n_classes`), a
        multi-layer perceptron. Float32, on the default backend.

    Raises
    ------
    ValueError
        If `input_shape` has another length.

    Examples
    --------
    >>> from xpcnn.models import classifier
    >>> classifier((1, 8, 8), 10, seed=0).num_params()
    38282
    >>> classifier((4,), 3, seed=0).num_params()
    803
    """
    rng = _generator(seed)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        return Sequential(Dense(shape[0], 100, seed=rng), ReLU(), Dense(100, n_classes, seed=rng), input_shape=shape)
    if len(shape) != 3:
        raise ValueError(
            f"classifier takes input_shape (C, H, W) or (n_features,), got {shape}; "
            "e.g. (1, 8, 8) for 8x8 gray images"
        )
    C, H, W = shape
    layers = [Conv2D(C, 16, 3, padding=1, seed=rng), ReLU(), Conv2D(16, 32, 3, padding=1, seed=rng), ReLU()]
    while min(H, W) >= 2 and (len(layers) == 4 or H * W > 64):
        layers.append(MaxPool2D(2))
        H, W = H // 2, W // 2
    # Dropout seeds are ints, so the masks are drawn on the model's own backend.
    layers += [Dropout(0.25, seed=int(rng.integers(2**31))), Flatten(), Dense(32 * H * W, 64, seed=rng), ReLU(),
               Dropout(0.5, seed=int(rng.integers(2**31))), Dense(64, n_classes, seed=rng)]
    return Sequential(*layers, input_shape=shape)


#: What ``xpcnn train --dataset NAME`` trains where an option is not given:
#: ``model`` (the network's function), ``epochs``, ``batch_size``, the
#: learning rate per optimizer and ``lr_step``, the epochs between two
#: decays of the rate by 10 (:class:`~xpcnn.optim.StepLR`; ``None``: none).
#: The MNIST recipe was chosen by measurement (docs/guide/training.md):
#: 99.2% test accuracy in 8 epochs, where LeNet-5 at a constant
#: ``Adam(1e-3)`` stays near 98.6%.
RECIPES = {
    "digits": {"model": digits_cnn, "epochs": 20, "batch_size": 32, "lr": {"adam": 2e-3, "sgd": 0.05},
               "lr_step": None},
    "mnist": {"model": mnist_default, "epochs": 8, "batch_size": 64, "lr": {"adam": 2e-3, "sgd": 0.05},
              "lr_step": 5},
}
