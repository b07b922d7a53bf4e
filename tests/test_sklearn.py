"""xpcnn.sklearn.CNNClassifier: scikit-learn's own estimator checks, and the estimator in its ecosystem."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")
from conftest import NO_DASHBOARD  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from xpcnn import backend  # noqa: E402
from xpcnn.layers import Dense  # noqa: E402
from xpcnn.model import Sequential  # noqa: E402
from xpcnn.models import classifier  # noqa: E402
from xpcnn.sklearn import CNNClassifier  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    """The first 600 digits as rows in [0, 1] (float32) and their int labels."""
    X, y = load_digits(return_X_y=True)
    return (X[:600] / 16).astype(np.float32), y[:600]


def small(**kwargs):
    """A classifier that trains in well under a second on 600 digits."""
    return CNNClassifier(**{"input_shape": (1, 8, 8), "epochs": 2, "random_state": 0, **kwargs})


@parametrize_with_checks([CNNClassifier()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_labels_of_any_kind_give_the_same_model(digits):
    X, y = digits
    ref = small().fit(X, y)
    # labels that sort like 0..9: the same output units, so the same network and answers
    for names in (np.array([f"digit {i}" for i in range(10)], dtype=object), np.arange(10) * 7 - 20):
        clf = small().fit(X, names[y])
        np.testing.assert_array_equal(clf.classes_, names)
        np.testing.assert_array_equal(clf.predict_proba(X), ref.predict_proba(X))
        np.testing.assert_array_equal(clf.predict(X), names[ref.predict(X)])
        assert clf.score(X, names[y]) == ref.score(X, y)


def test_random_state_makes_fits_reproducible(digits):
    X, y = digits
    a, b, c = small().fit(X, y), small().fit(X, y), small(random_state=1).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
    restored = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(restored.predict_proba(X), a.predict_proba(X))


def test_learns_digits(digits):
    X, y = digits
    clf = CNNClassifier(input_shape=(1, 8, 8), random_state=0).fit(X[:450], y[:450])
    assert clf.score(X[450:], y[450:]) > 0.85  # chance: 0.1
    assert len(clf.history_["loss"]) == 20 and clf.history_["loss"][-1] < clf.history_["loss"][0]


def test_predict_proba_is_the_softmax_of_the_model(digits):
    X, y = digits
    clf = small().fit(X, y)
    logits = clf.model_.predict(X.reshape(-1, 1, 8, 8)).astype(np.float64)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(clf.predict(X), logits.argmax(axis=1))


def test_partial_fit_epochs_equal_fit(digits):
    X, y = digits
    full = small(epochs=3).fit(X, y)
    part = small()
    for _ in range(3):
        part.partial_fit(X, y, classes=np.arange(10))
    np.testing.assert_array_equal(part.predict_proba(X), full.predict_proba(X))
    assert part.history_["loss"] == full.history_["loss"]


def test_partial_fit_rejects_missing_or_changed_classes(digits):
    X, y = digits
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        small().partial_fit(X, y)
    with pytest.raises(ValueError, match=r"labels \[9\] that are not in classes"):
        small().partial_fit(X, y, classes=np.arange(9))
    clf = small().partial_fit(X, y, classes=np.arange(10))
    with pytest.raises(ValueError, match=r"are not the same as classes_ \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]"):
        clf.partial_fit(X, y, classes=np.arange(11))


def test_image_batches_and_rows_give_the_same_model(digits):
    X, y = digits
    rows = small().fit(X, y)
    images = small(input_shape=None).fit(X.reshape(-1, 1, 8, 8), y)
    assert images.model_.input_shape == (1, 8, 8) and images.n_features_in_ == 64
    np.testing.assert_array_equal(images.predict_proba(X.reshape(-1, 1, 8, 8)), rows.predict_proba(X))


def test_tabular_default_is_a_perceptron(digits):
    X, y = digits
    clf = CNNClassifier(epochs=1, random_state=0).fit(X, y)
    assert [type(layer).__name__ for layer in clf.model_] == ["Dense", "ReLU", "Dense"]
    assert clf.model_.input_shape == (64,)


@pytest.mark.parametrize("shape", [(1, 1, 5), (3, 1, 1), (2, 9, 7), (1, 28, 28)])
def test_default_model_fits_any_image_shape(shape):
    model = classifier(shape, 4, seed=0)
    assert model.output_shape(shape) == (4,)
    assert model.num_params() < 120_000


def test_user_model_builder_gets_shape_classes_and_seed(digits):
    X, y = digits
    seen = []

    def build(input_shape, n_classes, seed):
        seen.append((input_shape, n_classes, seed.integers(1 << 30)))
        return Sequential(Dense(64, n_classes, seed=seed))

    a = CNNClassifier(build, epochs=10, random_state=0).fit(X, y)
    CNNClassifier(build, epochs=0, random_state=0).fit(X, y)
    assert seen[0] == seen[1] and seen[0][:2] == ((64,), 10)
    assert a.score(X, y) > 0.8  # softmax regression
    # a Sequential is copied: the parameter is never trained
    net = Sequential(Dense(64, 10, seed=0))
    before = net[0].params["weight"].copy()
    CNNClassifier(net, epochs=1).fit(X, y)
    np.testing.assert_array_equal(net[0].params["weight"], before)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"input_shape": (1, 8, 7)}, ValueError, r"input_shape \(1, 8, 7\) holds 56 values per sample, but X has 64"),
        ({"input_shape": (8, 8)}, ValueError, r"takes input_shape \(C, H, W\) or \(n_features,\), got \(8, 8\)"),
        ({"input_shape": 64}, TypeError, "input_shape must be a tuple"),
        ({"model": lambda shape, k: Sequential(Dense(64, 3))}, ValueError, r"must be \(10,\).*got \(3,\)"),
        ({"model": lambda shape, k: "net"}, TypeError, "must return an xpcnn Sequential, got str"),
        ({"model": "cnn"}, TypeError, "model must be None, a Sequential or a callable"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer must be one of adam, sgd, got 'rmsprop'"),
        ({"backend": "jax"}, ValueError, "jax"),
        ({"epochs": -1}, ValueError, "epochs must be >= 0, got -1"),
        ({"epochs": "many"}, TypeError, "epochs must be an int"),
        ({"lr": -0.1}, ValueError, "lr must be .*>= 0.0, got -0.1"),
        ({"verbose": "yes"}, TypeError, "verbose must be an int"),
    ],
)
def test_bad_parameters_raise_at_fit(digits, kwargs, error, match):
    X, y = digits
    clf = CNNClassifier(**kwargs)  # no check in __init__ (scikit-learn's rule)
    with pytest.raises(error, match=match):
        clf.fit(X, y)


def test_a_failed_fit_leaves_the_estimator_unfitted(digits):
    X, y = digits
    clf = small(optimizer="rmsprop")
    for fit in (lambda: clf.fit(X, y), lambda: clf.partial_fit(X, y, classes=np.arange(10))):
        with pytest.raises(ValueError, match="optimizer"):
            fit()
        with pytest.raises(NotFittedError):
            clf.predict(X)
    clf.set_params(optimizer="adam").partial_fit(X, y, classes=np.arange(10))  # a first call again
    assert clf.model_.input_shape == (1, 8, 8) and len(clf.history_["loss"]) == 1


def test_sgd_optimizer_trains(digits):
    X, y = digits
    clf = small(optimizer="sgd", lr=0.02, epochs=5).fit(X[:450], y[:450])
    assert type(clf.optimizer_).__name__ == "SGD" and clf.optimizer_.momentum == 0.9
    assert clf.score(X[450:], y[450:]) > 0.75  # chance: 0.1; 0.85 with random_state 0-2


# ---------------------------------------------------------------------------- ecosystem

def test_pipeline_equals_transforming_by_hand(digits):
    X, y = digits
    for step in (StandardScaler(), FunctionTransformer(np.sqrt)):
        pipe = make_pipeline(step, small()).fit(X, y)
        by_hand = small().fit(clone(step).fit_transform(X), y)
        np.testing.assert_array_equal(pipe.predict_proba(X), by_hand.predict_proba(step.transform(X)))


def _grid(n_jobs):
    return GridSearchCV(small(epochs=1), {"lr": [1e-3, 3e-3], "batch_size": [16, 64]}, cv=3, n_jobs=n_jobs)


def _same_scores(a, b):
    # Worker processes run BLAS on fewer threads than this one (joblib and dask limit them), so the
    # same seeded fits round differently in the last bits: a near-tie prediction may flip. 0.01 is
    # two of a fold's 200 samples.
    np.testing.assert_allclose(a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"], atol=0.01)


def test_grid_search_in_two_processes_matches_one(digits):
    X, y = digits
    serial, parallel = _grid(1).fit(X, y), _grid(2).fit(X, y)
    _same_scores(parallel, serial)
    assert parallel.best_score_ > 0.5


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  **NO_DASHBOARD) as cluster, distributed.Client(cluster) as client:
        yield client


def test_grid_search_on_a_dask_cluster_matches_one_process(digits, dask_client):
    joblib = pytest.importorskip("joblib")
    X, y = digits
    serial = _grid(1).fit(X, y)
    with joblib.parallel_backend("dask"):
        on_dask = _grid(-1).fit(X, y)
    _same_scores(on_dask, serial)


def test_dask_ml_incremental_streams_blocks_through_partial_fit(digits, dask_client):
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X, y = digits
    inc = wrappers.Incremental(small(), scoring="accuracy", shuffle_blocks=False)
    inc.fit(da.from_array(X, chunks=(200, 64)), da.from_array(y, chunks=200), classes=np.arange(10))
    # the same three blocks, one partial_fit each, in order
    by_hand = small()
    for i in range(0, 600, 200):
        by_hand.partial_fit(X[i : i + 200], y[i : i + 200], classes=np.arange(10))
    # equal up to rounding: the worker's BLAS runs on one thread (see _same_scores)
    np.testing.assert_allclose(inc.estimator_.predict_proba(X), by_hand.predict_proba(X), rtol=1e-4, atol=1e-5)


def test_dask_ml_parallel_post_fit_predicts_dask_arrays(digits, dask_client):
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X, y = digits
    clf = wrappers.ParallelPostFit(small()).fit(X, y)
    dX = da.from_array(X, chunks=(150, 64))
    labels, proba = clf.predict(dX), clf.predict_proba(dX)
    assert isinstance(labels, da.Array) and labels.numblocks == (4,)
    np.testing.assert_array_equal(labels.compute(), clf.estimator.predict(X))
    np.testing.assert_allclose(proba.compute(), clf.estimator.predict_proba(X), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- device

def test_cupy_backend_trains_on_the_device_and_returns_host_arrays(digits):
    if "cupy" not in backend.available():
        pytest.skip("needs a usable CuPy backend (a GPU, or XPCNN_TEST_FAKE_CUPY=1)")
    X, y = digits
    # the perceptron (no dropout): the same initial weights, drawn on the host, and the same batches
    host, device = small(input_shape=None).fit(X, y), small(input_shape=None, backend="cupy").fit(X, y)
    assert device.model_.backend == "cupy"
    proba = device.predict_proba(X)
    assert type(proba) is np.ndarray and type(device.predict(X)) is np.ndarray
    np.testing.assert_allclose(proba, host.predict_proba(X), atol=1e-4)
    assert device.score(X, y) == pytest.approx(host.score(X, y), abs=0.01)


def test_cupy_backend_reads_the_device_once_per_epoch_and_per_prediction(digits, monkeypatch):
    fc = pytest.importorskip("xpcnn.testing.fakecupy")
    X, y = digits
    with fc.installed():  # the stand-in counts what a real device would pay for (every lane)
        monkeypatch.setattr(backend, "_cupy", None)  # forget the probe: it finds the stand-in now
        monkeypatch.setattr(backend, "_cupy_error", None)
        clf = small(input_shape=None, backend="cupy", epochs=2)
        fc.counts.reset()
        clf.fit(X, y)
        fit_reads = fc.counts.transfers
        fc.counts.reset()
        proba = clf.predict_proba(X)
        assert fc.counts.transfers == 1, fc.counts.transfer_kinds  # the probabilities, once
    assert type(proba) is np.ndarray
    batches = -(-len(X) // 32)
    assert fit_reads <= 2 * (batches + 2) + 2  # Sequential.fit's own per-batch check, nothing more
