"""The CuPy stand-in itself: strict where CuPy is strict, counting what CuPy pays for."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from xpcnn.testing import fakecupy as fc


@pytest.fixture
def cp():
    with fc.installed() as module:
        fc.counts.reset()
        yield module


def test_install_registers_cupy_and_uninstall_restores():
    before = sys.modules.get("cupy")
    with fc.installed(devices=2):
        import cupy  # noqa: PLC0415

        assert cupy is fc and cupy.__name__ == "cupy"
        assert cupy.cuda.runtime.getDeviceCount() == 2
        assert sys.modules["cupy.cuda"] is fc.cuda
    assert sys.modules.get("cupy") is before


def test_not_a_numpy_array_and_no_implicit_conversion(cp):
    a = cp.arange(6.0)
    assert not isinstance(a, np.ndarray)
    for convert in (np.asarray, np.array, np.ascontiguousarray, lambda x: np.testing.assert_allclose(x, x)):
        with pytest.raises(TypeError, match="Implicit conversion"):
            convert(a)


@pytest.mark.parametrize("mix", [
    lambda a, h: a + h, lambda a, h: h * a, lambda a, h: np.add(a, h), lambda a, h: fc.maximum(a, h),
    lambda a, h: a @ h.reshape(3, 2), lambda a, h: fc.concatenate([a, h]), lambda a, h: fc.where(a > 0, a, h),
    lambda a, h: fc.ascontiguousarray(h),
])
def test_device_and_host_arrays_in_one_op_raise(cp, mix):
    with pytest.raises(TypeError, match="Unsupported type|incorrect type"):
        mix(cp.arange(6.0).reshape(2, 3), np.ones((2, 3)))


def test_numpy_functions_dispatch_to_the_stand_in_or_raise(cp):
    h = np.arange(12.0).reshape(3, 4)
    a = cp.asarray(h)
    for f in (np.exp, np.sum, np.transpose, lambda x: np.concatenate([x, x]), lambda x: np.matmul(x, x.T)):
        got = f(a)
        assert isinstance(got, fc.ndarray)
        np.testing.assert_array_equal(got.get(), f(h))
    with pytest.raises(TypeError, match="no implementation found"):
        np.fft.fft(a)  # CuPy's fft lives elsewhere: not a cupy.fft here
    assert np.less(a, np.array(3.0)).get().sum() == 3  # a 0-d host array is a scalar to comparisons


def test_reductions_and_scalar_indexing_stay_on_the_device(cp):
    a = cp.arange(6.0).reshape(2, 3)
    for r in (a.sum(), a.max(), a[1, 2], cp.mean(a), a.argmax()):
        assert isinstance(r, fc.ndarray) and r.ndim == 0
    assert fc.counts.transfers == 0


def test_transfers_are_counted(cp):
    a = cp.arange(4.0)
    cases = [("get", lambda: a.get()), ("float", lambda: float(a[1])), ("int", lambda: int(a[1])),
             ("bool", lambda: bool(a[1] > 0)), ("item", lambda: a[2].item()), ("repr", lambda: repr(a)),
             ("str", lambda: str(a)), ("format", lambda: f"{a[0]:.1f}"), ("tolist", lambda: a.tolist()),
             ("get", lambda: cp.asnumpy(a)), ("pickle", lambda: pickle.dumps(a)),
             ("mask", lambda: a[a > 1]), ("nonzero", lambda: a.nonzero()), ("unique", lambda: cp.unique(a))]
    for kind, transfer in cases:
        fc.counts.reset()
        transfer()
        assert fc.counts.transfer_kinds == [kind]
    fc.counts.reset()
    b = cp.asarray(np.ones(3)) * 2 + a[:3]  # host-to-device and device work: free
    assert fc.counts.transfers == 0
    np.testing.assert_array_equal(cp.asnumpy(b), [2.0, 3.0, 4.0])


def test_asarray_of_host_data_copies(cp):
    h = np.zeros(3)
    a = cp.asarray(h)
    h[0] = 1.0
    assert a.get()[0] == 0.0
    assert cp.asarray(a) is a and cp.asarray(a, dtype=a.dtype) is a
    with pytest.raises(ValueError, match="Unsupported dtype"):
        cp.asarray(np.array(["a"]))


def test_ufuncs_take_only_cupys_keywords_and_never_warn(cp):
    a = cp.asarray(np.array([1e30, -1.0], dtype=np.float32))
    with pytest.raises(TypeError):
        cp.exp(a, where=a > 0)
    with np.errstate(all="raise"):
        y = cp.exp(a * a).get()
    assert np.isinf(y[0])
    with pytest.raises(TypeError):
        cp.einsum("i,i->", a, a, out=cp.zeros(()))


def test_setitem_refuses_host_arrays_into_basic_indexes(cp):
    a = cp.zeros((2, 3))
    with pytest.raises(ValueError, match="non-scalar"):
        a[0] = np.ones(3)
    a[0] = cp.ones(3)
    a[1, cp.asarray(np.array([0, 2]))] = 5.0
    np.testing.assert_array_equal(a.get(), [[1, 1, 1], [5, 0, 5]])


def test_flags_have_no_writeable_and_in_place_ops_keep_the_object(cp):
    a = cp.ones((2, 3))
    assert a.T.flags.f_contiguous and not a.T.flags.c_contiguous
    with pytest.raises(AttributeError):
        a.flags.writeable  # noqa: B018
    b = a
    b += 1
    assert b is a and float(a[0, 0]) == 2.0


def test_sliding_window_view_syncs_once_per_window_dimension_and_is_read_only(cp):
    h = np.arange(20.0).reshape(4, 5)
    w = cp.lib.stride_tricks.sliding_window_view(cp.asarray(h), (2, 3))
    assert fc.counts.transfer_kinds == ["bool", "bool"]
    np.testing.assert_array_equal(w.get(), np.lib.stride_tricks.sliding_window_view(h, (2, 3)))
    with pytest.raises(ValueError):
        w[0, 0, 0, 0] = 1.0


def test_matmul_counts_the_copies_cupy_makes():
    h = np.arange(24.0, dtype=np.float32).reshape(2, 3, 4)
    with fc.installed() as cp:
        a = cp.asarray(h)
        fc.counts.reset()
        for x, y in [(a[0], a[0].T), (a, a.transpose(0, 2, 1))]:  # 2-D: F order is read as it is
            np.testing.assert_allclose(cp.matmul(x, y).get(), np.matmul(x.get(), y.get()))
        assert fc.counts.matmul_calls == 2
        assert fc.counts.matmul_copies == [(2, 4, 3)] and fc.counts.matmul_copy_bytes == h.nbytes
        fc.counts.reset()
        out = cp.zeros((2, 3, 3), dtype=np.float64)  # another dtype: a temporary, then a copy
        assert cp.matmul(a, a.transpose(0, 2, 1).copy(), out=out) is out
        assert fc.counts.matmul_copies == [(2, 3, 3)]
        np.testing.assert_allclose(out.get(), h @ h.transpose(0, 2, 1))


def test_devices_and_streams_are_per_thread_context_managers():
    with fc.installed(devices=2) as cp:
        assert cp.cuda.Device().id == 0
        with cp.cuda.Device(1) as d:
            assert cp.cuda.Device().id == 1 == d.id
            assert cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].endswith(b"1")
        assert cp.cuda.Device().id == 0
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
            cp.cuda.Device(2)
        null = cp.cuda.get_current_stream()
        with cp.cuda.Stream() as s:
            assert cp.cuda.get_current_stream() is s and s.ptr != null.ptr
        assert cp.cuda.get_current_stream() is null


def test_random_generators_are_counted_and_give_device_arrays(cp):
    g = cp.random.default_rng(0)
    u = g.random((3, 2), dtype=np.float32)
    assert isinstance(u, fc.ndarray) and u.dtype == np.float32 and fc.counts.generators == 1
    assert not hasattr(g, "normal")  # CuPy's Generator has standard_normal only
    np.testing.assert_array_equal(u.get(), np.random.default_rng(0).random((3, 2), dtype=np.float32))
