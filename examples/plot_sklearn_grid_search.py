"""
Grid search with scikit-learn
=============================

:class:`xpcnn.sklearn.CNNClassifier` is a scikit-learn estimator, so
scikit-learn's own tools tune it. Here :class:`~sklearn.model_selection.GridSearchCV`
tries three learning rates and two training lengths of the default CNN on
scikit-learn's 8x8 digits, with 3-fold cross-validation in two processes,
then the best setting is scored on a held-out test set. The digits come as
rows of 64 pixels; ``input_shape=(1, 8, 8)`` makes each row an image.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import ConfusionMatrixDisplay
from sklearn.model_selection import GridSearchCV, train_test_split

from xpcnn.sklearn import CNNClassifier

X, y = load_digits(return_X_y=True)
X = X / 16  # pixels 0..16 -> [0, 1]
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)

# %%
# The search
# ----------
# Each of the 6 settings is trained 3 times (once per fold) and the best one
# once more on the whole training set. ``random_state`` fixes the initial
# weights and the shuffling, so the scores do not depend on which process ran
# which fit.

grid = {"lr": [3e-4, 2e-3, 1e-2], "epochs": [2, 6]}
search = GridSearchCV(CNNClassifier(input_shape=(1, 8, 8), random_state=0), grid, cv=3, n_jobs=2)
t0 = time.perf_counter()
search.fit(X_train, y_train)
print(f"grid search: {time.perf_counter() - t0:.1f} s")
print("best setting:", search.best_params_, f"cross-validated accuracy {search.best_score_:.4f}")
print(f"test accuracy of the refitted best: {search.score(X_test, y_test):.4f}")

# %%
# The scores, and the best model's mistakes
# -----------------------------------------
# Too small a learning rate needs more epochs; the refitted best model is an
# ordinary fitted estimator (``search.best_estimator_``, its network in
# ``model_``).

scores = search.cv_results_["mean_test_score"].reshape(len(grid["lr"]), len(grid["epochs"]))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
image = ax1.imshow(scores, cmap="viridis", vmin=scores.min(), vmax=1.0)
ax1.set(xticks=range(len(grid["epochs"])), xticklabels=grid["epochs"], xlabel="epochs",
        yticks=range(len(grid["lr"])), yticklabels=grid["lr"], ylabel="learning rate (Adam)",
        title="mean 3-fold accuracy")
for (i, j), value in np.ndenumerate(scores):
    ax1.text(j, i, f"{value:.3f}", ha="center", va="center", color="w" if value < scores.mean() else "k")
fig.colorbar(image, ax=ax1)
ConfusionMatrixDisplay.from_estimator(search.best_estimator_, X_test, y_test, ax=ax2, colorbar=False)
ax2.set_title("best setting on the test set")
plt.show()
