"""``xpcnn train`` and ``xpcnn evaluate``: short real runs in a temporary folder,
and one-line errors with exit code 2 for every user mistake."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xpcnn import backend
from xpcnn.cli import main
from xpcnn.model import Sequential

PNG = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One ``xpcnn train --epochs 1`` run on digits (shared by the tests that read its outputs)."""
    pytest.importorskip("matplotlib")
    folder = tmp_path_factory.mktemp("train")
    out, plot = folder / "digits.npz", folder / "curves.png"
    argv = ["train", "--epochs", "1", "--out", str(out), "--plot", str(plot), "--no-progress", "--backend", "numpy"]
    return folder, out, plot, argv


def test_train_writes_model_and_curves(trained, capsys):
    folder, out, plot, argv = trained
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert out.is_file() and plot.read_bytes().startswith(PNG)
    assert "test accuracy:" in stdout and "time:" in stdout and "Total params: 38,282" in stdout
    accuracy = float(stdout.split("test accuracy:")[1].split("%")[0]) / 100
    assert accuracy > 0.5  # one epoch already learns a lot; the full default run is measured in docs/guide/training.md
    model = Sequential.load(out)
    assert model.input_shape == (1, 8, 8)


def test_evaluate_reports_accuracy_and_confusion_matrix(trained, capsys):
    folder, out, _, argv = trained
    if not out.exists():
        assert main(argv) == 0
    capsys.readouterr()
    conf = folder / "confusion.png"
    assert main(["evaluate", str(out), "--dataset", "digits", "--plot", str(conf)]) == 0
    stdout = capsys.readouterr().out
    assert "accuracy:" in stdout and "confusion matrix" in stdout
    rows = [line.split() for line in stdout.splitlines() if line.strip()[:1].isdigit()]
    counts = np.array([[int(v) for v in row[1:11]] for row in rows])
    assert counts.shape == (10, 10) and counts.sum() == 450  # the digits test split
    accuracy = float(stdout.split("accuracy:")[1].split("%")[0]) / 100
    assert np.trace(counts) / counts.sum() == pytest.approx(accuracy, abs=1e-4)
    assert conf.read_bytes().startswith(PNG)


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + arr.tobytes()))


def test_train_and_evaluate_on_mnist_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 64), ("t10k", 32)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    out = tmp_path / "lenet.npz"
    argv = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "2", "--batch-size", "16",
            "--optimizer", "sgd", "--lr", "0.01", "--lr-step", "1", "--out", str(out), "--no-plot", "--no-progress"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "mnist: 64 training and 32 test samples" in stdout and "SGD(lr=0.01, momentum=0.9" in stdout
    assert "lr x0.1 every 1 epochs; 2 epochs of batch 16" in stdout
    assert Sequential.load(out).input_shape == (1, 28, 28)
    assert main(["evaluate", str(out), "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert "(32 samples)" in capsys.readouterr().out
    # A model for 28x28 inputs does not fit the 8x8 digits: a one-line error, not a traceback.
    _one_line_error(capsys, ["evaluate", str(out), "--dataset", "digits"], "the model expects per-sample input shape (1, 28, 28), got (1, 8, 8)")


def test_python_m_xpcnn_train_subprocess(tmp_path):
    """The real command line, with a progress bar, in a fresh interpreter."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("XPCNN_BACKEND", None)
    proc = subprocess.run([sys.executable, "-m", "xpcnn", "train", "--epochs", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "model.npz").is_file() and (tmp_path / "curves.png").read_bytes().startswith(PNG)
    assert "epoch 1/1" in proc.stderr and "loss=" in proc.stderr and "accuracy=" in proc.stderr


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["train", "--epochs", "0"], "--epochs: expected a positive integer, got '0'"),
        (["train", "--epochs", "two"], "expected a positive integer, got 'two'"),
        (["train", "--batch-size", "-4"], "--batch-size: expected a positive integer"),
        (["train", "--lr", "0"], "--lr: expected a positive number, got '0'"),
        (["train", "--lr", "nan"], "expected a positive number"),
        (["train", "--lr-step", "-1"], "--lr-step: expected a non-negative integer, got '-1'"),
        (["train", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
        (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["train", "--backend", "tpu"], "invalid choice: 'tpu'"),
        (["train", "--momentum", "1.5"], "--momentum must be in [0, 1)"),
        (["train", "--dataset", "mnist", "--no-plot"], "--dataset mnist needs --data-dir"),
        (["train", "--out", "/nonexistent-folder/m.npz"], "folder /nonexistent-folder does not exist"),
        (["train", "--plot", "/nonexistent-folder/c.png"], "folder /nonexistent-folder does not exist"),
        (["evaluate"], "the following arguments are required: MODEL.npz"),
        (["evaluate", "missing.npz"], "No such file or directory"),
        (["evaluate", "x.npz", "--dataset", "svhn"], "invalid choice: 'svhn'"),
        (["evaluate", "x.npz", "--batch-size", "0"], "expected a positive integer"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, expect):
    _one_line_error(capsys, argv, expect)


def test_mnist_missing_files_is_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--no-plot"],
                    "MNIST file(s) missing")


def test_out_is_a_folder_is_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["train", "--out", str(tmp_path), "--no-plot"], "is a folder")


def test_evaluate_corrupt_model_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model at all")
    _one_line_error(capsys, ["evaluate", str(bad)], "not a zip (.npz) archive")


def test_train_cupy_where_unavailable_is_one_line(capsys, tmp_path):
    if "cupy" in backend.available():
        pytest.skip("CuPy is usable here: --backend cupy is not a mistake")
    _one_line_error(capsys, ["train", "--backend", "cupy", "--out", str(tmp_path / "m.npz"), "--no-plot"],
                    "backend 'cupy' is unavailable")
