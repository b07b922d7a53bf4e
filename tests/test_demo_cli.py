"""``xpcnn demo``: runs in-process (Agg, temporary folder), writes PNGs, fails cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("matplotlib")

from xpcnn import backend, cli  # noqa: E402
from xpcnn.commands import demo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILES = ("layer1.png", "layer2.png", "layer3.png", "overview.png")


@pytest.fixture(autouse=True)
def _agg(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


def _check_pngs(out: Path) -> None:
    import matplotlib.image

    for name in FILES:
        path = out / name
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, name
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50, (name, pixels.shape)
        assert pixels.std() > 0.01  # not a blank canvas


def _run_ok(capsys, *args):
    rc = cli.main(["demo", *map(str, args)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.err == ""
    return cap.out


def _run_bad(capsys, *args):
    rc = cli.main(["demo", *map(str, args)])
    cap = capsys.readouterr()
    assert rc == 2
    assert cap.out == ""
    lines = cap.err.splitlines()
    assert len(lines) == 1, cap.err
    assert "Traceback" not in cap.err
    return lines[0]


def _write_png(path: Path, shape, seed=0) -> Path:
    import skimage.io

    pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    skimage.io.imsave(path, pixels, check_contrast=False)
    return path


def test_demo_chelsea_writes_pngs_and_table(tmp_path, capsys):
    out = tmp_path / "figs" / "nested"  # made if missing
    text = _run_ok(capsys, "--out", out)
    _check_pngs(out)
    assert "layer  stage  output shape" in text and "backend" in text
    for shape in ["(298, 449, 2)", "(149, 224, 2)", "(145, 220, 3)", "(72, 110, 3)", "(66, 104, 1)", "(33, 52, 1)"]:
        assert shape in text
    rows = [line.split() for line in text.splitlines() if line[:1] in "123" and line.split()[-1] == "numpy"]
    assert [(r[0], r[1]) for r in rows] == [(str(l), s) for l in (1, 2, 3) for s in ("conv", "relu", "pool")]
    assert all(float(r[-2]) >= 0 for r in rows)
    for name in FILES:
        assert str(out / name) in text


def test_demo_color(tmp_path, capsys):
    text = _run_ok(capsys, "--color", "--out", tmp_path, "--seed", 3, "--dpi", 40)
    assert "colour" in text and "(298, 449, 2)" in text and "(33, 52, 1)" in text
    _check_pngs(tmp_path)


@pytest.mark.parametrize(
    "shape, color",
    [((60, 80), False), ((60, 80, 3), False), ((60, 80, 4), True), ((60, 80), True)],
    ids=["gray", "rgb-to-gray", "rgba-color", "gray-color"],
)
def test_demo_own_png(tmp_path, capsys, shape, color):
    image = _write_png(tmp_path / "mine.png", shape)
    out = tmp_path / "out"
    args = ["--image", image, "--out", out, "--dpi", 30] + (["--color"] if color else [])
    text = _run_ok(capsys, *args)
    # 60x80 -> conv3 58x78 -> pool 29x39 -> conv5 25x35 -> pool 12x17 -> conv7 6x11 -> pool 3x5
    assert "(58, 78, 2)" in text and "(3, 5, 1)" in text
    assert "mine.png" in text
    assert all((out / name).read_bytes()[:8] == PNG_MAGIC for name in FILES)


@pytest.mark.parametrize("name", backend.available())
def test_demo_each_usable_backend(tmp_path, capsys, name):
    image = _write_png(tmp_path / "small.png", (48, 50))
    text = _run_ok(capsys, "--image", image, "--backend", name, "--out", tmp_path / "o", "--dpi", 30)
    assert all(line.split()[-1] == name for line in text.splitlines() if line[:1] in "123")


def test_bad_missing_image(tmp_path, capsys):
    line = _run_bad(capsys, "--image", tmp_path / "nope.png", "--out", tmp_path / "o")
    assert "nope.png" in line and "no such file" in line


def test_bad_not_an_image(tmp_path, capsys):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture\n" * 20)
    line = _run_bad(capsys, "--image", fake, "--out", tmp_path / "o")
    assert "cannot read image" in line and "notes.png" in line


def test_bad_image_is_a_directory(tmp_path, capsys):
    line = _run_bad(capsys, "--image", tmp_path, "--out", tmp_path / "o")
    assert "directory" in line


def test_bad_image_too_small(tmp_path, capsys):
    image = _write_png(tmp_path / "tiny.png", (20, 30))
    line = _run_bad(capsys, "--image", image, "--out", tmp_path / "o")
    assert "20x30" in line and f"{demo.MIN_SIDE}x{demo.MIN_SIDE}" in line


def test_bad_unknown_backend(tmp_path, capsys):
    line = _run_bad(capsys, "--backend", "tpu", "--out", tmp_path / "o")
    assert "tpu" in line and "numpy" in line
    assert not (tmp_path / "o").exists()  # checked before anything is written


@pytest.mark.skipif("cupy" in backend.available(), reason="CuPy is usable here")
def test_bad_unusable_cupy(tmp_path, capsys):
    line = _run_bad(capsys, "--backend", "cupy", "--out", tmp_path / "o")
    assert "cupy" in line and "pip install" in line


def test_bad_out_under_a_regular_file(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    line = _run_bad(capsys, "--out", blocker / "figs")
    assert "--out" in line and "file.txt" in line


def test_bad_out_is_a_regular_file(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    line = _run_bad(capsys, "--out", blocker)
    assert "--out" in line


def test_bad_option_value(tmp_path, capsys):
    _run_bad(capsys, "--seed", "abc", "--out", tmp_path)
    _run_bad(capsys, "--dpi", "0", "--out", tmp_path)
    _run_bad(capsys, "--repeat", "0", "--out", tmp_path)


def test_missing_optional_dependency_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # makes `import skimage` raise ImportError
    line = _run_bad(capsys, "--out", tmp_path / "o")
    assert 'pip install "xpcnn[demo]"' in line


def test_tutorial_filters():
    gray = demo.tutorial_filters(seed=0)
    assert [b.shape for b in gray] == [(2, 3, 3), (3, 5, 5, 2), (1, 7, 7, 3)]
    np.testing.assert_array_equal(gray[0][0], [[-1, 0, 1]] * 3)
    np.testing.assert_array_equal(gray[0][1], [[1, 1, 1], [0, 0, 0], [-1, -1, -1]])
    colour = demo.tutorial_filters(depth=3, seed=0)
    assert colour[0].shape == (2, 3, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(colour[0][..., c], gray[0])
    np.testing.assert_array_equal(colour[1], gray[1])  # same seed, same random filters
    again, other = demo.tutorial_filters(seed=0), demo.tutorial_filters(seed=1)
    np.testing.assert_array_equal(again[2], gray[2])
    assert not np.array_equal(other[1], gray[1])
    assert all(0 <= b.min() and b.max() < 1 for b in gray[1:])


def test_load_image_downscales_large_pictures(tmp_path):
    image = _write_png(tmp_path / "big.png", (150, 300, 3))
    img = demo.load_image(str(image), max_side=100)
    assert img.shape == (50, 100) and img.dtype == np.float64
    assert 0 <= img.min() and img.max() <= 1
    assert demo.load_image(str(image), max_side=0, color=True).shape == (150, 300, 3)


def test_python_m_xpcnn_demo_subprocess(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    image = _write_png(tmp_path / "small.png", (64, 64))
    proc = subprocess.run(
        [sys.executable, "-m", "xpcnn", "demo", "--image", str(image), "--out", str(tmp_path / "o"), "--dpi", "30"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "overview.png" in proc.stdout
    assert (tmp_path / "o" / "overview.png").read_bytes()[:8] == PNG_MAGIC


def test_importing_the_demo_stays_light():
    code = (
        "import sys, xpcnn.cli, xpcnn.commands.demo, xpcnn.viz, xpcnn.tutorial\n"
        "heavy = [m for m in ('matplotlib', 'skimage', 'cupy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
