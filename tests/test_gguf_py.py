"""GGUF, two implementations checking each other: files written by tests/tools/gguf_ref.py (plain
Python from the spec) are read by `nexusctl model inspect --json` and loaded with --check, and
files written by nx_gguf_save (through tests/tool_gguf_write) are read by gguf_ref.py. Every
key/value type, array type and field is compared."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tools"))
import gguf_ref as g  # noqa: E402

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")
TOOL = os.path.join(BUILD, "tests", "tool_gguf_write")


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="nx-gguf-py-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def every_kv():
    """(key, type, value[, elem_type]) for every scalar and array type, extremes included."""
    return [
        ("general.architecture", g.STR, "llama"),
        ("s.u8", g.U8, 255), ("s.i8", g.I8, -128), ("s.u16", g.U16, 65535),
        ("s.i16", g.I16, -32768), ("s.u32", g.U32, 4294967295), ("s.i32", g.I32, -2147483648),
        ("s.f32", g.F32, 0.1), ("s.bool", g.BOOL, False), ("s.u64", g.U64, 2**64 - 1),
        ("s.i64", g.I64, -2**63), ("s.f64", g.F64, -1.25e-300),
        ("s.str.utf8", g.STR, "h\u00e9llo \u4e16\u754c \U0001f600"),
        ("s.str.empty", g.STR, ""),
        ("s.str.bad", g.STR, b"ok\xff\xfe"),
        ("a.u8", g.ARR, [0, 7, 255], g.U8), ("a.i8", g.ARR, [-1, 1], g.I8),
        ("a.u16", g.ARR, [1, 65535], g.U16), ("a.i16", g.ARR, [-300, 300], g.I16),
        ("a.u32", g.ARR, [1, 2**32 - 1], g.U32), ("a.i32", g.ARR, list(range(-20, 20)), g.I32),
        ("a.f32", g.ARR, [0.5, -3.25, 1e-7, 3e38], g.F32),
        ("a.bool", g.ARR, [True, False, True], g.BOOL),
        ("a.u64", g.ARR, [0, 2**63, 2**64 - 1], g.U64), ("a.i64", g.ARR, [-2**63, 2**63 - 1], g.I64),
        ("a.f64", g.ARR, [1 / 3, -0.0], g.F64),
        ("a.str", g.ARR, ["\u0120the", "", "a b", "<|im_start|>"] * 10, g.STR),
        ("a.empty", g.ARR, [], g.F32),
    ]


def expect_json_value(vtype, value):
    """What nexusctl's JSON holds for a value gguf_ref wrote."""
    if vtype == g.STR:
        raw = value if isinstance(value, bytes) else value.encode()
        return raw.decode("utf-8", errors="replace")
    if vtype == g.F32:
        return float(np.float32(value))
    if vtype == g.U64 and value > 2**63 - 1:
        return str(value)
    if vtype == g.BOOL:
        return bool(value)
    return value


def sample_tensors(seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, 64)).astype(np.float32)
    return [
        ("token_embd.weight", "F32", [5, 3], rng.standard_normal((5, 3)).astype(np.float32).tobytes()),
        ("blk.0.ffn.weight", "Q8_0", [6, 64], g.quantize_q8_0(w)),
        ("blk.0.norm", "F16", [33], rng.standard_normal(33).astype(np.float16).tobytes()),
        ("blk.0.attn.weight", "BF16", [2, 3, 4], g.bf16_bytes(rng.standard_normal((2, 3, 4)))),
        ("four.d", "F32", [2, 1, 3, 2], np.arange(12, dtype=np.float32).tobytes()),
    ]


def inspect_json(path, *extra):
    r = run(NEXUSCTL, "model", "inspect", path, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("layout", ["plain", "align64-gaps-shuffled", "v2"])
def test_python_file_read_by_nexusctl(tmp, layout):
    path = os.path.join(tmp, "py.gguf")
    kvs, tensors = every_kv(), sample_tensors(1)
    opts = {"plain": {}, "v2": {"version": 2},
            "align64-gaps-shuffled": {"alignment": 64, "gap": 1, "info_order": [3, 0, 4, 2, 1]}}
    data_offset, offsets = g.write(path, kvs, tensors, **opts[layout])
    out = inspect_json(path)

    assert out["format"] == "gguf"
    gg = out["gguf"]
    assert gg["version"] == (2 if layout == "v2" else 3)
    alignment = 64 if layout.startswith("align64") else 32
    assert gg["alignment"] == alignment
    meta = gg["metadata"]
    if alignment != 32:
        assert meta[0] == {"key": "general.alignment", "type": "u32", "value": 64}
        meta = meta[1:]
    assert gg["kv_count"] == len(kvs) + (alignment != 32)
    assert [m["key"] for m in meta] == [kv[0] for kv in kvs]
    for m, kv in zip(meta, kvs):
        key, vtype, value = kv[:3]
        assert m["type"] == g.TYPE_NAMES[vtype], key
        if vtype == g.ARR:
            etype = kv[3]
            assert m["elem_type"] == g.TYPE_NAMES[etype], key
            assert m["count"] == len(value), key
            assert m["truncated"] is False
            assert m["value"] == [expect_json_value(etype, v) for v in value], key
        else:
            assert m["value"] == expect_json_value(vtype, value), key

    f = out["files"][0]
    assert f["data_offset"] == data_offset
    assert f["file_bytes"] == os.path.getsize(path)
    assert f["digest"] is None
    assert out["tensor_count"] == len(tensors)
    assert out["total_bytes"] == os.path.getsize(path) - data_offset
    by_name = {t["name"]: t for t in out["tensors"]}
    assert [t["begin"] for t in out["tensors"]] == sorted(offsets)  # storage order
    raw = open(path, "rb").read()
    for (name, type_name, shape, data), off in zip(tensors, offsets):
        t = by_name[name]
        assert t["dtype"] == type_name
        assert t["shape"] == shape
        assert t["begin"] == off
        assert t["offset"] == data_offset + off
        assert t["bytes"] == len(data)
        assert raw[t["offset"]:t["offset"] + t["bytes"]] == data

    r = run(NEXUSCTL, "model", "load", path, "--device", "cpu", "--check", "--json")
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout)
    assert loaded["check"]["ok"] is True
    assert loaded["tensors"] == len(tensors)

    # the reference reader takes its own file the same way
    rd = g.Reader(path)
    assert rd.data_offset == data_offset
    assert [t["offset"] for t in rd.tensors] == [offsets[i] for i in
                                                 opts[layout].get("info_order", range(5))]


def test_summary_cuts_long_arrays(tmp):
    path = os.path.join(tmp, "s.gguf")
    g.write(path, every_kv(), [])
    meta = {m["key"]: m for m in inspect_json(path, "--summary")["gguf"]["metadata"]}
    assert meta["a.str"]["count"] == 40
    assert meta["a.str"]["truncated"] is True
    assert meta["a.str"]["value"] == ["\u0120the", "", "a b", "<|im_start|>"] * 2
    assert meta["a.u8"]["truncated"] is False and meta["a.u8"]["value"] == [0, 7, 255]


def write_with_nx(tmp, kvs, tensors):
    """kvs as for gguf_ref.write; tensors (name, type_name, shape, bytes or None for fill)."""
    spec = {"kvs": [], "tensors": []}
    for kv in kvs:
        key, vtype, value = kv[:3]
        def enc(t, v):
            if t == g.STR:
                return v if isinstance(v, str) else v.decode()
            if t == g.U64 and v > 2**63 - 1:
                return str(v)
            return v
        if vtype == g.ARR:
            spec["kvs"].append({"key": key, "type": "arr", "elem_type": g.TYPE_NAMES[kv[3]],
                                "value": [enc(kv[3], v) for v in value]})
        else:
            spec["kvs"].append({"key": key, "type": g.TYPE_NAMES[vtype], "value": enc(vtype, value)})
    for i, (name, type_name, shape, data) in enumerate(tensors):
        entry = {"name": name, "dtype": type_name, "shape": shape}
        if data is None:
            entry["fill"] = True
        else:
            entry["data_file"] = os.path.join(tmp, f"t{i}.bin")
            with open(entry["data_file"], "wb") as f:
                f.write(data)
        spec["tensors"].append(entry)
    spec_path = os.path.join(tmp, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    out = os.path.join(tmp, "nx.gguf")
    r = run(TOOL, spec_path, out)
    assert r.returncode == 0, r.stderr
    return out


def test_nx_gguf_save_read_by_python(tmp):
    kvs = [kv for kv in every_kv() if kv[0] != "s.str.bad"]  # our writer takes C strings
    tensors = sample_tensors(2) + [("blk.1.ffn_down.weight", "Q4_K", [3, 512], None),
                                   ("ids", "I32", [7], np.arange(7, dtype=np.int32).tobytes())]
    path = write_with_nx(tmp, kvs, tensors)
    rd = g.Reader(path)
    assert rd.version == 3
    assert rd.alignment == 32
    keys = [e["key"] for e in rd.kvs]
    assert keys == ["general.alignment"] + [kv[0] for kv in kvs] + ["nexus.digest", "nexus.pad"]
    assert rd.kv["general.alignment"]["type"] == g.U32
    for kv in kvs:
        e = rd.kv[kv[0]]
        assert e["type"] == kv[1], kv[0]
        if kv[1] == g.ARR:
            assert e["elem_type"] == kv[3], kv[0]
            want = kv[2]
            if kv[3] == g.STR:
                want = [s.encode() for s in want]
            elif kv[3] == g.F32:
                want = [float(np.float32(v)) for v in want]
            assert e["value"] == want, kv[0]
        elif kv[1] == g.STR:
            assert e["value"] == kv[2].encode(), kv[0]
        elif kv[1] == g.F32:
            assert e["value"] == float(np.float32(kv[2])), kv[0]
        else:
            assert e["value"] == kv[2], kv[0]
    digest = rd.value("nexus.digest").decode()
    assert digest.startswith("xxh3-64:") and len(digest) == 24
    assert set(rd.value("nexus.pad")) <= {ord(" ")}

    assert rd.data_offset % 4096 == 0 and rd.header_end == rd.data_offset
    assert (len(rd.raw) - rd.data_offset) % 32 == 0
    assert [t["name"] for t in rd.tensors] == [t[0] for t in tensors]
    end = 0
    for t, (name, type_name, shape, data) in zip(rd.tensors, tensors):
        assert t["type_name"] == type_name and t["shape"] == shape
        assert t["offset"] % 32 == 0 and t["offset"] >= end
        pad = rd.raw[rd.data_offset + end:rd.data_offset + t["offset"]]
        assert pad == b"\0" * len(pad)  # zero padding between tensors
        got = rd.data(t)
        if data is None:
            assert got == bytes((i * 7 + 3) & 0xFF for i in range(t["bytes"]))
        else:
            assert got == data
        end = t["offset"] + t["bytes"]
    assert rd.raw[rd.data_offset + end:] == b"\0" * (len(rd.raw) - rd.data_offset - end)

    r = run(NEXUSCTL, "model", "verify", path, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["digest_files"] == 1
    # both readers agree on where every tensor is
    ours = {t["name"]: t for t in inspect_json(path)["tensors"]}
    for t in rd.tensors:
        assert ours[t["name"]]["offset"] == rd.data_offset + t["offset"]
        assert ours[t["name"]]["bytes"] == t["bytes"]


def test_q8_0_reference_quantizer():
    x = np.linspace(-3, 5, 64, dtype=np.float32)
    raw = g.quantize_q8_0(x)
    assert len(raw) == 2 * 34
    blocks = np.frombuffer(raw, dtype=g.Q8_0_BLOCK)
    assert np.all(np.abs(blocks["qs"]).max(axis=1) == 127)  # the largest |x| maps to 127
    d = blocks["d"].astype(np.float32)
    err = np.abs(g.dequantize_q8_0(raw) - x).reshape(2, 32)
    assert np.all(err <= d[:, None] * 0.5 + np.abs(x.reshape(2, 32)) * 1e-3)
    assert g.quantize_q8_0(np.zeros(32)) == b"\0" * 34
    # roundf rounds half away from zero: x = 2.5 * d exactly
    half = np.zeros(32, dtype=np.float32)
    half[0], half[1] = 127, -2.5
    assert np.frombuffer(g.quantize_q8_0(half), dtype=g.Q8_0_BLOCK)["qs"][0][1] == -3
