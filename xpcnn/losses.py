"""Loss functions: call to get a 0-d loss array, then ``backward()`` for its gradient.

A loss object remembers the inputs of its last call, so the training step is::

    logits = model.forward(xb, training=True)
    value = loss(logits, yb)          # 0-d array, stays on the device
    model.backward(loss.backward())   # gradient with respect to the logits

Both losses average over the batch, like PyTorch's default
``reduction="mean"``.
"""

from __future__ import annotations

from .backend import Array, get_array_module
from .functional._utils import check_float, check_same
from .functional.loss import _forward, _grad, _grad_scale

__all__ = ["Loss", "MSELoss", "SoftmaxCrossEntropy"]


class Loss:
    """Base class of the losses.

    Attributes
    ----------
    classification : bool
        Whether targets are integer class ids and accuracy is meaningful
        (``Sequential.fit`` then reports accuracy and checks the label range).
    """

    classification = False

    def __init__(self) -> None:
        self._cache = None

    def __call__(self, output: Array, target: Array, *, check_range: bool = True) -> Array:  # pragma: no cover
        raise NotImplementedError

    def backward(self, dloss: float = 1.0) -> Array:  # pragma: no cover
        raise NotImplementedError

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before the loss was computed")
        return self._cache

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy on integer labels (``torch.nn.CrossEntropyLoss``).

    Computed from ``log_softmax`` with the log-sum-exp trick, so large
    logits neither overflow nor take ``log(0)``.

    Examples
    --------
    >>> import numpy as np
    >>> loss = SoftmaxCrossEntropy()
    >>> logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    >>> round(float(loss(logits, np.array([0, 1]))), 4)
    0.1269
    >>> loss.backward().round(4)
    array([[-0.0596,  0.0596],
           [ 0.0596, -0.0596]])
    """

    classification = True

    def __call__(self, logits, labels, *, check_range=True):
        """Mean cross-entropy.

        Parameters
        ----------
        logits : array, shape (N, classes), float32 or float64
        labels : integer array, shape (N,)
            Class ids in ``[0, classes)``, on the backend of `logits`.
        check_range : bool
            Check the label range (one device read on CuPy); ``fit`` checks
            all labels once up front and passes False.

        Returns
        -------
        0-d array of the dtype of `logits`

        Raises
        ------
        TypeError, ValueError
            See :func:`xpcnn.functional.cross_entropy`.
        """
        value, logp, index, valid = _forward(logits, labels, check_range)
        self._cache = (logp, index, valid)
        return value

    def backward(self, dloss=1.0):
        """Gradient ``dloss * (softmax(logits) - onehot(labels)) / N`` with respect to the logits."""
        logp, index, valid = self._cached()
        # softmax from the forward's log-probabilities (as PyTorch's log_softmax backward):
        # one exp instead of a second softmax and label check.
        return _grad(get_array_module(logp).exp(logp), index, valid, dloss)


class MSELoss(Loss):
    """Mean squared error over all elements (``torch.nn.MSELoss()``).

    ``loss(output, target) = mean((output - target) ** 2)``; `target` must
    have the shape, dtype and backend of `output`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpcnn import MSELoss
    >>> loss = MSELoss()
    >>> float(loss(np.array([1.0, 2.0]), np.array([1.0, 4.0])))
    2.0
    >>> loss.backward()  # 2 * (output - target) / size
    array([ 0., -2.])
    """

    def __call__(self, output, target, *, check_range=True):
        """Mean squared error as a 0-d array.

        Raises
        ------
        TypeError
            Non-float arrays, or different dtypes or backends.
        ValueError
            If the shapes differ.
        """
        check_float(output, "output")
        check_float(target, "target")
        check_same(output, target, "output and target")
        if output.shape != target.shape:
            raise ValueError(f"target must have the output's shape {tuple(output.shape)}, got {tuple(target.shape)}")
        diff = output - target
        self._cache = (diff,)
        return (diff * diff).mean()

    def backward(self, dloss=1.0):
        """Gradient ``2 * dloss * (output - target) / size`` with respect to the output."""
        (diff,) = self._cached()
        return diff * _grad_scale(dloss, 2.0 / max(1, diff.size), diff.dtype)
