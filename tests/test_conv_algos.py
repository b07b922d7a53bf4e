"""Property sweep: every conv2d algorithm gives the same numbers on random geometries.

Hypothesis draws groups, dilation, stride (also larger than the kernel),
padding, 1x1 kernels, kernels as large as the padded input, batch 1 and
non-square images and kernels. All algorithms must agree in float32 and
float64 and match a float64 reference; the backward must satisfy the
adjoint identities of a bilinear map.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import to_host, to_xp

from xpcnn import backend
from xpcnn import functional as F

ALGOS = list(F.ALGOS)  # every algorithm, "auto" included


@st.composite
def geometries(draw):
    G = draw(st.integers(1, 3))
    C = G * draw(st.integers(1, 6 // G))
    O = G * draw(st.integers(1, 6 // G))  # noqa: E741
    N = draw(st.integers(1, 3))
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    DH, DW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    SH, SW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    PH, PW = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    eKH, eKW = DH * (KH - 1) + 1, DW * (KW - 1) + 1
    # Sometimes make the (dilated) kernel exactly as large as the padded input.
    H = eKH - 2 * PH if draw(st.booleans()) and eKH - 2 * PH >= 1 else draw(st.integers(1, 12))
    W = eKW - 2 * PW if draw(st.booleans()) and eKW - 2 * PW >= 1 else draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(N=N, C=C, H=H, W=W, O=O, KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW, DH=DH, DW=DW, G=G, seed=seed)


def _sweep(xp, geom):
    g = geom
    assume(g["DH"] * (g["KH"] - 1) + 1 <= g["H"] + 2 * g["PH"])
    assume(g["DW"] * (g["KW"] - 1) + 1 <= g["W"] + 2 * g["PW"])
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["N"], g["C"], g["H"], g["W"]))
    w = rng.standard_normal((g["O"], g["C"] // g["G"], g["KH"], g["KW"]))
    b = rng.standard_normal(g["O"])
    kw = dict(stride=(g["SH"], g["SW"]), padding=(g["PH"], g["PW"]), dilation=(g["DH"], g["DW"]), groups=g["G"])

    ref = to_host(F.conv2d(to_xp(xp, x), to_xp(xp, w), to_xp(xp, b), algo="einsum", **kw))
    OH = (g["H"] + 2 * g["PH"] - g["DH"] * (g["KH"] - 1) - 1) // g["SH"] + 1
    OW = (g["W"] + 2 * g["PW"] - g["DW"] * (g["KW"] - 1) - 1) // g["SW"] + 1
    assert ref.shape == (g["N"], g["O"], OH, OW)

    # Rounding scales with the sum of the terms' magnitudes, not with the result:
    # an output whose terms cancel to nearly 0 has a large error relative to itself
    # in any summation order. So errors are measured against conv(|x|, |w|) + |b|.
    mag = np.linalg.norm(to_host(F.conv2d(*(to_xp(xp, np.abs(a)) for a in (x, w, b)), algo="einsum", **kw)))

    def err(a, b):
        return np.linalg.norm(np.asarray(a, dtype=np.float64) - b) / mag

    x32, w32, b32 = (to_xp(xp, a.astype(np.float32)) for a in (x, w, b))
    x64, w64, b64 = (to_xp(xp, a) for a in (x, w, b))
    for algo in ALGOS:
        y64 = to_host(F.conv2d(x64, w64, b64, algo=algo, **kw))
        assert y64.dtype == np.float64
        assert err(y64, ref) <= 1e-13, (algo, "float64")
        y32 = to_host(F.conv2d(x32, w32, b32, algo=algo, **kw))
        assert y32.dtype == np.float32
        assert err(y32, ref) <= 1e-5, (algo, "float32 vs float64 reference")
        if algo != "einsum":
            ein32 = to_host(F.conv2d(x32, w32, b32, algo="einsum", **kw))
            assert err(y32, ein32) <= 1e-5, (algo, "float32 vs einsum float32")

    # Backward: conv is bilinear, so <conv(x, w), dy> = <x, dx> = <w, dw>, db = sum(dy).
    dy = rng.standard_normal(ref.shape)
    dx, dw, db = (to_host(a) for a in F.conv2d_backward(to_xp(xp, dy), x64, w64, **kw))
    inner = np.vdot(ref - b[None, :, None, None], dy)
    scale = np.linalg.norm(ref) * np.linalg.norm(dy) + 1e-300
    assert abs(np.vdot(x, dx) - inner) <= 1e-11 * scale
    assert abs(np.vdot(w, dw) - inner) <= 1e-11 * scale
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    # dx must also be right on inputs the forward did not see: <conv(x', w), dy> = <x', dx>.
    x_other = rng.standard_normal(x.shape)
    y_other = to_host(F.conv2d(to_xp(xp, x_other), w64, algo="einsum", **kw))
    assert abs(np.vdot(x_other, dx) - np.vdot(y_other, dy)) <= 1e-11 * (
        np.linalg.norm(y_other) * np.linalg.norm(dy) + 1e-300
    )


def _backend_param(name):
    ok = name in backend.available()
    return pytest.param(name, marks=pytest.mark.skipif(not ok, reason=f"backend {name} is not available here"))


@pytest.mark.parametrize("name", [_backend_param("numpy"), _backend_param("cupy")])
@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(geom=geometries())
def test_all_algorithms_agree(name, geom):
    _sweep(backend.module(name), geom)
