"""
Training a CNN on the digits
============================

``xpcnn train``'s default run, in Python: scikit-learn's bundled 8x8 digits
(1,347 training and 450 test images, nothing to download), the small CNN of
:func:`xpcnn.models.digits_cnn`, Adam, and the loss and accuracy curves and
confusion matrix of the result. Training takes a few seconds on a CPU.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

from xpcnn import Adam
from xpcnn.backend import to_numpy
from xpcnn.data import load_digits
from xpcnn.models import digits_cnn

(x_train, y_train), (x_test, y_test) = load_digits()  # float32 (N, 1, 8, 8) in [0, 1], int64 labels
print("train", x_train.shape, x_train.dtype, " test", x_test.shape)

model = digits_cnn(seed=0)
print(model.summary())

# %%
# Training
# --------
# :meth:`~xpcnn.model.Sequential.fit` returns the history: loss and accuracy
# per epoch, on the training data and on ``validation_data``. The test set
# serves as validation here, as in ``xpcnn train``.

t0 = time.perf_counter()
history = model.fit(x_train, y_train, epochs=10, batch_size=32, optimizer=Adam(2e-3),
                    validation_data=(x_test, y_test), seed=0, progress=False)
print(f"training: {time.perf_counter() - t0:.1f} s")
print(model.evaluate(x_test, y_test))

epochs = np.arange(1, len(history["loss"]) + 1)
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
ax_loss.plot(epochs, history["loss"], label="training")
ax_loss.plot(epochs, history["val_loss"], label="test")
ax_loss.set_yscale("log")
ax_loss.set_xlabel("epoch")
ax_loss.set_ylabel("cross-entropy loss")
ax_loss.legend()
ax_acc.plot(epochs, history["accuracy"], label="training")
ax_acc.plot(epochs, history["val_accuracy"], label="test")
ax_acc.set_xlabel("epoch")
ax_acc.set_ylabel("accuracy")
ax_acc.legend()
fig.tight_layout()

# %%
# Confusion matrix
# ----------------
# Rows are the true digits, columns the predicted ones: every count off the
# diagonal is a mistake.

pred = to_numpy(model.predict(x_test)).argmax(axis=1)
matrix = np.bincount(10 * y_test + pred, minlength=100).reshape(10, 10)
print(f"test accuracy: {np.trace(matrix) / matrix.sum():.2%} ({np.trace(matrix)}/{matrix.sum()})")

fig, ax = plt.subplots(figsize=(5, 4.5))
ax.imshow(matrix, cmap="Blues")
for i in range(10):
    for j in range(10):
        if matrix[i, j]:
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
ax.set_xticks(range(10))
ax.set_yticks(range(10))
ax.set_xlabel("predicted digit")
ax.set_ylabel("true digit")
ax.set_title("digits test set")
fig.tight_layout()

# %%
# The mistakes
# ------------

wrong = np.flatnonzero(pred != y_test)
fig, axes = plt.subplots(1, max(len(wrong), 1), figsize=(1.3 * max(len(wrong), 1), 1.8), squeeze=False)
for ax, i in zip(axes[0], wrong):
    ax.imshow(x_test[i, 0], cmap="gray_r")
    ax.set_title(f"{y_test[i]} as {pred[i]}", fontsize=9)
for ax in axes[0]:
    ax.set_axis_off()
fig.tight_layout()
plt.show()
