"""
The tutorial's CNN on chelsea
=============================

The classic "CNN from scratch with NumPy" tutorial runs three layers on
scikit-image's ``chelsea`` photo: two 3x3 edge filters, then three random
5x5 filters, then one random 7x7 filter, each followed by ReLU and 2x2 max
pooling. :mod:`xpcnn.tutorial` keeps the tutorial's functions and layouts
(image ``(H, W)``, filter bank ``(F, K, K)`` or ``(F, K, K, C)``, feature
maps ``(H', W', F)``), vectorised and with the correct 'valid'
cross-correlation. This is what ``xpcnn demo`` computes and draws.
"""

import matplotlib.pyplot as plt
import numpy as np
import skimage.color
import skimage.data

from xpcnn import tutorial

img = skimage.color.rgb2gray(skimage.data.chelsea())  # (300, 451) float64 in [0, 1]

# %%
# The filter banks
# ----------------
# Layer 1 detects vertical and horizontal edges. Layers 2 and 3 draw their
# filters at random, as the tutorial does; their depth is the number of maps
# the layer before gives.

l1_filter = np.zeros((2, 3, 3))
l1_filter[0] = [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]
l1_filter[1] = [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]
rng = np.random.default_rng(0)
l2_filter = rng.random((3, 5, 5, 2))
l3_filter = rng.random((1, 7, 7, 3))

# %%
# One layer by hand, with the tutorial's own calls
# ------------------------------------------------
# Each function returns an array of its input's backend: give it a CuPy image
# and the same lines run on the GPU.

l1 = tutorial.pooling(tutorial.relu(tutorial.conv(img, l1_filter)), 2, 2)
print("layer 1 output:", l1.shape, l1.dtype)

# %%
# The three layers in one call
# ----------------------------
# :func:`~xpcnn.tutorial.pipeline` returns every stage's output and how long
# it took. The first call pays for one-time set-up (scratch buffers kept
# between calls), so the times printed are those of a second call.

banks = [l1_filter, l2_filter, l3_filter]
tutorial.pipeline(img, banks)
stages = tutorial.pipeline(img, banks)
for s in stages:
    print(f"layer {s.layer}  {s.stage:4}  {str(s.output.shape):14}  {s.ms:6.2f} ms")

# %%
# Every feature map
# -----------------
# The input, then one figure per layer: a row per filter, a column per stage
# (conv, ReLU, pool). Each map has its own colour bar, since their ranges
# differ a lot.

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.imshow(img, cmap="gray")
ax.set_title(f"input: chelsea, gray {img.shape}")
ax.set_axis_off()


def show_layer(layer):
    """Draw every feature map of one layer: filters down, stages across."""
    rows = [s for s in stages if s.layer == layer]
    n_maps = rows[0].output.shape[-1]
    fig, axes = plt.subplots(n_maps, 3, figsize=(10, 2.6 * n_maps + 0.5), squeeze=False)
    for f in range(n_maps):
        for ax, s in zip(axes[f], rows):
            im = ax.imshow(s.output[:, :, f], cmap="gray")
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set_title(f"{s.stage}, map {f}  {s.output.shape[:2]}", fontsize=9)
            ax.set_axis_off()
    fig.suptitle(f"layer {layer}")
    fig.tight_layout()


# %%
# Layer 1: the two edge filters.

show_layer(1)

# %%
# Layer 2: three random 5x5x2 filters.

show_layer(2)

# %%
# Layer 3: one random 7x7x3 filter.

show_layer(3)
plt.show()

# %%
# What differs from the tutorial's loops
# --------------------------------------
# The tutorial's loops shift each map by ``K // 2`` pixels, drop the last
# pooling window and pool across all maps at once; :mod:`xpcnn.tutorial`
# computes exact 'valid' cross-correlation (as
# ``scipy.signal.correlate2d(..., "valid")``) and floor-mode pooling per map.
# So layer 1's pooled maps are ``(149, 224)``, not the tutorial's ``(148, 224)``.
