"""A scikit-learn classifier around :class:`~xpcnn.model.Sequential`: :class:`CNNClassifier`.

It follows scikit-learn's estimator rules (``__init__`` only stores its
arguments, checks and work happen in ``fit``, fitted attributes end in
``_``), so it works in pipelines, cross-validation and grid search, and
:func:`sklearn.utils.estimator_checks.check_estimator` passes on it.

scikit-learn (>= 1.6) is imported by this module only: ``import xpcnn``
does not import it; ``from xpcnn.sklearn import CNNClassifier`` does.
"""

from __future__ import annotations

import copy
import inspect
import math

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, unique_labels

try:
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # pragma: no cover - depends on the installed scikit-learn
    raise ImportError(
        f"xpcnn.sklearn needs scikit-learn >= 1.6, found {sklearn.__version__} (pip install -U scikit-learn)"
    ) from None

from xpcnn import backend
from xpcnn.functional import softmax
from xpcnn.functional._utils import int_arg
from xpcnn.model import Sequential
from xpcnn.models import classifier
from xpcnn.optim import SGD, Adam

__all__ = ["CNNClassifier"]

_OPTIMIZERS = {"adam": lambda lr: Adam(lr=lr), "sgd": lambda lr: SGD(lr=lr, momentum=0.9)}
# epochs="auto": at least this many epochs, and at least this many optimizer steps
# (tiny data sets get more passes, so a few dozen samples still train).
_AUTO_EPOCHS, _AUTO_STEPS = 20, 300


def _build(builder, input_shape, n_classes, rng) -> Sequential:
    """Call the `model` argument: a builder ``(input_shape, n_classes[, seed])`` or a Sequential (copied)."""
    if isinstance(builder, Sequential):
        return copy.deepcopy(builder)
    if not callable(builder):
        raise TypeError(
            f"model must be None, a Sequential or a callable (input_shape, n_classes) -> Sequential, "
            f"got {type(builder).__name__}"
        )
    try:
        takes_seed = "seed" in inspect.signature(builder).parameters
    except (TypeError, ValueError):  # builtins and some callables have no signature
        takes_seed = False
    model = builder(input_shape, n_classes, seed=rng) if takes_seed else builder(input_shape, n_classes)
    if not isinstance(model, Sequential):
        raise TypeError(f"model(input_shape, n_classes) must return an xpcnn Sequential, got {type(model).__name__}")
    return model


def _image_shape(X):
    """Per-sample shape of an array with more than two dimensions (None for rows)."""
    return tuple(int(s) for s in X.shape[1:]) if getattr(X, "ndim", 2) > 2 else None


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """A neural-network classifier with scikit-learn's interface.

    Parameters
    ----------
    model : callable, Sequential or None, default None
        Builds the network: ``model(input_shape, n_classes)`` returns a
        :class:`~xpcnn.model.Sequential` whose output is ``n_classes``
        logits; if it takes a ``seed`` keyword it gets a NumPy generator
        drawn from `random_state`. A ``Sequential`` is copied and its
        weights are the starting point of every fit. None:
        :func:`xpcnn.models.classifier`, a small CNN for ``(C, H, W)`` samples
        and a perceptron for rows.
    input_shape : tuple of int or None, default None
        Per-sample shape the rows of a 2-D `X` are reshaped to, e.g.
        ``(1, 8, 8)`` (its product must equal the number of features).
        None: the shape of `X`'s samples (``(n_features,)`` for 2-D `X`).
    epochs : int or "auto", default "auto"
        Passes over the data in :meth:`fit`. ``"auto"``: 20, or more on small
        data sets, so that training takes at least 300 optimizer steps.
    batch_size : int, default 32
    optimizer : {"adam", "sgd"}, default "adam"
        :class:`~xpcnn.optim.Adam`, or :class:`~xpcnn.optim.SGD` with
        momentum 0.9.
    lr : float, default 2e-3
        Learning rate.
    random_state : int, numpy.random.RandomState or None, default None
        Seeds the initial weights and the shuffling: the same int gives the
        same fitted model on a backend.
    backend : {"numpy", "cupy"}, default "numpy"
        Where the network trains. Inputs and outputs are NumPy arrays on the
        host either way; the data moves to the device once per call.
    verbose : int, default 0
        Above 0, show a progress bar per epoch (needs tqdm).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    n_features_in_ : int
        Number of features (values per sample) seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names when `X` was a DataFrame with string column names.
    model_ : Sequential
        The trained network (on `backend`).
    optimizer_ : Optimizer
        Its optimizer; the state carries over between :meth:`partial_fit` calls.
    history_ : dict of lists
        ``"loss"`` and ``"accuracy"`` per epoch trained (:meth:`partial_fit`
        appends one entry per call).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from xpcnn.sklearn import CNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = CNNClassifier(input_shape=(1, 8, 8), epochs=2, random_state=0).fit(X[:500] / 16, y[:500])
    >>> clf.predict(X[500:503] / 16).shape
    (3,)
    >>> clf.predict_proba(X[500:503] / 16).sum(axis=1).round(4)
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, model=None, input_shape=None, epochs="auto", batch_size=32, optimizer="adam", lr=2e-3,
                 random_state=None, backend="numpy", verbose=0):
        self.model = model
        self.input_shape = input_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.random_state = random_state
        self.backend = backend
        self.verbose = verbose

    def __sklearn_is_fitted__(self):
        # n_features_in_ is set by the input checks, before a fit can still fail
        return hasattr(self, "model_")

    # ------------------------------------------------------------------ checks
    def _validate(self, X, y="no_validation", reset=True):
        """scikit-learn's checks of `X` (and `y` unless omitted); returns a 2-D float `X` (and `y`)."""
        if getattr(X, "ndim", 2) > 2:  # a batch of images (n_samples, C, H, W): one row per sample
            X = X.reshape(len(X), -1)
        out = validate_data(self, X, y, dtype=(np.float32, np.float64), reset=reset)
        if isinstance(y, str) and y == "no_validation":
            return out
        check_classification_targets(out[1])
        return out

    def _sample_shape(self, n_features, x_shape):
        """The per-sample shape the model sees: `input_shape`, else the shape of `X`'s samples."""
        if self.input_shape is None:
            return (n_features,) if x_shape is None else x_shape
        if not isinstance(self.input_shape, (tuple, list)):
            raise TypeError(f"input_shape must be a tuple of ints or None, got {self.input_shape!r}")
        shape = tuple(int_arg(s, "input_shape entries", 1) for s in self.input_shape)
        if x_shape is not None and x_shape != shape:
            raise ValueError(f"X has samples of shape {x_shape}, but input_shape is {shape}")
        if math.prod(shape) != n_features:
            raise ValueError(
                f"input_shape {shape} holds {math.prod(shape)} values per sample, but X has {n_features} features"
            )
        return shape

    def _epochs(self, n_samples):
        if isinstance(self.epochs, str) and self.epochs == "auto":
            batches = math.ceil(n_samples / int_arg(self.batch_size, "batch_size", 1))
            return max(_AUTO_EPOCHS, math.ceil(_AUTO_STEPS / batches))
        return int_arg(self.epochs, "epochs", 0)

    # ------------------------------------------------------------------ training
    def _initialize(self, classes, n_features, x_shape):
        """Check the parameters, then set ``classes_``, ``model_``, ``optimizer_`` and the shuffling generator."""
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {self.optimizer!r}")
        backend.module(self.backend)  # unknown or unusable backend: fail before any work
        int_arg(self.verbose, "verbose", 0)
        shape = self._sample_shape(n_features, x_shape)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        init, order = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        builder = classifier if self.model is None else self.model
        model = _build(builder, shape, len(classes), init)
        out = model.output_shape(shape)
        if out != (len(classes),):
            raise ValueError(f"the model's per-sample output must be ({len(classes)},) (one logit per class), got {out}")
        optimizer = _OPTIMIZERS[self.optimizer](self.lr)
        model.input_shape = shape
        # Attributes only once every check passed: a failed fit leaves no half-fitted estimator.
        self.classes_, self.model_, self.optimizer_ = classes, model.to(self.backend), optimizer
        self.history_ = {}
        self._order = order

    def _train(self, X, y, epochs):
        x = X.reshape((len(X),) + self.model_.input_shape)
        history = self.model_.fit(x, y, epochs=epochs, batch_size=self.batch_size, optimizer=self.optimizer_,
                                  seed=self._order, progress=self.verbose > 0)
        for key, values in history.items():
            self.history_.setdefault(key, []).extend(values)
        return self

    def fit(self, X, y):
        """Build a new network and train it for `epochs` passes over (`X`, `y`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Numbers; each row is reshaped to `input_shape`. An array with
            more dimensions is taken as one sample per entry of its first
            axis (``n_features_in_`` then counts the values per sample).
        y : array-like of shape (n_samples,)
            Class labels (ints, strings, ...).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Bad `X` or `y` (scikit-learn's messages: NaN, wrong shapes,
            regression targets, ...), an `input_shape` that does not hold
            `n_features` values, a model whose output is not one logit per
            class, or a bad parameter.
        TypeError
            A parameter of the wrong type.
        xpcnn.BackendUnavailableError
            ``backend="cupy"`` without a usable GPU.
        """
        x_shape = _image_shape(X)
        X, y = self._validate(X, y, reset=True)
        classes, y = np.unique(y, return_inverse=True)
        epochs = self._epochs(len(X))
        self._initialize(classes, X.shape[1], x_shape)
        return self._train(X, y, epochs)

    def partial_fit(self, X, y, classes=None):
        """Train one epoch on (`X`, `y`), continuing from the previous call.

        The first call (on an unfitted estimator) builds the network and
        must name every class; later calls keep the weights and the
        optimizer's state, so a data set can be streamed in blocks.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), optional
            All the labels that will ever occur; required on the first call.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            As :meth:`fit`; also if `classes` is missing on the first call or
            differs from ``classes_`` later, or `y` holds a label outside it.
        """
        first = not hasattr(self, "model_")
        x_shape = _image_shape(X)
        X, y = self._validate(X, y, reset=first)
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit (all the labels that will occur)")
        known = unique_labels(classes) if first else self.classes_
        if not first and classes is not None and not np.array_equal(unique_labels(classes), known):
            raise ValueError(
                f"classes {unique_labels(classes).tolist()} are not the same as classes_ {known.tolist()} "
                "of the first call"
            )
        unknown = np.setdiff1d(y, known)
        if unknown.size:
            raise ValueError(f"y holds labels {unknown[:5].tolist()} that are not in classes {known.tolist()}")
        if first:
            self._initialize(known, X.shape[1], x_shape)
        return self._train(X, np.searchsorted(known, y), 1)

    # ------------------------------------------------------------------ inference
    def predict_proba(self, X):
        """Class probabilities (softmax of the network's logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            On the host, in the network's dtype; columns follow ``classes_``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        ValueError
            Bad `X`, or a number of features other than ``n_features_in_``.
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        logits = self.model_.predict(X.reshape((len(X),) + self.model_.input_shape))
        return backend.to_numpy(softmax(logits, axis=1))

    def predict(self, X):
        """The most probable class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]
