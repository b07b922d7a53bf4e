"""Mistakes a user makes, and what an attacker feeds in: one clear error, the
argument named, nothing lost; NumPy scalars and device arrays accepted where
Python numbers and host arrays are."""

from __future__ import annotations

import gzip
import os
import struct
import warnings

import numpy as np
import pytest
from scipy.signal import correlate
from test_train_cli import _one_line_error as one_line_error

import xpcnn
from xpcnn import functional as F
from xpcnn import layers as L
from xpcnn import tutorial
from xpcnn.cli import main
from xpcnn.data import read_idx
from xpcnn.model import Sequential
from xpcnn.optim import SGD, Adam
from xpcnn.testing import fakecupy


def tiny_model(seed=0):
    return Sequential(L.Conv2D(1, 2, 3, padding=1, seed=seed), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                      L.Dense(2 * 4 * 4, 3, seed=seed + 1), input_shape=(1, 8, 8))


@pytest.fixture
def no_training(monkeypatch):
    """Any call to fit fails the test: the mistake must be found before training."""

    def fit(*args, **kwargs):
        raise AssertionError("training started before the mistake was reported")

    monkeypatch.setattr(Sequential, "fit", fit)


# ---------------------------------------------------------------- 5. divergence
def test_diverging_training_is_one_line_and_exit_2(tmp_path, capsys):
    pytest.importorskip("sklearn")
    argv = ["train", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "1", "--out", str(tmp_path / "m.npz"),
            "--no-plot", "--no-progress", "--backend", "numpy"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy overflow warning would be a second line in a shell
        one_line_error(capsys, argv, "training diverged with --lr 1000000.0: non-finite")


# ---------------------------------------------------------------- 6. outputs checked before training
@pytest.mark.parametrize("args, expect", [
    (["--out", ""], "--out needs a file name"),
    (["--out", "/proc/model.npz"], "--out /proc/model.npz: cannot write in folder /proc"),
    (["--out", "{tmp}/missing/m.npz"], "does not exist"),
    (["--plot", "{tmp}/curves.xyz"], "matplotlib cannot write '.xyz' files; use one of"),
    (["--out", "{tmp}/same.png", "--plot", "{tmp}/same.png"], "--out and --plot name the same file"),
    (["--out", "{tmp}/same.png", "--plot", "{tmp}/same"], "--out and --plot name the same file"),
])
def test_output_mistakes_are_found_before_training(tmp_path, capsys, no_training, args, expect):
    pytest.importorskip("matplotlib")
    if "/proc" in args[1] and not os.path.isdir("/proc"):
        pytest.skip("needs Linux's /proc (a folder no one can create files in)")
    args = [a.format(tmp=tmp_path) for a in args]
    base = ["train", "--no-progress", "--out", str(tmp_path / "m.npz"), "--plot", str(tmp_path / "c.png")]
    one_line_error(capsys, base + args, expect)
    assert not (tmp_path / "m.npz").exists()


def test_evaluate_checks_plot_before_loading(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "m.npz"
    tiny_model().save(path)
    one_line_error(capsys, ["evaluate", str(path), "--plot", str(tmp_path / "c.nope")], "cannot write '.nope'")


def test_plot_without_suffix_reports_the_file_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    plot = tmp_path / "curves_noext"
    argv = ["train", "--epochs", "1", "--out", str(tmp_path / "m.npz"), "--plot", str(plot), "--no-progress",
            "--backend", "numpy"]
    assert main(argv) == 0
    assert f"curves saved to {plot}.png" in capsys.readouterr().out
    assert (tmp_path / "curves_noext.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- 7. IDX gzip bombs and overflow
def test_idx_gzip_bomb_is_refused_after_the_announced_bytes(tmp_path):
    path = tmp_path / "labels.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"\0\0\x08\x01" + struct.pack(">I", 10))
        fh.write(bytes(10))
        for _ in range(64):  # 64 MiB of trailing zeros, ~64 KiB compressed
            fh.write(bytes(2**20))
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing data in IDX payload.*need 10 bytes"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # the old reader inflated the whole stream first


def test_idx_dimensions_that_overflow_are_a_clear_error(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(b"\0\0\x0e\x04" + struct.pack(">4I", *([2**32 - 1] * 4)) + bytes(8))
    with pytest.raises(ValueError, match=rf"{path}: IDX dims .* more than an array can hold"):
        read_idx(path)


def test_idx_header_announcing_more_than_the_file_holds(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\0\0\x08\x02" + struct.pack(">2I", 2**20, 2**10) + bytes(100))
    with pytest.raises(ValueError, match=r"truncated IDX payload.*need 1073741824 bytes.*found 100"):
        read_idx(path)


# ---------------------------------------------------------------- 8. shapes
@pytest.mark.parametrize("shape", [(0, 1, 4, 4), (2, 0, 4, 4)])
@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pooling_an_empty_input_is_a_value_error(pool, shape):
    with pytest.raises(ValueError, match="empty pooling input"):
        pool(np.zeros(shape, np.float32), 2)


def test_recorded_input_shape_is_enforced():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"x: the model expects per-sample input shape \(1, 8, 8\), got \(1, 9, 9\)"):
        model.predict(np.zeros((2, 1, 9, 9), np.float32))


def test_validation_mistakes_name_the_validation_set():
    model = tiny_model()
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="validation x: the model expects"):
        model.fit(x, y, validation_data=(np.zeros((4, 1, 6, 6), np.float32), y), progress=False)
    with pytest.raises(ValueError, match=r"validation y: label 7 is outside the range \[0, 3\)"):
        model.fit(x, y, validation_data=(x, np.array([0, 1, 7, 0])), progress=False)


# ---------------------------------------------------------------- 9. NumPy scalars
def test_numpy_scalars_are_accepted_like_python_numbers(tmp_path):
    assert L.Dropout(np.float32(0.5)).p == 0.5
    assert L.LeakyReLU(np.float32(0.25)).negative_slope == 0.25
    assert L.BatchNorm2D(2, eps=np.float32(1e-3), momentum=np.float64(0.2)).momentum == pytest.approx(0.2)
    opt = SGD(np.float32(0.5), momentum=np.float32(0.75))
    assert (opt.lr, opt.momentum) == (0.5, 0.75)
    adam = Adam(np.float32(0.5), betas=(np.float32(0.5), np.float64(0.75)), eps=np.float32(0.25))
    assert adam.betas == (0.5, 0.75) and adam.eps == 0.25
    a, b = L.Conv2D(1, 2, 3, seed=np.int64(3)), L.Conv2D(1, 2, 3, seed=3)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    x = np.random.default_rng(0).random((1, 2, 5, 5), dtype=np.float32)
    w = np.random.default_rng(1).random((2, 2, 3, 3), dtype=np.float32)
    np.testing.assert_array_equal(F.conv2d(x, w, groups=np.int64(1)), F.conv2d(x, w, groups=1))
    # The configs stay JSON: a model built from NumPy scalars saves and loads.
    model = Sequential(L.Flatten(), L.Dropout(np.float32(0.5)), L.LeakyReLU(np.float32(0.25)))
    model.save(tmp_path / "m.npz")
    assert Sequential.load(tmp_path / "m.npz")[2].negative_slope == 0.25


def test_fit_seed_takes_numpy_ints():
    x = np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32)
    y = np.arange(12) % 3
    h1 = tiny_model().fit(x, y, epochs=2, batch_size=4, seed=np.int64(5), progress=False)
    h2 = tiny_model().fit(x, y, epochs=2, batch_size=4, seed=5, progress=False)
    assert h1 == h2


# ---------------------------------------------------------------- 10. messages name the argument
def test_messages_name_the_argument(capsys):
    model = tiny_model()
    x = np.zeros((3, 1, 8, 8), np.float32)
    with pytest.raises(TypeError, match="seed must be an int, None or a random generator, got 'a'"):
        model.fit(x, np.array([0, 1, 2]), seed="a", progress=False)
    with pytest.raises(ValueError, match="y must hold one label or target per sample"):
        model.fit(x, np.array(3), progress=False)
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints"):
        Sequential(L.ReLU(), input_shape=5)
    one_line_error(capsys, ["train", "--seed", "-1"], "argument --seed: expected a non-negative integer, got '-1'")


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"xpcnn {xpcnn.__version__}"


# ---------------------------------------------------------------- 11. device arrays in host helpers
@pytest.fixture
def cp():
    with fakecupy.installed() as module:
        yield module


def test_confusion_matrix_and_plot_take_device_arrays(cp, tmp_path):
    pytest.importorskip("matplotlib")
    from xpcnn import plots
    from xpcnn.commands.evaluate import confusion_matrix

    t, p = np.array([0, 1, 2, 2, 1]), np.array([0, 2, 2, 2, 1])
    m = confusion_matrix(cp.asarray(t), cp.asarray(p), 3)
    np.testing.assert_array_equal(m, confusion_matrix(t, p, 3))
    assert m[2, 2] == 2 and m[1, 2] == 1
    plots.plot_confusion(cp.asarray(m), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_pipeline_with_host_image_and_device_banks(cp):
    rng = np.random.default_rng(0)
    img = rng.random((12, 12))
    banks = [rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3, 3, 2))]
    on_host = tutorial.pipeline(img, banks)
    mixed = tutorial.pipeline(img, [cp.asarray(b) for b in banks])
    for h, d in zip(on_host, mixed):
        assert isinstance(d.output, cp.ndarray)
        np.testing.assert_allclose(d.output.get(), h.output, rtol=1e-12)


@pytest.mark.parametrize("on_device", [False, True])
def test_unchecked_out_of_range_labels_give_nan_on_every_backend(cp, on_device):
    xp = cp if on_device else np
    logits = xp.asarray(np.random.default_rng(0).random((3, 4), dtype=np.float32))
    for bad in ([0, 4, 1], [0, -1, 1]):
        labels = xp.asarray(np.array(bad))
        loss = F.cross_entropy(logits, labels, check_range=False)
        grad = F.cross_entropy_backward(logits, labels, check_range=False)
        host = (loss.get() if on_device else loss), (grad.get() if on_device else grad)
        assert np.isnan(host[0])
        assert np.isnan(host[1][1]).all() and np.isfinite(host[1][[0, 2]]).all()
    good = xp.asarray(np.array([0, 3, 1]))
    same = F.cross_entropy(logits, good, check_range=False), F.cross_entropy(logits, good)
    assert float(same[0]) == float(same[1])


def test_fit_seed_takes_a_device_generator(cp):
    x = np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32)
    y = np.arange(12) % 3
    h1 = tiny_model().fit(x, y, epochs=2, batch_size=4, seed=cp.random.default_rng(7), progress=False)
    h2 = tiny_model().fit(x, y, epochs=2, batch_size=4, seed=cp.random.default_rng(7), progress=False)
    assert h1 == h2


# ---------------------------------------------------------------- 12. demo, bench, tutorial dtypes
def test_demo_keeps_a_long_thin_image_usable(tmp_path):
    skimage_io = pytest.importorskip("skimage.io")
    from xpcnn.commands.demo import MIN_SIDE, load_image

    path = tmp_path / "long.png"
    skimage_io.imsave(path, np.full((50, 5000), 128, np.uint8), check_contrast=False)
    img = load_image(str(path))
    assert min(img.shape) >= MIN_SIDE and img.shape[1] < 5000


@pytest.mark.parametrize("threads", ["0", "-3"])
def test_bench_threads_must_be_positive(capsys, threads):
    one_line_error(capsys, ["bench", "--threads", threads], f"argument --threads: expected a positive integer, got '{threads}'")


def test_tutorial_takes_long_double():
    rng = np.random.default_rng(0)
    img, bank = rng.random((6, 7)).astype(np.longdouble), rng.random((2, 3, 3))
    out = tutorial.conv(img, bank)
    assert out.dtype == np.float64
    ref = np.stack([correlate(img.astype(np.float64), k, mode="valid") for k in bank], axis=-1)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert tutorial.relu(img).dtype == np.float64


# ------------------------------------------------ remembered geometries still check


def test_remembered_geometry_still_refuses_floats_and_bools():
    # 1.0 and True equal 1 as dict keys: after the int call is remembered, they
    # must still be checked, not served the int call's geometry.
    g = F.conv_geometry((1, 1, 4, 4), (1, 1, 2, 2), 1, 0, 1, 1)
    assert F.conv_geometry((1, 1, 4, 4), (1, 1, 2, 2), 1, 0, 1, 1) is g  # remembered
    for args in [(1.0, 0, 1, 1), (1, (0, 0.0), 1, 1), (1, 0, True, 1), (1, 0, 1, True)]:
        with pytest.raises(TypeError):
            F.conv_geometry((1, 1, 4, 4), (1, 1, 2, 2), *args)
    x = np.ones((1, 1, 4, 4), np.float32)
    F.max_pool2d(x, 2)
    for bad in (2.0, (2, 2.0)):
        with pytest.raises(TypeError, match="kernel_size"):
            F.max_pool2d(x, bad)


def test_a_refused_geometry_is_refused_every_time():
    for _ in range(2):
        with pytest.raises(ValueError, match="groups=4 must divide"):
            F.conv_geometry((1, 6, 4, 4), (4, 2, 2, 2), 1, 0, 1, 4)


def test_geometry_of_shapes_given_as_lists():
    assert F.conv_geometry([2, 3, 8, 8], [4, 3, 3, 3], 1, 1, 1, 1) == F.conv_geometry((2, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1)


@pytest.mark.parametrize("bad", [(2, True), (True, 2), [False, 1]])
def test_a_bool_inside_a_size_pair_is_refused(bad):
    x = np.ones((1, 1, 6, 6), np.float32)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints"):
        F.max_pool2d(x, bad)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        F.conv2d(x, np.ones((1, 1, 2, 2), np.float32), stride=bad)
    with pytest.raises(TypeError, match="kernel_size"):
        L.Conv2D(1, 1, bad)
