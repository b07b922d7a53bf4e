"""The ``xpcnn`` command itself: dispatch, ``info``, ``bench``, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from xpcnn.cli import main


def _one_line_error(capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err, err


def test_info_lists_the_usable_backends(capsys):
    from xpcnn import backend

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"usable backends: {', '.join(backend.available())}" in out


@pytest.mark.parametrize("autotune", [False, True])
def test_bench_prints_every_algorithm_and_autos_pick(capsys, monkeypatch, autotune):
    from xpcnn import config
    from xpcnn import functional as F
    from xpcnn.commands.bench import SHAPES

    monkeypatch.setattr(F.conv, "_tuned", {})
    assert main(["bench", "--backend", "numpy", "--repeat", "1", "--shapes", "2"] + ["--autotune"] * autotune) == 0
    assert config.conv_autotune is False  # the flag holds for the bench only
    out = capsys.readouterr().out
    name = list(SHAPES)[2]
    N, C, H, W, O, K, s, p = SHAPES[name]
    g = F.conv_geometry((N, C, H, W), (O, C, K, K), s, p)
    if autotune:  # the trial ran in the bench and its winner is printed
        monkeypatch.setattr(config, "conv_autotune", True)
        assert F.conv._tune_key(g, np, np.float32) in F.conv._tuned
    picked = F.choose_algo(g, np, np.float32)
    assert picked in F.conv.CANDIDATES
    assert ("auto timed" if autotune else "auto by rule") in out
    for algo in [a for a in F.ALGOS if a != "auto"] + [f"auto={picked}"]:
        assert f"{name}" in out and f" {algo} " in out
    assert "max_pool2d" in out and "relu" in out


@pytest.mark.parametrize(
    "argv, expect",
    [
        ([], "required"),
        (["nonsense"], "invalid choice"),
        (["bench", "--backend", "tpu"], "invalid choice"),
        (["bench", "--repeat", "0"], "--repeat must be >= 1"),
        (["bench", "--shapes", "99"], "--shapes takes indices"),
        (["bench", "--repeat", "x"], "invalid int value"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, expect):
    _one_line_error(capsys, argv, expect)


def test_cupy_where_unavailable_is_one_line(capsys):
    from xpcnn import backend

    if "cupy" in backend.available():
        pytest.skip("CuPy is usable here")
    _one_line_error(capsys, ["bench", "--backend", "cupy"], "pip install")


def test_python_dash_m_runs_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "xpcnn", "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usable backends" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "xpcnn", "frobnicate"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_bench_against_torch_takes_turns_with_a_worker(capsys):
    pytest.importorskip("torch")
    assert main(["bench", "--against", "torch", "--threads", "1", "--repeat", "2", "--shapes", "0"]) == 0
    out = capsys.readouterr().out
    assert "ratio = xpcnn / torch" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and ("auto=" in line or "relu" in line)]
    assert len(rows) == 2
    for row in rows:  # xpcnn ms, torch ms and the ratio are all numbers
        xpcnn_ms, torch_ms, ratio = (float(v) for v in row[-3:])
        assert xpcnn_ms > 0 and torch_ms > 0 and ratio > 0


def test_torch_worker_reports_why_it_stopped():
    from xpcnn.commands.bench import TorchWorker

    # An unknown shape stops the worker before it is ready (or torch is missing): either way, one clear error.
    with pytest.raises(RuntimeError, match=r"timing PyTorch failed: .*(KeyError|ModuleNotFoundError)"):
        TorchWorker(["no such shape"], None)
