"""``algo="auto"``: a one-time timed trial per geometry, dtype and device, then the fastest.

The trial is tested with candidates made slow on purpose (a sleep far longer
than the tiny convolution): it must pick the one left fast, run once per
key, and fall back to the fixed rule when autotuning is off.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import to_host, to_xp

from xpcnn import config
from xpcnn import functional as F
from xpcnn.functional import conv

SLOW_S = 0.02


@pytest.fixture
def counted(monkeypatch):
    """Replace the candidates with counting wrappers; ``slow`` names the ones that also sleep."""
    calls = {a: 0 for a in conv.CANDIDATES}
    slow = set()

    def wrap(algo, real):
        def fn(*args):
            calls[algo] += 1
            if algo in slow:
                time.sleep(SLOW_S)
            return real(*args)

        return fn

    table = dict(conv._FORWARD)
    for algo in conv.CANDIDATES:
        table[algo] = wrap(algo, conv._FORWARD[algo])
    monkeypatch.setattr(conv, "_FORWARD", table)
    monkeypatch.setattr(conv, "_tuned", {})
    monkeypatch.setattr(config, "conv_autotune", True)
    return calls, slow


def _arrays(xp, rng, dtype=np.float32, n=2):
    x = to_xp(xp, rng.standard_normal((n, 3, 9, 8)).astype(dtype))
    w = to_xp(xp, rng.standard_normal((4, 3, 3, 3)).astype(dtype))
    return x, w


@pytest.mark.parametrize("fast", conv.CANDIDATES)
def test_trial_picks_the_fastest(xp, rng, counted, fast):
    calls, slow = counted
    slow.update(set(conv.CANDIDATES) - {fast})
    x, w = _arrays(xp, rng)
    y = F.conv2d(x, w, padding=1)
    g = F.conv_geometry(x.shape, w.shape, padding=1)
    for dtype in (x.dtype, np.float32, "float32"):  # any spelling of the dtype finds the trial
        assert F.choose_algo(g, xp, dtype) == fast
    # Every candidate ran once untimed and TRIAL_ROUNDS times timed; the winner once more for the result.
    assert calls == {a: 1 + conv.TRIAL_ROUNDS + (a == fast) for a in conv.CANDIDATES}
    ref = F.conv2d(x, w, padding=1, algo=fast)
    np.testing.assert_array_equal(to_host(y), to_host(ref))


def test_trial_runs_once_per_geometry_and_dtype(xp, rng, counted):
    calls, _ = counted
    x, w = _arrays(xp, rng)
    F.conv2d(x, w)
    first = sum(calls.values())
    assert first == len(conv.CANDIDATES) * (1 + conv.TRIAL_ROUNDS) + 1
    F.conv2d(x, w)  # cached: one call of the winner
    assert sum(calls.values()) == first + 1
    F.conv2d(x[:1], w)  # another batch size is another geometry: a new trial
    F.conv2d(x.astype(np.float64), w.astype(np.float64))  # another dtype too
    assert sum(calls.values()) == 3 * first + 1
    F.clear_autotune_cache()
    F.conv2d(x, w)
    assert sum(calls.values()) == 4 * first + 1


def test_autotune_off_uses_the_rule(xp, rng, counted, monkeypatch):
    calls, slow = counted
    monkeypatch.setattr(config, "conv_autotune", False)
    x, w = _arrays(xp, rng)
    g = F.conv_geometry(x.shape, w.shape, stride=2)
    rule = F.rule_algo(g, xp)
    slow.add(rule)  # would lose a trial, but no trial runs
    F.conv2d(x, w, stride=2)
    assert calls == {a: int(a == rule) for a in conv.CANDIDATES}
    assert F.choose_algo(g, xp, x.dtype) == rule


def test_explicit_algo_never_tunes(xp, rng, counted):
    calls, _ = counted
    x, w = _arrays(xp, rng)
    F.conv2d(x, w, algo="shift")
    assert calls == {**dict.fromkeys(conv.CANDIDATES, 0), "shift": 1}
    assert not conv._tuned


def test_rule_picks_gemm_for_strides_and_few_channels():
    def g(C, stride=1, N=4, groups=1):
        return F.conv_geometry((N, C, 16, 16), (8, C // groups, 3, 3), stride, groups=groups)

    assert F.rule_algo(g(16, stride=2)) == "gemm"
    assert F.rule_algo(g(3)) == "gemm"
    assert F.rule_algo(g(6)) == "gemm"
    assert F.rule_algo(g(7)) == "rows"
    assert F.rule_algo(g(16)) == "rows"
    assert F.rule_algo(g(3, N=1)) == "tiles"
    assert F.rule_algo(g(16, N=1)) == "tiles"
    # A stride along one axis is enough: each of H and W is looked at.
    assert F.rule_algo(g(16, stride=(1, 2))) == "gemm"
    assert F.rule_algo(g(16, stride=(2, 1))) == "gemm"
    # The channel condition counts the channels of one group: 24 in 4 groups is 6 per group.
    assert F.rule_algo(g(24, groups=4)) == "gemm"
    assert F.rule_algo(g(16, groups=2)) == "rows"
