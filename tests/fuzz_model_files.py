"""Fuzzing of model files: random mutations of valid files, each loaded under limits.

Every case starts from a valid model file (stored or deflated) and mutates
one of: its bytes, the zip's declared sizes and fields, the architecture's
JSON values, types and nesting, or an array's ``.npy`` header. Each case must
end in a model that predicts (on one sample of its recorded input shape) or
a ``ValueError`` that names the file, within a CPU-time and address-space
limit.

Cases run in a few worker processes (``python fuzz_model_files.py --worker``)
that build their cases from ``(seed, index)``, so a failure is reproduced by
its index alone. ``tests/test_model_fuzz.py`` runs a few hundred in CI; a
longer run::

    python tests/fuzz_model_files.py --cases 20000 --workers 2 [--seed 1]

prints one line per failing case and a summary, and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import zipfile

#: CPU seconds one case may use (a load that reads what the file holds takes milliseconds).
CASE_CPU_SECONDS = 20
#: Address space a worker may grow by over its state after start-up (bytes).
WORKER_EXTRA_MEMORY = 2 * 2**30
ARCH = "__xpcnn__"


# ------------------------------------------------------------------ valid files
def base_files(np):
    """Two valid files' bytes (stored and deflated) of a model with every layer type."""
    from xpcnn import layers as L
    from xpcnn.model import Sequential

    rng = np.random.default_rng(0)
    model = Sequential(
        L.Conv2D(1, 4, 3, padding=1, seed=rng), L.BatchNorm2D(4), L.LeakyReLU(0.1), L.MaxPool2D(2),
        L.Conv2D(4, 6, 2, groups=2, bias=False, seed=rng, init="glorot"), L.Tanh(), L.AvgPool2D(1),
        L.Flatten(), L.Dropout(0.2), L.Dense(6 * 3 * 3, 8, seed=rng), L.Sigmoid(), L.ReLU(), L.Dense(8, 3, seed=rng),
        input_shape=(1, 8, 8),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.npz")
        model.save(path)
        with open(path, "rb") as fh:
            stored = fh.read()
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return [stored, buf.getvalue()], arrays


def npy_bytes(np, array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def zip_of(members: dict, deflate: bool) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


# ------------------------------------------------------------------ random values
def random_int(r: random.Random) -> int:
    return r.choice([0, 1, -1, 2, 3, 4, 7, 8, 64, 10**3, 10**6, 10**9, 2**31, 2**32 + 1, 2**63, 2**64 + 3,
                     -(2**63), 10**30, 10**400, r.randint(-100, 100)])


def random_value(r: random.Random, depth: int = 0):
    kind = r.randrange(9)
    if kind == 0:
        return random_int(r)
    if kind == 1:
        return r.choice([0.5, -1.5, 1e308, -1e308, 1e-320, float("nan"), float("inf"), -0.0, 0.1])
    if kind == 2:
        return r.choice(["", "Conv2D", "Dense", "float16", "float64", "he", "torch", "gemm", "x" * 5000, "\u0000",
                         "xpcnn.Sequential", "os.system", "__class__"])
    if kind == 3:
        return r.choice([True, False, None])
    if kind == 4 and depth < 3:
        return [random_value(r, depth + 1) for _ in range(r.randrange(5))]
    if kind == 5 and depth < 3:
        return {r.choice(["type", "config", "format", "kernel_size", "a"]): random_value(r, depth + 1)
                for _ in range(r.randrange(4))}
    if kind == 6:
        depth = r.choice([10, 1000, 100_000])
        return json.loads("[" * depth + "]" * depth) if depth <= 500 else DeepNest(depth)
    if kind == 7:
        return [random_int(r) for _ in range(r.choice([0, 1, 2, 3, 40]))]
    return r.choice([[3, 3], [1, 10**12], [0, 0], [-1, 2], [2**40, 2**40], [1.5, 2]])


class DeepNest:
    """A JSON array nested `depth` deep, serialised by hand (json.dumps recursion stops earlier)."""

    def __init__(self, depth):
        self.depth = depth


def dumps(value) -> str:
    marks = {}

    def swap(v):
        if isinstance(v, DeepNest):
            key = f"@@deep{len(marks)}@@"
            marks[key] = "[" * v.depth + "]" * v.depth
            return key
        if isinstance(v, list):
            return [swap(x) for x in v]
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        return v

    text = json.dumps(swap(value))
    for key, deep in marks.items():
        text = text.replace(json.dumps(key), deep)
    return text


# ------------------------------------------------------------------ mutations
def mutate_json(r, np, arrays, deflate):
    arch = json.loads(arrays[ARCH].tobytes())
    slots = []  # (container, key) of every value in the tree

    def walk(v):
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, x in items:
            slots.append((v, k))
            walk(x)

    walk(arch)
    op = r.randrange(4)
    container, key = r.choice(slots)
    if op == 0:
        container[key] = random_value(r)
        what = f"json {key!r} := value"
    elif op == 1 and isinstance(container, dict):
        del container[key]
        what = f"json del {key!r}"
    elif op == 2:
        container[key] = [container[key]] if r.random() < 0.5 else {"x": container[key]}
        what = f"json wrap {key!r}"
    else:
        target = container[key] if isinstance(container[key], (dict, list)) else container
        if isinstance(target, dict):
            target[r.choice(["seed", "evil", "dtype", "init", "algo", "stride", "padding"])] = random_value(r)
        else:
            target.append(random_value(r))
        what = "json add"
    members = {k + ".npy": npy_bytes(np, v) for k, v in arrays.items() if k != ARCH}
    members[ARCH + ".npy"] = npy_bytes(np, np.frombuffer(dumps(arch).encode(), dtype=np.uint8))
    return zip_of(members, deflate), what


def mutate_header(r, np, arrays, deflate):
    key = r.choice(sorted(arrays))
    raw = npy_bytes(np, arrays[key])
    op = r.randrange(4)
    if op == 0:  # a different header dict, data unchanged
        d = {"descr": np.lib.format.dtype_to_descr(arrays[key].dtype), "fortran_order": False,
             "shape": arrays[key].shape}
        field = r.choice(["descr", "fortran_order", "shape"])
        if field == "descr":
            d["descr"] = r.choice(["<f8", ">f4", "<i4", "|u1", "|O", "<U3", "|V8", "<c8", "<f2", "|b1", [("a", "<f4")]])
        elif field == "fortran_order":
            d["fortran_order"] = True
        else:
            d["shape"] = r.choice([(10**12,), (2**62, 4), (), (0,), (-1,), (3, -3), (1,) * 40, (2**63,),
                                   tuple(reversed(arrays[key].shape)), (*arrays[key].shape, 1)])
        header = io.BytesIO()
        try:
            np.lib.format.write_array_header_1_0(header, d)
        except ValueError:
            np.lib.format.write_array_header_2_0(header, d)
        length = math.prod(arrays[key].shape) * arrays[key].dtype.itemsize
        raw = header.getvalue() + raw[len(raw) - length :]
        what = f"npy {key} {field}={d[field]!r}"
    elif op == 1:  # bytes inside the header
        b = bytearray(raw)
        for _ in range(r.randint(1, 4)):
            b[r.randrange(min(len(b), 128))] = r.randrange(256)
        raw, what = bytes(b), f"npy {key} header bytes"
    elif op == 2:  # version bytes
        raw, what = raw[:6] + bytes([r.choice([0, 1, 2, 3, 9, 255]), 0]) + raw[8:], f"npy {key} version"
    else:  # data length
        raw, what = (raw[:-r.randint(1, 8)] if r.random() < 0.5 else raw + b"\0" * r.randint(1, 64)), f"npy {key} length"
    members = {k + ".npy": npy_bytes(np, v) for k, v in arrays.items()}
    members[key + ".npy"] = raw
    return zip_of(members, deflate), what


def mutate_zip(r, data: bytes):
    b = bytearray(data)
    records = [i for i in range(len(b) - 4) if b[i : i + 4] in (b"PK\x01\x02", b"PK\x03\x04", b"PK\x05\x06")]
    at = r.choice(records)
    sig = bytes(b[at : at + 4])
    # field offsets: central dir (method 10, crc 16, sizes 20/24, name len 28, local offset 42);
    # local header (method 8, crc 14, sizes 18/22, name len 26); end record (counts 8/10, size 12, offset 16)
    fields = {b"PK\x01\x02": [10, 16, 20, 24, 28, 42], b"PK\x03\x04": [8, 14, 18, 22, 26],
              b"PK\x05\x06": [8, 10, 12, 16]}[sig]
    off = r.choice(fields)
    width = 2 if off in (8, 10, 26, 28) and sig != b"PK\x05\x06" or sig == b"PK\x05\x06" and off in (8, 10) else 4
    value = r.choice([0, 1, 8, 12, 14, 99, 2**width * 8 - 1, r.randrange(2 ** (8 * width))])
    value %= 2 ** (8 * width)
    b[at + off : at + off + width] = value.to_bytes(width, "little")
    return bytes(b), f"zip {sig[2:]!r}+{off} := {value}"


def mutate_bytes(r, data: bytes):
    b = bytearray(data)
    op = r.randrange(4)
    if op == 0:
        for _ in range(r.randint(1, 8)):
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        return bytes(b), "flip bits"
    if op == 1:
        n = r.randrange(len(b))
        return bytes(b[:n]), f"truncate at {n}"
    if op == 2:
        n = r.randrange(len(b))
        return bytes(b[:n]) + r.randbytes(r.randint(1, 64)) + bytes(b[n:]), f"insert at {n}"
    n, m = sorted(r.randrange(len(b)) for _ in range(2))
    return bytes(b[:m]) + bytes(b[n:m]) + bytes(b[m:]), f"repeat {n}:{m}"


def bomb(r, np, arrays):
    """A deflated member that inflates far beyond its stored size (an expected name or an extra one)."""
    key = r.choice([ARCH, "0.weight", "12.bias", "99.junk"])
    dtype = "|u1" if key == ARCH else "<f4"
    shape = (r.choice([2**22, 2**24]),)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, value in arrays.items():
            if name != key:
                z.writestr(name + ".npy", npy_bytes(np, value))
        info = zipfile.ZipInfo(key + ".npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as fh:
            fh.write(header.getvalue())
            zeros = b"\0" * 2**20
            for _ in range(shape[0] * np.dtype(dtype).itemsize // 2**20):
                fh.write(zeros)
    return buf.getvalue(), f"bomb {key} {shape}"


def make_case(seed: int, index: int, np, bases, arrays) -> tuple[bytes, str]:
    r = random.Random(seed * 1_000_003 + index)
    deflate = r.random() < 0.3
    kind = r.choices(["json", "header", "zip", "bytes", "bomb"], weights=[40, 20, 20, 18, 2])[0]
    if kind == "json":
        return mutate_json(r, np, arrays, deflate)
    if kind == "header":
        return mutate_header(r, np, arrays, deflate)
    if kind == "zip":
        return mutate_zip(r, bases[deflate])
    if kind == "bytes":
        return mutate_bytes(r, bases[deflate])
    return bomb(r, np, arrays)


# ------------------------------------------------------------------ one worker
def run_worker(seed: int, start: int, stop: int) -> None:
    """Run cases [start, stop); print one JSON line per case (``"begin"`` before each, then the result)."""
    import numpy as np

    from xpcnn.model import Sequential

    bases, arrays = base_files(np)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + WORKER_EXTRA_MEMORY, hard))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "case.npz")
        for index in range(start, stop):
            data, what = make_case(seed, index, np, bases, arrays)
            with open(path, "wb") as fh:
                fh.write(data)
            print(json.dumps({"begin": index, "what": what}), flush=True)
            used = resource.getrusage(resource.RUSAGE_SELF)
            cpu = used.ru_utime + used.ru_stime
            resource.setrlimit(resource.RLIMIT_CPU, (int(cpu) + CASE_CPU_SECONDS, resource.RLIM_INFINITY))
            result = {"index": index, "what": what}
            try:
                model = Sequential.load(path)
                result["outcome"] = "loaded"
                if model.input_shape is not None:
                    x = np.zeros((1, *model.input_shape), dtype=model.dtype or np.float32)
                    y = model.predict(x)
                    result["predicted"] = list(y.shape)
            except ValueError as exc:
                result["outcome"] = "ValueError"
                if path not in str(exc):
                    result["failure"] = f"ValueError that does not name the file: {exc}"
            except BaseException as exc:  # noqa: BLE001 -- anything else is what the fuzzer looks for
                result["outcome"] = type(exc).__name__
                result["failure"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(json.dumps(result), flush=True)


# ------------------------------------------------------------------ driver
def run(cases: int, workers: int, seed: int = 0) -> dict:
    """Run `cases` cases in `workers` processes; returns counts and the failures."""
    here = os.path.abspath(__file__)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(here)), env.get("PYTHONPATH", "")])
    bounds = [cases * w // workers for w in range(workers + 1)]
    procs = [
        subprocess.Popen([sys.executable, here, "--worker", str(seed), str(a), str(b)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for a, b in zip(bounds, bounds[1:]) if b > a
    ]
    outcomes, failures = {}, []
    for proc in procs:
        out, err = proc.communicate()
        begun, done = None, set()
        for line in out.splitlines():
            record = json.loads(line)
            if "begin" in record:
                begun = record
                continue
            done.add(record["index"])
            outcomes[record["outcome"]] = outcomes.get(record["outcome"], 0) + 1
            if "failure" in record:
                failures.append(record)
        if proc.returncode != 0:
            killed = begun if begun is not None and begun["begin"] not in done else None
            failures.append({"index": killed and killed["begin"], "what": killed and killed["what"],
                             "failure": f"worker exited with {proc.returncode} (CPU or memory limit?): {err[-500:]}"})
    return {"cases": sum(outcomes.values()), "outcomes": outcomes, "failures": failures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=3, type=int, metavar=("SEED", "START", "STOP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(*args.worker)
        return 0
    report = run(args.cases, args.workers, args.seed)
    for f in report["failures"]:
        print(f"case {f['index']} ({f['what']}): {f['failure']}")
    print(f"{report['cases']} cases, outcomes {report['outcomes']}, {len(report['failures'])} failures")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
