"""Hostile model files: loading costs what the file holds, any file loads or raises
ValueError, and save writes only what load accepts."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from xpcnn import layers as L
from xpcnn.model import Sequential

ARCH = "__xpcnn__"


def small_model():
    return Sequential(L.Conv2D(1, 2, 3, padding=1, seed=0), L.ReLU(), L.Flatten(), L.Dense(2 * 4 * 4, 3, seed=1),
                      input_shape=(1, 4, 4))


def arrays_of(model, tmp_path):
    path = tmp_path / "ok.npz"
    model.save(path)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def arch_array(arch):
    return np.frombuffer(json.dumps(arch).encode(), dtype=np.uint8)


def npy_bytes(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    return buf.getvalue()


def write_zip(path, members, compress=zipfile.ZIP_STORED):
    """Members: name -> bytes (or an array, written as .npy)."""
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in members.items():
            z.writestr(name, data if isinstance(data, bytes) else npy_bytes(data))


def peak_bytes(fn):
    """Peak of traced allocations (NumPy's data buffers included) while `fn` runs, and its exception."""
    tracemalloc.start()
    try:
        fn()
        error = None
    except Exception as exc:  # noqa: BLE001 -- returned for the caller to check
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


def load_error(path):
    with pytest.raises(ValueError) as info:
        Sequential.load(path)
    assert str(path) in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------- 1. sizes claimed by the file
def test_huge_layer_in_the_json_is_refused_without_allocating(tmp_path):
    arch = {"format": "xpcnn.Sequential", "version": 1, "input_shape": None,
            "layers": [{"type": "Dense", "config": {"in_features": 5000, "out_features": 5000}}]}
    path = tmp_path / "m.npz"
    write_zip(path, {ARCH + ".npy": arch_array(arch), "0.weight.npy": np.zeros((2, 2), np.float32),
                     "0.bias.npy": np.zeros(2, np.float32)})
    peak, error = peak_bytes(lambda: Sequential.load(path))
    assert isinstance(error, ValueError) and "has shape (2, 2), but Dense expects (5000, 5000)" in str(error)
    assert peak < 2**20  # the old loader drew 25M random numbers first (200 MB)


@pytest.mark.parametrize("config", [{"in_channels": 1, "out_channels": 10**12, "kernel_size": 3},
                                    {"in_channels": 10**12, "out_channels": 1, "kernel_size": 3},
                                    {"in_channels": 1, "out_channels": 1, "kernel_size": 2**40}])
def test_absurd_conv_sizes_give_value_error(tmp_path, config):
    arch = {"format": "xpcnn.Sequential", "version": 1, "input_shape": None,
            "layers": [{"type": "Conv2D", "config": config}]}
    path = tmp_path / "m.npz"
    write_zip(path, {ARCH + ".npy": arch_array(arch), "0.weight.npy": np.zeros((1, 1, 3, 3), np.float32),
                     "0.bias.npy": np.zeros(1, np.float32)})
    assert "layer 0" in load_error(path) or "0.weight" in load_error(path)


def test_npy_header_claiming_a_huge_shape_is_refused_before_reading(tmp_path):
    arrays = arrays_of(small_model(), tmp_path)
    members = {k + ".npy": v for k, v in arrays.items()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    members["0.bias.npy"] = header.getvalue() + b"\0" * 8
    path = tmp_path / "m.npz"
    write_zip(path, members)
    message = load_error(path)
    assert "entry '0.bias'" in message and "(1000000000000,)" in message


def test_zip_bomb_member_is_refused_from_the_directory(tmp_path):
    arrays = arrays_of(small_model(), tmp_path)
    path = tmp_path / "bomb.npz"
    write_zip(path, {k + ".npy": v for k, v in arrays.items()})
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z, z.open("junk.npy", "w") as fh:
        chunk = b"\0" * 2**20
        for _ in range(64):  # 64 MiB that deflate to ~64 KiB
            fh.write(chunk)
    peak, error = peak_bytes(lambda: Sequential.load(path))
    assert isinstance(error, ValueError) and "'junk.npy' claims to inflate" in str(error), error
    assert peak < 2**20


def test_unexpected_member_is_refused_without_being_read(tmp_path):
    arrays = arrays_of(small_model(), tmp_path)
    arrays["7.extra"] = np.zeros(2**22, np.float32)  # 16 MiB, stored
    path = tmp_path / "m.npz"
    write_zip(path, {k + ".npy": v for k, v in arrays.items()})
    peak, error = peak_bytes(lambda: Sequential.load(path))
    assert isinstance(error, ValueError) and "unexpected arrays ['7.extra']" in str(error)
    assert peak < 2**21


def test_load_reads_each_array_once_and_draws_no_weights(tmp_path):
    model = Sequential(L.Dense(2000, 2000, seed=0))
    path = tmp_path / "big.npz"
    model.save(path)
    weights = 2000 * 2001 * 4
    loaded = []
    peak, error = peak_bytes(lambda: loaded.append(Sequential.load(path)))
    assert error is None
    np.testing.assert_array_equal(loaded[0][0].params["weight"], model[0].params["weight"])
    # The bytes and the array: twice the weights. The old loader also drew
    # float64 random weights (2x more) that it threw away.
    assert peak < 2.5 * weights


def test_declared_sizes_larger_than_the_file_are_refused(tmp_path):
    path = tmp_path / "m.npz"
    small_model().save(path)
    raw = bytearray(path.read_bytes())
    # Central directory entry of the first member: compressed and uncompressed sizes at offsets 20 and 24.
    cd = raw.find(b"PK\x01\x02")
    raw[cd + 20 : cd + 28] = (2**31).to_bytes(4, "little") * 2
    path.write_bytes(bytes(raw))
    assert "bytes" in load_error(path)


# ---------------------------------------------------------------- 2. nothing but ValueError escapes
def test_deeply_nested_json_is_a_value_error(tmp_path):
    arrays = arrays_of(small_model(), tmp_path)
    arrays[ARCH] = np.frombuffer(b"[" * 100_000 + b"]" * 100_000, np.uint8)
    path = tmp_path / "m.npz"
    write_zip(path, {k + ".npy": v for k, v in arrays.items()})
    assert "nested too deeply" in load_error(path)


def test_nested_config_value_is_a_value_error(tmp_path):
    arrays = arrays_of(small_model(), tmp_path)
    arch = json.loads(arrays[ARCH].tobytes())
    arch["layers"][0]["config"]["padding"] = [[[[1]]]]
    arrays[ARCH] = arch_array(arch)
    path = tmp_path / "m.npz"
    write_zip(path, {k + ".npy": v for k, v in arrays.items()})
    assert "layer 0 (Conv2D): bad arguments: 'padding'" in load_error(path)


@pytest.mark.parametrize("name, data", [("notes.txt", b"hello"), ("0.bias.npy", b"not an array at all"),
                                        (ARCH + ".npy", b"\x93NUMPY\x09\x00garbage")])
def test_member_that_is_not_an_npy_array_is_a_value_error(tmp_path, name, data):
    arrays = arrays_of(small_model(), tmp_path)
    members = {k + ".npy": v for k, v in arrays.items()}
    members[name] = data
    path = tmp_path / "m.npz"
    write_zip(path, members)
    load_error(path)


def test_compressed_model_still_loads(tmp_path):
    model = small_model()
    arrays = arrays_of(model, tmp_path)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, **arrays)
    x = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)
    np.testing.assert_array_equal(Sequential.load(path).predict(x), model.predict(x))


# ---------------------------------------------------------------- 4. save writes only what load accepts
@pytest.mark.parametrize("change, error, message", [
    (lambda p: p["weight"].astype(np.float64), ValueError, r"has dtype float64, but the layer's dtype is float32"),
    (lambda p: p["weight"].tolist(), TypeError, r"\['weight'\] must be a NumPy or CuPy array, got list"),
    (lambda p: p["weight"][:1], ValueError, r"has shape \(1, 1, 3, 3\), but the layer needs \(2, 1, 3, 3\)"),
])
def test_save_refuses_what_load_would_refuse(tmp_path, change, error, message):
    model = small_model()
    model[0].params["weight"] = change(model[0].params)
    path = tmp_path / "m.npz"
    with pytest.raises(error, match=message):
        model.save(path)
    assert not path.exists()


def test_save_refuses_a_missing_parameter(tmp_path):
    model = small_model()
    del model[3].params["bias"]
    with pytest.raises(ValueError, match=r"its params are \['weight'\], but its arguments imply \['bias', 'weight'\]"):
        model.save(tmp_path / "m.npz")
