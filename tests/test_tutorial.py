"""xpcnn.tutorial: the tutorial's conv / relu / pooling, checked against scipy and loops.

References are independent of xpcnn: ``scipy.signal.correlate2d`` for the
convolution, explicit Python loops for pooling, ``numpy.maximum`` for ReLU.
The last tests document, with the faithful copy of the tutorial's loops in
``benchmarks/tutorial_loops.py``, exactly how the tutorial's numbers differ.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import to_host, to_xp
from scipy.signal import correlate2d

from xpcnn import tutorial

ROOT = Path(__file__).resolve().parents[1]


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if np.dtype(dtype) == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def ref_conv(img, bank):
    """'valid' cross-correlation per filter, summed over channels, with scipy."""
    img = np.asarray(img, dtype=np.float64)
    bank = np.asarray(bank, dtype=np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    if bank.ndim == 3:
        bank = bank[..., None]
    maps = []
    for f in range(bank.shape[0]):
        maps.append(sum(correlate2d(img[:, :, c], bank[f, :, :, c], mode="valid") for c in range(img.shape[2])))
    return np.stack(maps, axis=-1)


def ref_pool(fm, size, stride):
    """Floor-mode max pooling of each map separately, by explicit loops."""
    H, W, n_maps = fm.shape
    OH, OW = (H - size) // stride + 1, (W - size) // stride + 1
    out = np.empty((OH, OW, n_maps))
    for f in range(n_maps):
        for i in range(OH):
            for j in range(OW):
                best = -np.inf
                for u in range(size):
                    for v in range(size):
                        best = max(best, fm[i * stride + u, j * stride + v, f])
                out[i, j, f] = best
    return out


def _load_loops():
    spec = importlib.util.spec_from_file_location("tutorial_loops", ROOT / "benchmarks" / "tutorial_loops.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _quiet(fn, *args):
    """Call one of the tutorial's loop functions, which print progress."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


# ---------------------------------------------------------------- conv


CONV_CASES = {
    # name: (image shape, filter bank shape)
    "gray, depth-less bank": ((17, 23), (2, 3, 3)),
    "gray, depth 1": ((17, 23), (3, 5, 5, 1)),
    "gray HxWx1, depth-less bank": ((12, 9, 1), (2, 3, 3)),
    "colour": ((15, 19, 3), (2, 3, 3, 3)),
    "feature maps": ((20, 21, 2), (3, 5, 5, 2)),
    "rectangular even filter": ((11, 13, 2), (4, 2, 4, 2)),
    "1x1 filter": ((6, 7, 3), (2, 1, 1, 3)),
    "filter as large as image": ((5, 7), (1, 5, 7)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_equals_scipy_correlate2d(xp, rng, case, dtype):
    img_shape, bank_shape = CONV_CASES[case]
    img = rng.standard_normal(img_shape).astype(dtype)
    bank = rng.standard_normal(bank_shape).astype(dtype)
    out = tutorial.conv(to_xp(xp, img), to_xp(xp, bank))
    assert type(out) is type(to_xp(xp, img))
    expected = ref_conv(img, bank)
    H, W = img_shape[:2]
    assert out.shape == (H - bank_shape[1] + 1, W - bank_shape[2] + 1, bank_shape[0]) == expected.shape
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(to_host(out), expected, **_tol(dtype))


def test_conv_hand_computed():
    img = np.arange(12.0).reshape(3, 4)
    bank = np.zeros((1, 2, 2))
    bank[0] = [[1, 0], [0, -1]]  # not flipped: img[i, j] - img[i+1, j+1]
    out = tutorial.conv(img, bank)
    np.testing.assert_array_equal(out[:, :, 0], np.full((2, 3), -5.0))


def test_conv_dtypes(rng):
    img8 = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    bank = rng.integers(-2, 3, size=(2, 3, 3, 3))  # int filters, as a user might write them
    out = tutorial.conv(img8, bank)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ref_conv(img8, bank))  # integers: exact in float64
    img32 = rng.random((10, 12)).astype(np.float32)
    assert tutorial.conv(img32, rng.random((2, 3, 3))).dtype == np.float32  # filters follow the image
    assert tutorial.conv(img32.astype(np.float16), np.ones((1, 3, 3))).dtype == np.float32
    assert tutorial.conv(img32.tolist(), np.ones((1, 3, 3)).tolist()).dtype == np.float64


def test_conv_accepts_views_and_does_not_modify_inputs(rng):
    base = rng.standard_normal((30, 40, 4))
    img = base[::2, ::-1, 1:3]  # non-contiguous view
    bank = rng.standard_normal((2, 3, 3, 2))
    img_copy, bank_copy = img.copy(), bank.copy()
    out = tutorial.conv(img, bank)
    np.testing.assert_allclose(out, ref_conv(img, bank), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(img, img_copy)
    np.testing.assert_array_equal(bank, bank_copy)


@pytest.mark.parametrize(
    "img_shape, bank_shape, words",
    [
        ((10, 10, 3), (2, 3, 3, 2), ["depth 2", "3 channel"]),
        ((10, 10), (2, 3, 3, 2), ["depth 2", "1 channel"]),
        ((10, 10, 3), (2, 3, 3), ["(F, KH, KW, 3)"]),
        ((10, 10, 2), (2, 3, 3), ["(F, KH, KW, 2)"]),
        ((6, 8), (1, 7, 3), ["larger than the image"]),
        ((6, 8, 2), (1, 3, 9, 2), ["larger than the image"]),
        ((10,), (1, 3, 3), ["(H, W)"]),
        ((2, 10, 10, 1), (1, 3, 3, 1), ["(H, W)"]),
        ((10, 10), (3, 3), ["(F, KH, KW)"]),
        ((10, 10), (0, 3, 3), ["empty"]),
        ((10, 0), (1, 1, 1), ["empty"]),
    ],
)
def test_conv_bad_shapes_name_both_shapes(img_shape, bank_shape, words):
    with pytest.raises(ValueError) as info:
        tutorial.conv(np.zeros(img_shape), np.zeros(bank_shape))
    msg = str(info.value)
    assert str(tuple(img_shape)) in msg and str(tuple(bank_shape)) in msg
    for w in words:
        assert w in msg


def test_conv_rejects_complex():
    with pytest.raises(TypeError, match="complex"):
        tutorial.conv(np.zeros((5, 5), dtype=complex), np.ones((1, 3, 3)))
    with pytest.raises(TypeError, match="complex"):
        tutorial.conv(np.zeros((5, 5)), np.ones((1, 3, 3), dtype=complex))


def test_conv_cupy_image_with_host_filters(xp, rng):
    img, bank = rng.random((9, 11)), rng.random((2, 3, 3))
    out = tutorial.conv(to_xp(xp, img), bank)
    assert type(out) is type(to_xp(xp, img))
    np.testing.assert_allclose(to_host(out), ref_conv(img, bank), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- relu


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_equals_maximum(xp, rng, dtype):
    x = rng.standard_normal((7, 9, 3)).astype(dtype)
    x[0, 0, 0] = 0.0
    out = tutorial.relu(to_xp(xp, x))
    assert type(out) is type(to_xp(xp, x)) and out.dtype == np.dtype(dtype) and out.shape == x.shape
    np.testing.assert_array_equal(to_host(out), np.maximum(x, 0))


def test_relu_integers_become_float64():
    x = np.array([[-3, 0], [2, -1]], dtype=np.int32)
    out = tutorial.relu(x)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0.0, 0.0], [2.0, 0.0]])


# ---------------------------------------------------------------- pooling


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "shape, size, stride",
    [
        ((8, 10, 2), 2, 2),
        ((9, 11, 3), 2, 2),  # odd sides: the last row/column is dropped (floor mode)
        ((9, 11, 1), 3, 2),  # overlapping windows
        ((7, 8, 2), 2, 1),
        ((10, 9, 2), 3, 3),
        ((5, 6, 4), 5, 1),
        ((4, 4, 1), 1, 1),
    ],
)
def test_pooling_equals_loop_reference(xp, rng, shape, size, stride, dtype):
    fm = rng.standard_normal(shape).astype(dtype)
    out = tutorial.pooling(to_xp(xp, fm), size, stride)
    expected = ref_pool(fm.astype(np.float64), size, stride)
    assert type(out) is type(to_xp(xp, fm)) and out.dtype == np.dtype(dtype)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(to_host(out), expected.astype(dtype))


def test_pooling_keeps_maps_apart():
    fm = np.zeros((4, 4, 2))
    fm[1, 1, 0] = 5.0  # a large value in map 0 must not leak into map 1
    fm[2, 3, 1] = -1.0
    out = tutorial.pooling(fm)
    np.testing.assert_array_equal(out[:, :, 0], [[5.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(out[:, :, 1], np.zeros((2, 2)))


def test_pooling_2d_and_integer_input(rng):
    fm = rng.integers(-9, 10, size=(7, 6))
    out = tutorial.pooling(fm, 2, 2)
    assert out.shape == (3, 3) and out.dtype == np.float64
    np.testing.assert_array_equal(out, ref_pool(fm[:, :, None].astype(float), 2, 2)[:, :, 0])


@pytest.mark.parametrize(
    "shape, size, stride, exc, words",
    [
        ((3, 5, 2), 4, 2, ValueError, ["(4, 4)", "(3, 5, 2)"]),
        ((6,), 2, 2, ValueError, ["(6,)"]),
        ((2, 6, 6, 1), 2, 2, ValueError, ["(2, 6, 6, 1)"]),
        ((0, 6, 1), 2, 2, ValueError, ["empty"]),
        ((6, 6, 1), 0, 2, ValueError, ["size"]),
        ((6, 6, 1), 2, 0, ValueError, ["stride"]),
        ((6, 6, 1), 2.0, 2, TypeError, ["size"]),
        ((6, 6, 1), True, 2, TypeError, ["size"]),
    ],
)
def test_pooling_bad_arguments(shape, size, stride, exc, words):
    with pytest.raises(exc) as info:
        tutorial.pooling(np.zeros(shape), size, stride)
    for w in words:
        assert w in str(info.value)


# ---------------------------------------------------------------- the chelsea pipeline


def _chelsea_inputs():
    pytest.importorskip("skimage")
    from xpcnn.commands.demo import load_image, tutorial_filters

    return load_image("chelsea"), tutorial_filters(seed=0)


def test_chelsea_pipeline_shapes_and_values(xp, capsys):
    img, banks = _chelsea_inputs()
    assert img.shape == (300, 451)
    stages = tutorial.pipeline(to_xp(xp, img), [to_xp(xp, b) for b in banks])
    assert [(s.layer, s.stage) for s in stages] == [(l, s) for l in (1, 2, 3) for s in ("conv", "relu", "pool")]
    assert [s.output.shape for s in stages] == [
        (298, 449, 2), (298, 449, 2), (149, 224, 2),
        (145, 220, 3), (145, 220, 3), (72, 110, 3),
        (66, 104, 1), (66, 104, 1), (33, 52, 1),
    ]  # fmt: skip
    assert all(s.ms >= 0 for s in stages)
    # the same chain with the independent references (pooling by reshape: sides are even here or cropped)
    x = img
    for bank, (conv_s, relu_s, pool_s) in zip(banks, [stages[i : i + 3] for i in (0, 3, 6)]):
        x = ref_conv(x, bank)
        np.testing.assert_allclose(to_host(conv_s.output), x, rtol=1e-10, atol=1e-9)
        x = np.maximum(x, 0)
        np.testing.assert_allclose(to_host(relu_s.output), x, rtol=1e-10, atol=1e-9)
        H, W, n_maps = x.shape
        x = x[: H // 2 * 2, : W // 2 * 2].reshape(H // 2, 2, W // 2, 2, n_maps).max(axis=(1, 3))
        np.testing.assert_allclose(to_host(pool_s.output), x, rtol=1e-10, atol=1e-9)
    assert capsys.readouterr() == ("", "")  # the tutorial printed progress; this prints nothing


def test_pipeline_depth_mismatch_raises():
    bank1 = np.ones((2, 3, 3))
    with pytest.raises(ValueError, match=r"\(3, 5, 5, 4\)"):
        tutorial.pipeline(np.ones((40, 40)), [bank1, np.ones((3, 5, 5, 4))])


def test_tutorial_module_names_no_array_library():
    """Compute-code rule: tutorial.py gets its array module from its input."""
    tree = ast.parse((ROOT / "xpcnn" / "tutorial.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not any(n.split(".")[0] in ("numpy", "cupy") for n in names), names


# ---------------------------------------------------------------- the tutorial's own loops


@pytest.mark.parametrize("shape, K", [((20, 23), 3), ((21, 18), 5), ((19, 24), 7)])
def test_tutorial_loop_conv_is_shifted_by_half_a_kernel(rng, shape, K):
    """The tutorial's conv: interior = correct map shifted by K//2, last 3 rows/cols zero."""
    loops = _load_loops()
    img, k = rng.random(shape), rng.random((1, K, K))
    theirs = _quiet(loops.conv, img, k)[:, :, 0]
    ours = tutorial.conv(img, k)[:, :, 0]
    assert theirs.shape == ours.shape  # same size, different content
    H, W = shape
    s, n, m = K // 2, H - K - 2, W - K - 2
    np.testing.assert_allclose(theirs[:n, :m], ours[s : s + n, s : s + m], rtol=1e-12, atol=1e-12)
    assert not np.allclose(theirs[:n, :m], ours[:n, :m])  # i.e. they are not aligned
    assert np.all(theirs[n:] == 0) and np.all(theirs[:, m:] == 0)


def test_tutorial_loop_pooling_drops_a_window_and_mixes_maps(rng):
    loops = _load_loops()
    fm = rng.random((10, 11, 2))
    theirs = loops.pooling(fm, 2, 2)
    ours = tutorial.pooling(fm, 2, 2)
    assert ours.shape == (5, 5, 2)
    assert theirs.shape == (4, 5, 2)  # uint16((10 - 2 + 1) / 2) rows: one window short
    # its loops stop at arange(0, W - size - 1): the last column is left at zero
    assert np.all(theirs[:, 4] == 0)
    # each window's max is over both maps, so the two pooled maps are equal
    np.testing.assert_array_equal(theirs[:, :4, 0], theirs[:, :4, 1])
    np.testing.assert_array_equal(theirs[:, :4, 0], ours[:4, :4].max(axis=2))


def test_tutorial_loop_relu_and_checks(rng):
    loops = _load_loops()
    x = rng.standard_normal((4, 5, 2))
    np.testing.assert_array_equal(loops.relu(x), tutorial.relu(x))
    with pytest.raises(ValueError, match="odd"):
        loops.conv(np.ones((8, 8)), np.ones((1, 2, 2)))
