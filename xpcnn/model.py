"""``Sequential``: a stack of layers that trains, predicts, evaluates, saves and loads.

A model lives on one backend, the one its parameters are on (the default
backend when the layers were built; see :meth:`Sequential.to`). ``fit``,
``predict`` and ``evaluate`` take NumPy or CuPy data and move it to the
model's backend and dtype once per call (one explicit host-to-device copy of
the data set on a GPU), never per batch.

Model files
-----------
:meth:`Sequential.save` writes one ``.npz`` archive: every parameter and
buffer as ``"<layer index>.<name>"`` (``"0.weight"``, ``"0.bias"``, ...:
PyTorch's ``state_dict`` names) and the architecture as JSON text in the
uint8 array ``"__xpcnn__"``. :meth:`Sequential.load` never unpickles and
builds only the layer types of :data:`xpcnn.layers.REGISTRY`, so a file can
never run code. It treats the file as hostile: the zip directory's sizes,
the JSON's implied shapes and each ``.npy`` header are checked against one
another before any array is read or any weight allocated (layers are built
with placeholder parameters), within :data:`MAX_INFLATION`,
:data:`MAX_ARCHITECTURE_BYTES` and :data:`MAX_SAMPLE_VALUES`; any other
file raises ``ValueError``. :meth:`Sequential.save` checks what ``load``
will check, writes a temporary file in the target's folder and renames it
over the target, so an interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
import zipfile
import zlib
from typing import Any

from . import backend, data, scaleout
from . import layers as layers_module
from .backend import Array, get_array_module
from .functional import check_labels
from .functional._utils import int_arg as _int_arg
from .functional._utils import seed_arg
from .layers import REGISTRY, Conv2D, Layer
from .losses import Loss, SoftmaxCrossEntropy
from .optim import Adam, Optimizer

__all__ = ["FORMAT", "FORMAT_VERSION", "Sequential"]

#: Value of the ``"format"`` field of a model file's architecture.
FORMAT = "xpcnn.Sequential"
#: Version of the model file layout this code writes and reads.
FORMAT_VERSION = 1
_ARCH_KEY = "__xpcnn__"
# What reading a damaged or foreign archive can raise (zip, zlib; RuntimeError: an encrypted entry).
_READ_ERRORS = (EOFError, OSError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
                OverflowError, MemoryError)


def _format_shape(shape) -> str:
    return "(None, " + ", ".join(str(s) for s in shape) + ")" if shape is not None else "?"


class Sequential:
    """A stack of layers applied one after the other.

    Parameters
    ----------
    *layers : Layer
        The layers, first to last (a single list or tuple of layers works too).
    input_shape : tuple of int, optional
        Per-sample input shape, e.g. ``(1, 8, 8)``, without the batch size.
        It is checked against the layers at once and lets :meth:`summary`
        show output shapes before any data was seen; ``fit`` records it from
        the data otherwise. It is stored in model files.

    Raises
    ------
    TypeError
        If an argument is not a :class:`~xpcnn.layers.Layer`.
    ValueError
        If `input_shape` does not fit the layers.

    Examples
    --------
    >>> from xpcnn.layers import Conv2D, ReLU, MaxPool2D, Flatten, Dense
    >>> model = Sequential(Conv2D(1, 8, 3, padding=1, seed=0), ReLU(), MaxPool2D(2),
    ...                    Flatten(), Dense(8 * 4 * 4, 10, seed=1), input_shape=(1, 8, 8))
    >>> model.num_params()
    1370
    """

    def __init__(self, *layers: Layer, input_shape: tuple | None = None) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be an xpcnn.layers.Layer, got {type(layer).__name__}")
        self.layers: list[Layer] = list(layers)
        self.input_shape: tuple | None = None
        if input_shape is not None:
            if not isinstance(input_shape, (tuple, list)):
                raise TypeError(
                    f"input_shape must be a tuple of ints without the batch size, e.g. (1, 8, 8), got {input_shape!r}"
                )
            shape = tuple(_int_arg(s, "input_shape entries", 1) for s in input_shape)
            self._shapes(shape)
            self.input_shape = shape

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = ",\n".join(f"    {layer!r}" for layer in self.layers)
        return f"Sequential(\n{inner}\n)" if self.layers else "Sequential()"

    def forward(self, x: Array, training: bool = False) -> Array:
        """Run the layers on a batch `x` (on the model's backend and dtype).

        With ``training=True`` the layers keep what :meth:`backward` needs and
        dropout and batch normalisation use their training behaviour.
        """
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def backward(self, dy: Array, input_grad: bool = True) -> Array | None:
        """Back-propagate `dy` (gradient of the loss w.r.t. the output); fills every ``layer.grads``.

        Returns the gradient with respect to the model's input; with
        ``input_grad=False`` (what ``fit`` uses), a first ``Conv2D`` layer
        skips computing it and ``None`` is returned.
        """
        first = self.layers[0] if self.layers else None
        for layer in reversed(self.layers):
            if layer is first and not input_grad and isinstance(layer, Conv2D):
                layer.backward(dy, need_dx=False)
                return None
            dy = layer.backward(dy)
        return dy

    def parameters(self) -> list[tuple[Layer, str]]:
        """``[(layer, name), ...]`` for every trainable parameter, first layer first.

        ``layer.params[name]`` is the array and ``layer.grads[name]`` its
        gradient; optimizers use this list.
        """
        return [pair for layer in self.layers for pair in layer.parameters()]

    def num_params(self) -> int:
        """Number of trainable scalars."""
        return sum(layer.num_params() for layer in self.layers)

    def _arrays(self):
        for layer in self.layers:
            yield from layer.params.values()
            yield from layer.buffers.values()

    @property
    def backend(self) -> str | None:
        """``"numpy"`` or ``"cupy"``: where the parameters are (None for a model without any)."""
        for a in self._arrays():
            return backend.name_of(get_array_module(a))
        return None

    @property
    def dtype(self):
        """The parameters' dtype (None for a model without any)."""
        for a in self._arrays():
            return a.dtype
        return None

    def to(self, name: str) -> Sequential:
        """Move every parameter and buffer to backend `name` (``"numpy"`` or ``"cupy"``); returns self.

        Gradients and cached activations are dropped. An optimizer's state
        follows the parameters at its next step.

        Raises
        ------
        ValueError, BackendUnavailableError
            As :func:`xpcnn.backend.module`.
        """
        backend.module(name)
        for layer in self.layers:
            layer.to(name)
        return self

    def _clear_caches(self) -> None:
        for layer in self.layers:
            layer._cache = None

    # ------------------------------------------------------------------ shapes
    def _shapes(self, input_shape: tuple) -> list[tuple]:
        """Per-sample output shape of every layer; ValueError naming the first layer that does not fit."""
        shapes, shape = [], tuple(int(s) for s in input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except ValueError as exc:
                raise ValueError(f"per-sample input shape {tuple(input_shape)} does not fit layer {i}: {exc}") from None
            shapes.append(shape)
        return shapes

    def output_shape(self, input_shape: tuple | None = None) -> tuple:
        """Per-sample output shape for a per-sample input shape (default: the recorded one)."""
        shape = self.input_shape if input_shape is None else tuple(input_shape)
        if shape is None:
            raise ValueError("no input shape: pass one, or build the model with Sequential(..., input_shape=...)")
        shapes = self._shapes(shape)
        return shapes[-1] if shapes else tuple(shape)

    def summary(self, input_shape: tuple | None = None) -> str:
        """A Keras-like table: layer, output shape, parameter count, and the totals.

        Parameters
        ----------
        input_shape : tuple of int, optional
            Per-sample input shape; defaults to the model's ``input_shape``
            (given at construction or recorded by ``fit``). Without either,
            the output shapes show as ``?``.

        Returns
        -------
        str
            The table; ``print(model.summary())`` shows it.
        """
        shape = self.input_shape if input_shape is None else tuple(input_shape)
        shapes = self._shapes(shape) if shape is not None else [None] * len(self.layers)
        rows = [("#", "Layer", "Output shape", "Params")]
        for i, (layer, out) in enumerate(zip(self.layers, shapes)):
            rows.append((str(i), repr(layer), _format_shape(out), f"{layer.num_params():,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]

        def fmt(r):
            return f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"

        rule = "-" * len(fmt(rows[0]))
        lines = ["Input shape: " + _format_shape(shape), rule, fmt(rows[0]), rule]
        lines += [fmt(r) for r in rows[1:]]
        lines += [rule, f"Total params: {self.num_params():,}"]
        nbuf = sum(int(b.size) for layer in self.layers for b in layer.buffers.values())
        if nbuf:
            lines.append(f"Non-trainable values (buffers): {nbuf:,}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ data
    def _inputs(self, x: Any, name: str = "x") -> Array:
        """Check `x` against the layers, then put it on the model's backend and dtype."""
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(x).__name__}")
        if x.dtype.kind != "f":
            raise TypeError(
                f"{name} must be a float array (e.g. images scaled to [0, 1]), got dtype {x.dtype}"
            )
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one sample (N, ...), got shape {tuple(x.shape)}")
        sample = tuple(int(s) for s in x.shape[1:])
        if self.input_shape is not None and sample != self.input_shape:
            raise ValueError(
                f"{name}: the model expects per-sample input shape {self.input_shape}, "
                f"got {sample} ({name}.shape = {tuple(x.shape)})"
            )
        try:
            self._shapes(sample)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        target = self.backend or backend.name_of(get_array_module(x))
        return backend.asarray(x, target, dtype=self.dtype or x.dtype)

    def _targets(self, y: Any, x: Array, loss: Loss, name: str = "y") -> Array:
        """Check `y` (labels or regression targets) for inputs `x`; put it beside `x`."""
        if not hasattr(y, "shape") or not hasattr(y, "dtype"):
            raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(y).__name__}")
        if y.ndim < 1:
            raise ValueError(f"{name} must hold one label or target per sample, shape (N, ...), got a 0-d array")
        if len(y) != len(x):
            raise ValueError(f"{name} has {len(y)} samples but the inputs have {len(x)}")
        out = self._shapes(tuple(x.shape[1:]))
        out = out[-1] if out else tuple(x.shape[1:])
        target = backend.name_of(get_array_module(x))
        if loss.classification:
            if len(out) != 1:
                raise ValueError(f"{loss!r} needs per-sample outputs (classes,), the model gives {out}")
            y = backend.asarray(y, target)
            try:
                check_labels(y, out[0])  # one read of min/max, before any step
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{name}: {exc}") from None
            return y
        if tuple(y.shape[1:]) != out:
            raise ValueError(f"{name} must have per-sample shape {out} (the model's output), got {tuple(y.shape[1:])}")
        return backend.asarray(y, target, dtype=x.dtype)

    # ------------------------------------------------------------------ inference
    def predict(self, x: Any, batch_size: int = 256) -> Array:
        """The last layer's raw output (logits for a classifier), computed batch by batch.

        Nothing is cached for a backward pass (inference behaviour of every
        layer).

        Parameters
        ----------
        x : array, shape (N, ...) float
            Inputs; moved to the model's backend and dtype. A
            ``dask.array.Array`` gives a lazy Dask array of the outputs
            instead (see :func:`xpcnn.scaleout.predict`; ``dask`` extra).
        batch_size : int, default 256

        Returns
        -------
        array, shape (N, ...) on the model's backend

        Raises
        ------
        TypeError
            If `x` is not a float array.
        ValueError
            If `x` does not fit the layers (the message names the expected
            and the actual shape) or `batch_size` < 1.
        """
        if scaleout.is_dask_array(x):
            return scaleout.predict(self, x, batch_size=batch_size)
        batch_size = _int_arg(batch_size, "batch_size", 1)
        x = self._inputs(x)
        xp = get_array_module(x)
        outs = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return outs[0] if len(outs) == 1 else xp.concatenate(outs)

    def evaluate(self, x: Any, y: Any, batch_size: int = 256, loss: Loss | None = None) -> dict:
        """Mean loss (and accuracy for a classifier) over a data set.

        Parameters
        ----------
        x : array, shape (N, ...) float
        y : array, shape (N,) int class ids, or the output's shape for a regression loss
        batch_size : int, default 256
        loss : Loss, optional
            Defaults to :class:`~xpcnn.losses.SoftmaxCrossEntropy`.

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}`` (accuracy in [0, 1], only
            for classification losses).

        Raises
        ------
        TypeError, ValueError
            Bad arrays or shapes, or labels outside ``[0, classes)``.
        """
        batch_size = _int_arg(batch_size, "batch_size", 1)
        loss = SoftmaxCrossEntropy() if loss is None else loss
        x = self._inputs(x)
        y = self._targets(y, x, loss)
        return self._evaluate(x, y, batch_size, loss)

    def _evaluate(self, x, y, batch_size, loss) -> dict:
        xp = get_array_module(x)
        total = xp.zeros((), dtype="float64")
        correct = xp.zeros((), dtype="int64")
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            out = self.forward(xb)
            total += loss(out, yb, check_range=False) * len(xb)
            if loss.classification:
                correct += (out.argmax(axis=1) == yb).sum()
        result = {"loss": float(total) / len(x)}
        if loss.classification:
            result["accuracy"] = int(correct) / len(x)
        return result

    # ------------------------------------------------------------------ training
    def fit(self, x, y, epochs=1, batch_size=32, optimizer: Optimizer | None = None, loss: Loss | None = None,
            validation_data=None, shuffle=True, seed=None, progress=True, scheduler=None) -> dict:
        """Train with mini-batches; returns the per-epoch history.

        Every argument is checked before the first step: the input shape
        against the layers, the labels against ``[0, classes)``.

        Parameters
        ----------
        x : array, shape (N, ...) float
            Training inputs (NumPy or CuPy); moved once to the model's backend.
        y : array, shape (N,) int class ids (or targets for a regression loss)
        epochs : int, default 1
        batch_size : int, default 32
        optimizer : Optimizer, optional
            Defaults to ``Adam()``. Its state carries over between calls.
        loss : Loss, optional
            Defaults to ``SoftmaxCrossEntropy()``.
        validation_data : (x_val, y_val), optional
            Evaluated at the end of every epoch.
        shuffle : bool, default True
            Visit the training samples in a new random order every epoch.
        seed : int, generator or None
            Seed of the shuffling (the weights have their own seeds, given
            to the layers): an int, None, or a NumPy or CuPy generator (a
            CuPy one draws one number that seeds the host's shuffling).
        progress : bool, default True
            Show a tqdm progress bar per epoch with the running loss and
            accuracy (skipped with a warning if tqdm is not installed).
        scheduler : StepLR, optional
            A learning-rate schedule of `optimizer`; its ``step()`` is called
            at the end of every epoch.

        Returns
        -------
        dict of lists
            ``"loss"`` and ``"accuracy"`` (training, averaged over the
            epoch's batches as they were seen), and ``"val_loss"``,
            ``"val_accuracy"`` when `validation_data` is given; one entry
            per epoch. ``accuracy`` entries exist only for classification
            losses.

        Raises
        ------
        TypeError, ValueError
            Bad arguments, arrays, shapes or labels (before training starts).
        FloatingPointError
            If a batch gives a non-finite loss or gradient. The message names
            the epoch and the batch; the weights are those after the last
            finite step (the failing batch is not applied, and batch
            normalisation's running statistics are restored).

        Notes
        -----
        Losses and accuracies are summed on the device and read once per
        epoch. The finiteness check reads one boolean per batch (a device
        synchronisation on CuPy, free on NumPy); it is what lets a NaN stop
        training before it reaches the weights. The progress bar reads the
        running loss at most twice a second.
        """
        epochs = _int_arg(epochs, "epochs", 0)
        batch_size = _int_arg(batch_size, "batch_size", 1)
        optimizer = Adam() if optimizer is None else optimizer
        loss = SoftmaxCrossEntropy() if loss is None else loss
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an xpcnn.optim.Optimizer, got {type(optimizer).__name__}")
        if not isinstance(loss, Loss):
            raise TypeError(f"loss must be an xpcnn.losses.Loss, got {type(loss).__name__}")
        if scheduler is not None and getattr(scheduler, "optimizer", None) is not optimizer:
            raise ValueError(f"scheduler {scheduler!r} must schedule the optimizer given to fit ({optimizer!r})")
        x = self._inputs(x)
        y = self._targets(y, x, loss)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (list, tuple)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (x_val, y_val)")
            xv = self._inputs(validation_data[0], "validation x")
            val = (xv, self._targets(validation_data[1], xv, loss, "validation y"))
        if self.input_shape is None:
            self.input_shape = tuple(int(s) for s in x.shape[1:])

        keys = ["loss"] + (["accuracy"] if loss.classification else [])
        history: dict[str, list[float]] = {k: [] for k in keys}
        if val is not None:
            history.update({f"val_{k}": [] for k in keys})
        order = _host_generator(seed)  # one permutation per epoch, drawn on the host
        tqdm = _tqdm() if progress else None
        n, n_batches = len(x), math.ceil(len(x) / batch_size)
        try:
            for epoch in range(1, epochs + 1):
                bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=True) if tqdm else None
                try:
                    stats = self._epoch(x, y, batch_size, optimizer, loss, shuffle, order, epoch, bar)
                    record = {"loss": stats[0] / n}
                    if loss.classification:
                        record["accuracy"] = stats[1] / n
                    if val is not None:
                        record.update({f"val_{k}": v for k, v in self._evaluate(*val, 256, loss).items()})
                    for k, v in record.items():
                        history[k].append(v)
                    if scheduler is not None:
                        scheduler.step()
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.4f}" for k, v in record.items()}, refresh=False)
                finally:
                    if bar is not None:
                        bar.close()
        finally:
            self._clear_caches()
        return history

    def _epoch(self, x, y, batch_size, optimizer, loss, shuffle, order, epoch, bar) -> tuple[float, int]:
        """One pass over the data; returns (sum of per-sample losses, correct count)."""
        xp = get_array_module(x)
        total = xp.zeros((), dtype="float64")
        correct = xp.zeros((), dtype="int64")
        seen, shown = 0, time.monotonic()
        buffered = [layer for layer in self.layers if layer.buffers]
        n_batches = math.ceil(len(x) / batch_size)
        for b, (xb, yb) in enumerate(data.iterate_minibatches(x, y, batch_size, shuffle=shuffle, seed=order), 1):
            saved = [{k: v.copy() for k, v in layer.buffers.items()} for layer in buffered]
            out = self.forward(xb, training=True)
            value = loss(out, yb, check_range=False)
            self.backward(loss.backward(), input_grad=False)
            if not self._finite(value, xp):
                for layer, bufs in zip(buffered, saved):
                    layer.buffers.update(bufs)
                what = "loss" if not bool(xp.isfinite(value)) else "gradient"
                raise FloatingPointError(
                    f"non-finite {what} at epoch {epoch}, batch {b} of {n_batches} (loss {float(value)!r}); "
                    "the weights are those after the last finite step. Try a smaller learning rate."
                )
            optimizer.step(self)
            total += value * len(xb)
            if loss.classification:
                correct += (out.argmax(axis=1) == yb).sum()
            seen += len(xb)
            if bar is not None:
                bar.update(1)
                now = time.monotonic()
                if now - shown > 0.5:
                    shown = now
                    post = {"loss": f"{float(total) / seen:.4f}"}
                    if loss.classification:
                        post["accuracy"] = f"{int(correct) / seen:.4f}"
                    bar.set_postfix(post, refresh=False)
        return float(total), int(correct)

    def _finite(self, value: Array, xp) -> bool:
        """Whether the loss and every gradient are finite (one boolean read from the device).

        One pass over all the values at once: half the time of a sum per
        gradient on LeNet-5, and no sum that a large finite gradient could
        overflow.
        """
        values = [value.reshape(1)] + [layer.grads[name].reshape(-1) for layer, name in self.parameters()]
        return bool(xp.isfinite(xp.concatenate(values)).all())

    # ------------------------------------------------------------------ files
    def _architecture(self) -> dict:
        layers = []
        for i, layer in enumerate(self.layers):
            name = type(layer).__name__
            if REGISTRY.get(name) is not type(layer):
                raise TypeError(
                    f"cannot save layer {i} ({name}): only the layer types of xpcnn.layers.REGISTRY can be saved"
                )
            layers.append({"type": name, "config": layer.get_config()})
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "layers": layers,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to `path` (an ``.npz`` archive; the name is used as given).

        Parameters and buffers are copied to the host. The archive is written
        to a temporary file in the same folder, flushed to disk and renamed
        over `path`: an interrupted save never leaves a half-written file or
        destroys an existing model.

        Only what :meth:`load` accepts is written: the architecture and every
        array are checked as ``load`` will check them, before the file is
        touched.

        Raises
        ------
        TypeError
            If a layer is not one of the registered types, or a parameter or
            buffer is not an array.
        ValueError
            If ``load`` would refuse the file: a parameter or buffer whose
            shape or dtype is not the one its layer's arguments imply (e.g.
            a float64 weight in a float32 layer), a missing or extra one,
            arguments that do not round-trip through JSON, or a sample larger
            than :data:`MAX_SAMPLE_VALUES`.
        OSError
            If the folder is missing or not writable.
        """
        host = backend.module("numpy")
        text = json.dumps(self._architecture())
        try:
            twins, _ = _blueprint(json.loads(text))
        except ValueError as exc:
            raise ValueError(f"cannot save, load would refuse the file: {exc}") from None
        arrays = {_ARCH_KEY: host.frombuffer(text.encode("utf-8"), dtype=host.uint8)}
        for i, (layer, twin) in enumerate(zip(self.layers, twins)):
            for kind, group, expected in (("params", layer.params, twin.params), ("buffers", layer.buffers, twin.buffers)):
                if set(group) != set(expected):
                    raise ValueError(
                        f"cannot save layer {i} ({layer!r}): its {kind} are {sorted(group)}, "
                        f"but its arguments imply {sorted(expected)}"
                    )
                for name, want in expected.items():
                    value = group[name]
                    where = f"cannot save layer {i} ({layer!r}): {kind}[{name!r}]"
                    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
                        raise TypeError(f"{where} must be a NumPy or CuPy array, got {type(value).__name__}")
                    if tuple(value.shape) != tuple(want.shape):
                        raise ValueError(f"{where} has shape {tuple(value.shape)}, but the layer needs {tuple(want.shape)}")
                    if value.dtype != want.dtype:
                        raise ValueError(
                            f"{where} has dtype {value.dtype}, but the layer's dtype is {want.dtype}; "
                            f"cast it with .astype({want.dtype.name!r})"
                        )
                    arrays[f"{i}.{name}"] = backend.to_numpy(value)
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                host.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it a normal file's mode
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> Sequential:
        """Read a model written by :meth:`save`; its arrays go to the default backend.

        The file is treated as hostile. Nothing in it is executed: arrays are
        read from their ``.npy`` headers and bytes (never unpickled) and only
        layer types of :data:`xpcnn.layers.REGISTRY` are built, from JSON
        arguments. Time and memory stay proportional to the file's size:
        every size the archive, the JSON or an array header claims is checked
        against the others before anything is allocated (see the module
        docstring).

        Raises
        ------
        FileNotFoundError, PermissionError
            If the file cannot be opened.
        ValueError
            For anything else that is wrong with the file: not an ``.npz``,
            truncated or corrupt, no architecture entry, foreign format or
            newer version, an unknown layer type or bad layer arguments,
            pickled objects, an array missing, unexpected, or of the wrong
            shape or dtype, sizes that disagree or exceed the limits. The
            message names the file and the problem.
        """
        path = os.fspath(path)
        with open(path, "rb") as fh:
            # Only zip archives reach the reader: anything else is refused
            # here, so no other loader (or unpickler) ever looks at the bytes.
            head = fh.read(6)
            fh.seek(0)
            if head.startswith(b"\x93NUMPY"):
                raise ValueError(f"{path}: a single .npy array, not an xpcnn model file (an .npz archive)")
            if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
                what = "an empty file" if not head else f"it starts with {head!r}"
                raise ValueError(f"{path}: not an xpcnn model file: not a zip (.npz) archive ({what})")
            try:
                with zipfile.ZipFile(fh) as archive:
                    return _read_model(cls, archive, os.fstat(fh.fileno()).st_size)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            except RecursionError:
                raise ValueError(f"{path}: architecture nested too deeply") from None
            except _READ_ERRORS as exc:
                raise ValueError(f"{path}: not a readable xpcnn model file: {exc}") from None


#: Largest architecture (JSON) entry a model file may hold, in bytes.
MAX_ARCHITECTURE_BYTES = 2**20
#: How many times its stored size a compressed entry may inflate (float
#: weights deflate to 80-95%; only runs of equal values compress further).
MAX_INFLATION = 100
#: Largest number of values one sample may occupy in any layer of a loaded
#: or saved model with a recorded ``input_shape``: its output, its padded
#: input, its windows (64 MiB of float32). Raise it to use larger models.
MAX_SAMPLE_VALUES = 2**24
_MAX_NDIM = 31  # per-sample dims: NumPy arrays have at most 32 dims with the batch
_VALUE_TYPES = (str, int, float, bool, type(None))


def _short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _members(archive: zipfile.ZipFile, file_size: int) -> dict:
    """``{key: ZipInfo}`` of the ``KEY.npy`` entries, their declared sizes checked against the file."""
    members, total = {}, 0
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise ValueError(f"entry {name!r} is not a .npy array")
        if name[:-4] in members:
            raise ValueError(f"entry {name!r} appears twice")
        total += info.compress_size
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise ValueError(f"entry {name!r} is stored uncompressed but claims {info.file_size} bytes in {info.compress_size}")
        if info.file_size > MAX_INFLATION * info.compress_size + 2**16:
            raise ValueError(
                f"entry {name!r} claims to inflate from {info.compress_size} to {info.file_size} bytes, "
                f"more than {MAX_INFLATION} times (a zip bomb?)"
            )
        members[name[:-4]] = info
    if total > file_size:
        raise ValueError(f"entries claim {total} bytes of data but the file has {file_size}")
    return members


def _npy_header(archive: zipfile.ZipFile, key: str, info: zipfile.ZipInfo) -> tuple:
    """``(shape, fortran_order, dtype)`` of an entry, read from its header only; sizes checked."""
    npformat = backend.module("numpy").lib.format
    with archive.open(info) as fh:
        try:
            version = npformat.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(fh)
            else:
                raise ValueError(f".npy format version {version} is not supported")
        except _READ_ERRORS:  # the archive itself is damaged: reported as such by load
            raise
        except Exception as exc:  # noqa: BLE001 -- NumPy's header parser (tokenize, literal_eval) raises many kinds
            raise ValueError(f"entry {key!r}: not a valid .npy array: {type(exc).__name__}: {exc}") from None
        header = fh.tell()
    if dtype.hasobject:
        raise ValueError(
            f"entry {key!r} holds pickled Python objects; model files never do, "
            "so it was refused without being unpickled"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if header + nbytes != info.file_size:
        raise ValueError(
            f"entry {key!r}: its header claims shape {shape} of {dtype} ({nbytes} bytes), "
            f"but the entry holds {info.file_size - header} bytes of data"
        )
    return shape, fortran, dtype


def _npy_data(archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: tuple):
    """The entry's array (native byte order, writeable), once its header has been checked."""
    host = backend.module("numpy")
    shape, fortran, dtype = header
    with archive.open(info) as fh:
        fh.seek(info.file_size - math.prod(shape) * dtype.itemsize)
        data = fh.read()  # exactly the checked size; reading to the end checks the CRC
    flat = host.frombuffer(data, dtype=dtype)
    array = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    return array.astype(dtype.newbyteorder("="), order="C", copy=True)


def _architecture(archive: zipfile.ZipFile, members: dict) -> dict:
    info = members.pop(_ARCH_KEY, None)
    if info is None:
        raise ValueError(f"no architecture entry {_ARCH_KEY!r} (entries: {', '.join(list(members)[:8])})")
    if info.file_size > MAX_ARCHITECTURE_BYTES:
        raise ValueError(f"architecture entry of {info.file_size} bytes, more than {MAX_ARCHITECTURE_BYTES}")
    header = _npy_header(archive, _ARCH_KEY, info)
    shape, _, dtype = header
    if dtype.kind != "u" or dtype.itemsize != 1 or len(shape) != 1:
        raise ValueError(f"architecture entry must be 1-D uint8 JSON text, got {dtype} {shape}")
    text = _npy_data(archive, info, header).tobytes()
    try:
        arch = json.loads(text.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"architecture entry is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError("architecture entry is JSON nested too deeply") from None
    return arch


def _blueprint(arch: Any) -> tuple[list, Any]:
    """Layers built from an architecture dict with placeholder parameters (no memory, no random draws).

    Returns ``(layers, input_shape)``; checks everything but the arrays.
    """
    if not isinstance(arch, dict) or arch.get("format") != FORMAT:
        found = arch.get("format") if isinstance(arch, dict) else type(arch).__name__
        raise ValueError(f"not an xpcnn model: format {_short_repr(found)}, expected {FORMAT!r}")
    version = arch.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"bad format version {_short_repr(version)}")
    if version > FORMAT_VERSION:
        raise ValueError(f"format version {version} is newer than this xpcnn reads ({FORMAT_VERSION}); upgrade xpcnn")
    specs = arch.get("layers")
    if not isinstance(specs, list):
        raise ValueError(f"architecture 'layers' must be a list, got {type(specs).__name__}")
    layers = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) or not isinstance(spec.get("config", {}), dict):
            raise ValueError(f"layer {i}: expected {{'type': str, 'config': dict}}, got {_short_repr(spec)}")
        name, config = spec["type"], spec.get("config", {})
        layer_cls = REGISTRY.get(name)
        if layer_cls is None:
            raise ValueError(
                f"layer {i}: unknown layer type {_short_repr(name)}; known types: {', '.join(sorted(REGISTRY))}"
            )
        for key, value in config.items():  # scalars or flat lists: nothing nested, nothing huge to print
            if not isinstance(value, _VALUE_TYPES) and not (
                isinstance(value, list) and len(value) <= 4 and all(isinstance(v, _VALUE_TYPES) for v in value)
            ):
                raise ValueError(f"layer {i} ({name}): bad arguments: {key!r} = {_short_repr(value)}")
        try:
            with layers_module._shapes_only():
                layers.append(layer_cls(**config))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"layer {i} ({name}): bad arguments {_short_repr(config)}: {exc}") from None
    input_shape = arch.get("input_shape")
    if input_shape is not None and (
        not isinstance(input_shape, list) or len(input_shape) > _MAX_NDIM
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_shape)
    ):
        raise ValueError(f"bad input_shape {_short_repr(input_shape)}")
    if input_shape is not None:
        _check_sample_size(layers, tuple(input_shape))
    return layers, input_shape


def _check_sample_size(layers: list, input_shape: tuple) -> None:
    """ValueError if one sample takes more than MAX_SAMPLE_VALUES values in some layer."""
    shape = input_shape
    for i, layer in enumerate([None, *layers]):
        if layer is not None:
            try:
                out = tuple(layer.output_shape(shape))
            except ValueError as exc:
                raise ValueError(f"per-sample input shape {input_shape} does not fit layer {i - 1}: {exc}") from None
        else:
            out = shape
        values = math.prod(out)
        if hasattr(layer, "kernel_size"):  # windows: the padded input and the unfolded windows
            (KH, KW), (PH, PW) = layer.kernel_size, layer.padding
            values = max(values, shape[0] * (shape[1] + 2 * PH) * (shape[2] + 2 * PW), shape[0] * KH * KW * out[1] * out[2])
        if values > MAX_SAMPLE_VALUES:
            where = "the input" if layer is None else f"layer {i - 1} ({layer!r})"
            raise ValueError(
                f"one sample of shape {input_shape} takes {values:,} values in {where}, more than "
                f"xpcnn.model.MAX_SAMPLE_VALUES = {MAX_SAMPLE_VALUES:,}"
            )
        shape = out


def _read_model(cls, archive: zipfile.ZipFile, file_size: int) -> Sequential:
    members = _members(archive, file_size)
    layers, input_shape = _blueprint(_architecture(archive, members))
    wanted = {}  # entry -> (layer index, group dict, name, placeholder)
    for i, layer in enumerate(layers):
        for group in (layer.params, layer.buffers):
            for key, expected in group.items():
                entry = f"{i}.{key}"
                if entry not in members:
                    raise ValueError(
                        f"missing array {entry!r} ({type(layer).__name__} {key}, shape {tuple(expected.shape)})"
                    )
                wanted[entry] = (i, group, key, expected)
    unexpected = sorted(set(members) - set(wanted))
    if unexpected:
        raise ValueError(f"unexpected arrays {_short_repr(unexpected)} that no layer uses")
    headers = {}
    for entry, (i, _, _, expected) in wanted.items():  # every header before any data
        shape, fortran, dtype = headers[entry] = _npy_header(archive, entry, members[entry])
        what = type(layers[i]).__name__
        if tuple(shape) != tuple(expected.shape):
            raise ValueError(f"array {entry!r} has shape {tuple(shape)}, but {what} expects {tuple(expected.shape)}")
        if dtype.newbyteorder("=") != expected.dtype:
            raise ValueError(f"array {entry!r} has dtype {dtype}, but {what} expects {expected.dtype}")
    for entry, (_, group, key, _) in wanted.items():
        group[key] = backend.asarray(_npy_data(archive, members[entry], headers[entry]))
    return cls(*layers, input_shape=input_shape)


def _host_generator(seed: Any):
    """A NumPy generator for `seed`: None, an int, a NumPy generator, or a CuPy one (which seeds a new one)."""
    host = backend.module("numpy")
    if isinstance(seed, host.random.Generator):
        return seed
    seed = seed_arg(seed)
    if hasattr(seed, "integers"):  # a device generator: one number seeds the host's
        return host.random.default_rng(int(seed.integers(0, 2**63 - 1)))
    return host.random.default_rng(seed)


def _tqdm():
    try:
        from tqdm import tqdm  # noqa: PLC0415 -- lazy: import xpcnn must not import tqdm
    except ImportError:
        warnings.warn("tqdm is not installed, so fit shows no progress bar (pip install tqdm)", stacklevel=3)
        return None
    return tqdm
