"""Work that grows with the data, not with a parameter: huge strides in conv2d
(its stride phases) cost what a small stride costs for the same output."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate

from xpcnn import functional as F
from xpcnn.functional import conv as conv_module


def test_stride_phases_do_not_grow_with_the_stride():
    # One output position either way: only the phases the 3x3 taps read are kept.
    small = conv_module._Phases(F.conv_geometry((1, 1, 5, 5), (1, 1, 3, 3), stride=7))
    large = conv_module._Phases(F.conv_geometry((1, 1, 5, 5), (1, 1, 3, 3), stride=1000))
    assert large.size == small.size
    assert len(large.fills) == len(small.fills) <= 9


@pytest.mark.parametrize("algo", ["gemm", "shift", "rows", "auto"])
def test_huge_stride_gives_the_first_window(rng, algo):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    y = F.conv2d(x, w, stride=100_000, algo=algo)
    ref = np.array([[correlate(x[n], w[o], mode="valid")[0, 0, 0] for o in range(4)] for n in range(2)])
    np.testing.assert_allclose(y[:, :, 0, 0], ref, rtol=1e-5, atol=1e-5)
    assert y.shape == (2, 4, 1, 1)


def test_huge_stride_backward_matches_a_small_stride_with_the_same_output(rng):
    # Stride 4 and stride 100000 give one output row and column here: same gradients.
    x = rng.standard_normal((1, 2, 4, 4))
    w = rng.standard_normal((3, 2, 2, 2))
    dy = rng.standard_normal((1, 3, 1, 1))
    for a, b in zip(F.conv2d_backward(dy, x, w, stride=(3, 100_000)), F.conv2d_backward(dy, x, w, stride=3)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
