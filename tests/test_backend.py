"""Tests for xpcnn.backend and xpcnn.config: module lookup, default backend, errors."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, config
from xpcnn.backend import BackendUnavailableError

REPO = Path(__file__).resolve().parents[1]
INSTALL_HINT = 'pip install "xpcnn[cuda12]"'
CUPY_USABLE = "cupy" in backend.available()
needs_no_cupy = pytest.mark.skipif(CUPY_USABLE, reason="CuPy is usable here: the unavailable-backend errors cannot occur")
# The reason is one of the three the backend can find; the test only needs one of them to be named.
REASON = re.compile(r"(?i)not installed|failed to import|no cuda device")


@pytest.fixture(autouse=True)
def fresh_default(monkeypatch):
    """Every test starts with no default chosen and no XPCNN_BACKEND, and restores both."""
    monkeypatch.delenv("XPCNN_BACKEND", raising=False)
    monkeypatch.setattr(backend, "_default", None)


def run_python(code, **env):
    """Run `code` in a fresh interpreter with the repo importable; return the completed process."""
    full_env = dict(os.environ)
    full_env.pop("XPCNN_BACKEND", None)
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=str(REPO), timeout=120
    )


# --------------------------------------------------------------------------
# get_array_module, available
# --------------------------------------------------------------------------

@pytest.mark.parametrize("obj", [np.ones(3), np.float32(1.5), np.float64(2.0), 3.0, 7, [1.0, 2.0], (1, 2)])
def test_get_array_module_host_objects_are_numpy(obj):
    assert backend.get_array_module(obj) is np


def test_get_array_module_of_backend_arrays(xp):
    a = xp.ones((2, 3), dtype=xp.float32)
    assert backend.get_array_module(a) is xp
    assert backend.get_array_module(a, a) is xp


def test_available_starts_with_numpy():
    names = backend.available()
    assert isinstance(names, list)
    assert names[0] == "numpy"
    assert set(names) <= {"numpy", "cupy"}
    assert len(set(names)) == len(names)


def test_module_returns_the_array_module(xp):
    assert backend.module(xp.__name__) is xp
    assert backend.is_device(xp) == (xp.__name__ == "cupy")
    backend.synchronize(xp)  # a no-op on NumPy, a device sync on CuPy; must not fail


# --------------------------------------------------------------------------
# default backend: set_default, use, get_default
# --------------------------------------------------------------------------

def test_default_is_numpy_without_env():
    assert backend.get_default() == "numpy"
    assert backend.module() is np


def test_set_default_round_trip(xp):
    name = xp.__name__
    backend.set_default(name)
    assert backend.get_default() == name
    assert backend.module() is xp
    assert backend.get_array_module(backend.asarray([1.0, 2.0])) is xp
    backend.set_default("numpy")
    assert backend.get_default() == "numpy"


def test_use_switches_and_restores(xp):
    name = xp.__name__
    backend.set_default("numpy")
    with backend.use(name) as mod:
        assert mod is xp
        assert backend.get_default() == name
        assert backend.get_array_module(backend.asarray([1.0])) is xp
        with backend.use("numpy") as inner:
            assert inner is np
            assert backend.get_default() == "numpy"
        assert backend.get_default() == name
    assert backend.get_default() == "numpy"


def test_use_restores_on_exception(xp):
    backend.set_default("numpy")
    with pytest.raises(KeyError, match="boom"):
        with backend.use(xp.__name__):
            assert backend.get_default() == xp.__name__
            raise KeyError("boom")
    assert backend.get_default() == "numpy"


def test_use_restores_an_unchosen_default(xp):
    # No default chosen yet (None): after the block it is still unchosen, so a
    # later XPCNN_BACKEND is still honoured.
    with pytest.raises(ZeroDivisionError):
        with backend.use(xp.__name__):
            1 / 0
    assert backend._default is None


@pytest.mark.parametrize("call", ["set_default", "use", "module", "asarray"])
def test_unknown_backend_name_is_a_value_error_naming_it(call):
    backend.set_default("numpy")
    with pytest.raises(ValueError, match="tensorflow") as info:
        if call == "use":
            with backend.use("tensorflow"):
                pytest.fail("the block must not run")
        elif call == "asarray":
            backend.asarray([1.0], backend="tensorflow")
        else:
            getattr(backend, call)("tensorflow")
    assert "numpy" in str(info.value)  # the valid choices are listed
    assert backend.get_default() == "numpy"


@pytest.mark.parametrize("bad", [None, 3, np])
def test_non_string_backend_name_is_rejected(bad):
    with pytest.raises((TypeError, ValueError)):
        backend.set_default(bad)


# --------------------------------------------------------------------------
# CuPy unavailable
# --------------------------------------------------------------------------

def _check_unavailable(exc):
    assert isinstance(exc, RuntimeError)
    assert not isinstance(exc, ImportError)
    msg = str(exc)
    assert INSTALL_HINT in msg, msg
    assert REASON.search(msg), msg
    assert "cupy" in msg.lower()


@needs_no_cupy
@pytest.mark.parametrize("call", ["set_default", "use", "module", "asarray"])
def test_cupy_unavailable_raises_backend_unavailable(call):
    backend.set_default("numpy")
    with pytest.raises(BackendUnavailableError) as info:
        if call == "use":
            with backend.use("cupy"):
                pytest.fail("the block must not run")
        elif call == "asarray":
            backend.asarray([1.0], backend="cupy")
        else:
            getattr(backend, call)("cupy")
    _check_unavailable(info.value)
    assert backend.get_default() == "numpy"  # a failed switch changes nothing


def test_backend_unavailable_error_is_exported():
    assert xpcnn.BackendUnavailableError is BackendUnavailableError
    assert issubclass(BackendUnavailableError, RuntimeError)


@needs_no_cupy
def test_env_cupy_import_works_first_use_raises():
    code = (
        "import sys, xpcnn\n"
        "from xpcnn import backend\n"
        "print('IMPORTED')\n"
        "try:\n"
        "    backend.asarray([1.0])\n"
        "except xpcnn.BackendUnavailableError as exc:\n"
        "    print('RAISED', isinstance(exc, RuntimeError), exc)\n"
        "else:\n"
        "    print('NO ERROR')\n"
        "try:\n"
        "    backend.get_default()\n"
        "except xpcnn.BackendUnavailableError:\n"
        "    print('RAISED AGAIN')\n"
        "backend.set_default('numpy')\n"
        "print('RECOVERED', type(backend.asarray([1.0])).__module__)\n"
    )
    proc = run_python(code, XPCNN_BACKEND="cupy")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "IMPORTED" in out
    assert "RAISED True" in out, out
    assert INSTALL_HINT in out and REASON.search(out), out
    assert "RAISED AGAIN" in out, out
    assert "RECOVERED numpy" in out, out


def test_env_bogus_import_works_first_use_raises_value_error():
    code = (
        "import xpcnn\n"
        "from xpcnn import backend\n"
        "print('IMPORTED')\n"
        "try:\n"
        "    backend.asarray([1.0])\n"
        "except ValueError as exc:\n"
        "    print('VALUEERROR', exc)\n"
        "else:\n"
        "    print('NO ERROR')\n"
    )
    proc = run_python(code, XPCNN_BACKEND="bogus")
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED" in proc.stdout
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("VALUEERROR")]
    assert line, proc.stdout
    assert "bogus" in line[0] and "XPCNN_BACKEND" in line[0], line[0]


def test_env_numpy_selects_numpy(monkeypatch):
    monkeypatch.setenv("XPCNN_BACKEND", "numpy")
    assert backend.get_default() == "numpy"
    assert isinstance(backend.asarray([1.0]), np.ndarray)


def test_env_bogus_in_process_and_explicit_choice_wins(monkeypatch):
    monkeypatch.setenv("XPCNN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        backend.get_default()
    with pytest.raises(ValueError, match="bogus"):  # still raises, not silently numpy
        backend.asarray([1.0])
    backend.set_default("numpy")
    assert backend.get_default() == "numpy"


def test_env_cupy_when_usable(monkeypatch):
    if not CUPY_USABLE:
        pytest.skip("CuPy is not usable here")
    monkeypatch.setenv("XPCNN_BACKEND", "cupy")
    assert backend.get_default() == "cupy"
    assert backend.get_array_module(backend.asarray([1.0])) is backend.module("cupy")


# --------------------------------------------------------------------------
# asarray, to_numpy
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_asarray_dtype_conversion(xp, dtype):
    host = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)
    a = backend.asarray(host, backend=xp.__name__, dtype=dtype)
    assert backend.get_array_module(a) is xp
    assert a.dtype == np.dtype(dtype)
    assert a.shape == (2, 3)
    back = backend.to_numpy(a)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host.astype(dtype))


def test_asarray_keeps_dtype_and_accepts_lists(xp):
    a = backend.asarray(np.arange(4, dtype=np.float32), backend=xp.__name__)
    assert a.dtype == np.float32
    b = backend.asarray([[0.5, 1.5]], backend=xp.__name__)
    assert b.shape == (1, 2) and b.dtype == np.float64
    np.testing.assert_array_equal(backend.to_numpy(b), [[0.5, 1.5]])


def test_asarray_uses_default_backend(xp):
    with backend.use(xp.__name__):
        a = backend.asarray([1.0, 2.0], dtype="float32")
    assert backend.get_array_module(a) is xp
    assert a.dtype == np.float32


def test_asarray_moves_between_backends(xp):
    host = np.random.default_rng(0).standard_normal((3, 4))
    dev = backend.asarray(host, backend=xp.__name__)
    again = backend.asarray(dev, backend="numpy")
    assert isinstance(again, np.ndarray)
    np.testing.assert_array_equal(again, host)


def test_to_numpy_round_trip(xp):
    host = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    back = backend.to_numpy(xp.asarray(host))
    assert isinstance(back, np.ndarray)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, host)
    assert isinstance(backend.to_numpy(host), np.ndarray)


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------

def test_workspace_bytes_default():
    code = "import xpcnn.config as c; print(repr(c.workspace_bytes))"
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(256 * 2**20)


def test_workspace_bytes_is_a_plain_attribute(monkeypatch):
    assert isinstance(config.workspace_bytes, int)
    monkeypatch.setattr(config, "workspace_bytes", 1024)
    assert xpcnn.config.workspace_bytes == 1024
