"""Model files: round trips, every corrupted or foreign file raising a clear error,
pickled payloads refused without running, and saves that never destroy the old file."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from conftest import to_host

from xpcnn import backend
from xpcnn.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from xpcnn.model import FORMAT, Sequential

ARCH = "__xpcnn__"


def _name(xp):
    return "cupy" if backend.is_device(xp) else "numpy"


def every_layer_model(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2D(1, 4, 3, padding=1, seed=rng), BatchNorm2D(4), LeakyReLU(0.1), MaxPool2D(2),
        Conv2D(4, 6, 2, groups=2, bias=False, seed=rng, init="glorot"), Tanh(), AvgPool2D(1),
        Flatten(), Dropout(0.2, seed=1), Dense(6 * 3 * 3, 8, seed=rng), Sigmoid(), ReLU(), Dense(8, 3, seed=rng),
        input_shape=(1, 8, 8),
    )


def trained_model(rng):
    model = every_layer_model()
    x = rng.random((40, 1, 8, 8), dtype=np.float32)
    model.fit(x, rng.integers(0, 3, 40), epochs=2, batch_size=8, progress=False)  # BN statistics move
    return model, x


def read_npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def write_npz(path, arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def arch_of(arrays):
    return json.loads(arrays[ARCH].tobytes().decode())


def with_arch(arrays, arch):
    return {**arrays, ARCH: np.frombuffer(json.dumps(arch).encode(), dtype=np.uint8)}


@pytest.fixture
def saved(tmp_path, rng):
    model, x = trained_model(rng)
    path = tmp_path / "model.npz"
    model.save(path)
    return model, x, path


# ---------------------------------------------------------------- round trips
def test_round_trip_gives_identical_predictions(saved):
    model, x, path = saved
    loaded = Sequential.load(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert [type(a) for a in loaded] == [type(b) for b in model]
    assert [a.get_config() for a in loaded] == [b.get_config() for b in model]
    assert loaded.input_shape == (1, 8, 8)
    for a, b in zip(loaded, model):
        for key in {**b.params, **b.buffers}:
            got = a.params.get(key, a.buffers.get(key))
            np.testing.assert_array_equal(got, b.params.get(key, b.buffers.get(key)))
    assert not np.array_equal(loaded[1].buffers["running_mean"], 0)  # the trained statistics came back
    assert loaded.summary() == model.summary()


def test_file_layout_uses_state_dict_names_and_json(saved):
    _, _, path = saved
    arrays = read_npz(path)
    assert arrays[ARCH].dtype == np.uint8
    arch = arch_of(arrays)
    assert arch["format"] == FORMAT and arch["version"] == 1 and arch["input_shape"] == [1, 8, 8]
    assert arch["layers"][0] == {"type": "Conv2D", "config": every_layer_model()[0].get_config()}
    assert {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "4.weight"} <= set(arrays)
    assert "4.bias" not in arrays
    # No pickles inside: every entry loads with allow_pickle=False (read_npz's default).
    assert all(a.dtype != object for a in arrays.values())


def test_save_uses_the_name_as_given_with_a_normal_mode(tmp_path):
    path = tmp_path / "weights.bin"
    Sequential(Dense(2, 2)).save(str(path))
    assert path.is_file() and not (tmp_path / "weights.bin.npz").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert Sequential.load(path).num_params() == 6


def test_cupy_model_saves_host_arrays_and_loads_on_default_backend(xp, tmp_path, rng):
    """Save a model of backend `xp`, load it on NumPy and on `xp`."""
    with backend.use(_name(xp)):
        model = every_layer_model()
    x = rng.random((5, 1, 8, 8), dtype=np.float32)
    expected = to_host(model.predict(x))
    path = tmp_path / "m.npz"
    model.save(path)
    with backend.use("numpy"):
        on_host = Sequential.load(path)
    assert on_host.backend == "numpy"
    for (a, name), (b, _) in zip(on_host.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.params[name], to_host(b.params[name]))
    np.testing.assert_allclose(on_host.predict(x), expected, rtol=1e-5, atol=1e-6)
    with backend.use(_name(xp)):
        again = Sequential.load(path)
    assert again.backend == _name(xp)
    np.testing.assert_array_equal(to_host(again.predict(x)), expected)


# ---------------------------------------------------------------- corrupted and foreign files
def _mutations():
    """name -> function(arrays dict, raw bytes) returning new bytes or a new arrays dict, and the expected message."""

    def arrays_case(fn):
        return lambda arrays, raw: fn(dict(arrays))

    def bytes_case(fn):
        return lambda arrays, raw: fn(raw)

    def arch_case(fn):
        def apply(arrays, raw):
            arch = arch_of(arrays)
            fn(arch)
            return with_arch(arrays, arch)

        return apply

    def drop(key):
        return arrays_case(lambda a: {k: v for k, v in a.items() if k != key})

    def setv(key, value):
        return arrays_case(lambda a: {**a, key: value})

    def flip(raw):
        b = bytearray(raw)
        b[len(b) // 3] ^= 0xFF
        return bytes(b)

    return {
        "truncated-half": (bytes_case(lambda r: r[: len(r) // 2]), "not a readable xpcnn model file: File is not a zip"),
        "truncated-tail": (bytes_case(lambda r: r[:-10]), "not a readable xpcnn model file"),
        "empty": (bytes_case(lambda r: b""), r"not a zip \(.npz\) archive \(an empty file\)"),
        "random-bytes": (bytes_case(lambda r: b"\x80\x04" + np.random.default_rng(0).bytes(500)), "not a zip"),
        "bit-flip": (bytes_case(flip), "not a readable xpcnn model file: Bad CRC-32"),
        "text-file": (bytes_case(lambda r: b"hello, I am not a model\n" * 10), r"starts with b'hello,'"),
        "foreign-npz": (drop(ARCH), "no architecture entry '__xpcnn__'"),
        "arch-float": (setv(ARCH, np.zeros(4)), "1-D uint8 JSON"),
        "bad-json": (setv(ARCH, np.frombuffer(b"{not json", np.uint8)), "not valid JSON"),
        "json-list": (setv(ARCH, np.frombuffer(b"[1, 2]", np.uint8)), "not an xpcnn model: format 'list'"),
        "other-format": (arch_case(lambda a: a.update(format="keras")), "format 'keras'"),
        "newer-version": (arch_case(lambda a: a.update(version=99)), "version 99 is newer"),
        "unknown-layer": (arch_case(lambda a: a["layers"][2].update(type="Lambda")), "layer 2: unknown layer type 'Lambda'"),
        "os-system-layer": (arch_case(lambda a: a["layers"][2].update(type="os.system")), "unknown layer type 'os.system'"),
        "bad-config": (arch_case(lambda a: a["layers"][0]["config"].update(kernel_size=-1)),
                       r"layer 0 \(Conv2D\): bad arguments"),
        "unexpected-config": (arch_case(lambda a: a["layers"][3]["config"].update(evil="rm -rf /")),
                              r"layer 3 \(MaxPool2D\): bad arguments"),
        "layers-not-list": (arch_case(lambda a: a.update(layers="Conv2D")), "'layers' must be a list"),
        "layer-not-dict": (arch_case(lambda a: a["layers"].__setitem__(1, "BatchNorm2D")), "layer 1: expected"),
        "bad-input-shape": (arch_case(lambda a: a.update(input_shape=[1, -8, 8])), "bad input_shape"),
        "missing-weight": (drop("9.weight"), r"missing array '9.weight' \(Dense weight, shape \(8, 54\)\)"),
        "missing-buffer": (drop("1.running_var"), "missing array '1.running_var'"),
        "extra-array": (setv("12.extra", np.zeros(3, np.float32)), r"unexpected arrays \['12.extra'\]"),
        "shape-mismatch": (setv("0.weight", np.zeros((4, 1, 5, 5), np.float32)),
                           r"'0.weight' has shape \(4, 1, 5, 5\), but Conv2D expects \(4, 1, 3, 3\)"),
        "dtype-mismatch": (setv("12.bias", np.zeros(3, np.float64)), "'12.bias' has dtype float64, but Dense expects float32"),
        "int-weights": (setv("12.bias", np.zeros(3, np.int32)), "dtype int32"),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_corrupted_or_foreign_file_raises_value_error(saved, case):
    _, _, path = saved
    mutate, message = MUTATIONS[case]
    result = mutate(read_npz(path), path.read_bytes())
    if isinstance(result, bytes):
        path.write_bytes(result)
    else:
        write_npz(path, result)
    with pytest.raises(ValueError, match=message) as info:
        Sequential.load(path)
    assert str(path) in str(info.value)


def test_single_npy_array_is_not_a_model(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match=r"a single .npy array, not an xpcnn model file"):
        Sequential.load(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        Sequential.load(tmp_path / "nope.npz")


# ---------------------------------------------------------------- pickles
class _Payload:
    """Unpickling this object creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("where", ["npz-member", "npy-file", "raw-pickle"])
def test_pickled_payload_is_refused_without_running(saved, tmp_path, where):
    _, _, path = saved
    marker = tmp_path / f"pwned-{where}"
    payload = np.array([_Payload(marker), 1], dtype=object)
    if where == "npz-member":
        arrays = read_npz(path)
        arrays["0.weight"] = payload
        write_npz(path, arrays)
        # The file really is armed: loading it with pickles allowed runs the payload.
        with np.load(path, allow_pickle=True) as f:
            f["0.weight"]
        assert marker.exists()
        marker.unlink()
    elif where == "npy-file":
        with open(path, "wb") as fh:
            np.save(fh, payload, allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))
    message = "entry '0.weight' holds pickled Python objects" if where == "npz-member" else "not a"
    with pytest.raises(ValueError, match=message):
        Sequential.load(path)
    assert not marker.exists()


# ---------------------------------------------------------------- atomic saves
def test_interrupted_save_keeps_the_previous_file(saved, monkeypatch, tmp_path):
    model, x, path = saved
    before = path.read_bytes()
    expected = model.predict(x)

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", broken_savez)
    new = Sequential(Dense(2, 2))
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    np.testing.assert_array_equal(Sequential.load(path).predict(x), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]  # no temporary file left


def test_interrupted_save_by_keyboard_interrupt_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(fh, **arrays):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Sequential(Dense(2, 2)).save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_unregistered_layer_cannot_be_saved(tmp_path):
    class Custom(ReLU):
        pass

    class Bare(Layer):
        def forward(self, x, training=False):
            return x

    for layer in (Custom(), Bare()):
        with pytest.raises(TypeError, match="only the layer types of xpcnn.layers.REGISTRY"):
            Sequential(Dense(2, 2), layer).save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_folder_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        Sequential(Dense(2, 2)).save(tmp_path / "no" / "m.npz")
