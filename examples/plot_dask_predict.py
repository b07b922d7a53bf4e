"""
Predicting over a Dask array
============================

:meth:`~xpcnn.model.Sequential.predict` takes a ``dask.array.Array`` as well
as a NumPy or CuPy array: it returns a lazy Dask array of the outputs, one
task per chunk of images, that you compute, reduce or store like any other
(the ``dask`` extra: ``pip install "xpcnn[dask]"``). Here a small CNN
trained on scikit-learn's digits classifies 20 copies of its test set, each
with more noise than the last, built lazily: the collection never exists
whole in memory. The threaded scheduler runs it; a
``dask.distributed`` cluster runs the same graph (see the end).
"""

import os
import tempfile
import time

import dask
import dask.array as da
import matplotlib.pyplot as plt
import numpy as np

from xpcnn import Adam
from xpcnn.data import load_digits
from xpcnn.models import digits_cnn

(x_train, y_train), (x_test, y_test) = load_digits()
model = digits_cnn(seed=0)
model.fit(x_train, y_train, epochs=8, batch_size=32, optimizer=Adam(2e-3), seed=0, progress=False)
print(f"clean test accuracy: {model.evaluate(x_test, y_test)['accuracy']:.1%}")

# %%
# A lazy collection of noisy images
# ---------------------------------
# Copy ``k`` of the 450 test images gets Gaussian noise of standard deviation
# ``levels[k]``, clipped to [0, 1]. Nothing is computed yet: ``images`` is a
# recipe of 20 chunks of 450 images.

copies = 20
levels = np.linspace(0.0, 0.6, copies, dtype=np.float32)
base = da.from_array(x_test, chunks=(len(x_test), 1, 8, 8))
sigma = da.from_array(np.repeat(levels, len(x_test)), chunks=len(x_test))[:, None, None, None]
noise = da.random.default_rng(0).standard_normal((copies * len(x_test), 1, 8, 8), chunks=(len(x_test), 1, 8, 8),
                                                 dtype=np.float32)
images = da.clip(da.concatenate([base] * copies) + sigma * noise, 0, 1)
print(images)

# %%
# Lazy predictions
# ----------------
# ``predict`` checks the shape against the layers at once, then adds one task
# per chunk; the model is a single key of the graph that every task reads, so
# a cluster sends the weights to each worker once. The result is chunked like
# the input along the first axis.

logits = model.predict(images, batch_size=256)
print(logits)
labels = np.tile(y_test, copies)
correct = logits.argmax(axis=1) == da.from_array(labels, chunks=len(x_test))
accuracy = correct.reshape(copies, len(x_test)).mean(axis=1)

t0 = time.perf_counter()
every = len(x_test) * 5  # the first image of copies 0, 5, 10 and 15
accuracy, sample, guess = dask.compute(accuracy, images[::every][:4], logits[::every][:4].argmax(axis=1),
                                       scheduler="threads")
seconds = time.perf_counter() - t0
print(f"{len(labels):,} images in {seconds:.2f} s ({len(labels) / seconds:,.0f} images/s, threaded scheduler)")

# %%
# Storing the outputs chunk by chunk
# ----------------------------------
# ``to_zarr`` (or ``da.store`` into an open ``.npy`` memory map) writes each
# chunk's outputs as its task finishes, so no process ever holds them all;
# ``xpcnn predict`` does this for files on disk.

with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "logits.zarr")
    logits.to_zarr(path, compute=True)
    stored = da.from_zarr(path)
    print(stored, "equal to the lazy result:", bool((stored[:450] == logits[:450]).all().compute()))

# %%
# Accuracy against noise
# ----------------------
# Right: the first test image at four noise levels, titled with the predicted
# class and, in brackets, the true one.

fig = plt.figure(figsize=(8, 3.6), layout="constrained")
grid = fig.add_gridspec(2, 4, width_ratios=[2.2, 1, 1, 1])
ax = fig.add_subplot(grid[:, 0])
ax.plot(levels, 100 * accuracy, "o-")
ax.set_xlabel("noise standard deviation")
ax.set_ylabel("test accuracy (%)")
ax.set_title(f"{len(labels):,} images, {logits.numblocks[0]} tasks")
ax.grid(alpha=0.3)
for i, img in enumerate(sample):
    a = fig.add_subplot(grid[i // 2, 1 + i % 2])
    a.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    a.set_title(f"noise {levels[5 * i]:.2f}: {guess[i]} ({y_test[0]})", fontsize=9)
    a.axis("off")
plt.show()

# %%
# On a cluster
# ------------
# The same graph runs on ``dask.distributed``: create a ``Client`` and
# ``compute`` uses it. On one machine::
#
#     from distributed import Client, LocalCluster
#
#     with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster):
#         accuracy = accuracy.compute()
#
# For files larger than memory, ``xpcnn predict MODEL INPUT --out OUTPUT``
# reads ``.npy`` or zarr chunk by chunk and writes the outputs the same way;
# the :doc:`scale-out guide <../guide/scale-out>` has the figures.
