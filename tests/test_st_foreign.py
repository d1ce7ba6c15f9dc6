"""test_st_foreign.py — safetensors files written the way other writers write them (by hand,
here, with numpy), checked through `nexusctl model inspect --json` and `model verify`; and
corrupt files, which verify must reject naming the rule.

Run: NEXUS_BUILD=<abs build dir> /usr/bin/python3 -m pytest -q tests/test_st_foreign.py
"""
import json
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import pytest

NEXUSCTL = os.path.join(os.environ.get("NEXUS_BUILD", "build"), "nexusctl")


@pytest.fixture
def tmpdir_path():
    path = tempfile.mkdtemp(prefix="nx_st_foreign_")
    yield path
    shutil.rmtree(path)


def run(*args):
    return subprocess.run([NEXUSCTL, *args], capture_output=True, text=True, timeout=60)


def tensors_fixture():
    """(name, dtype name, numpy array) in the order the writer lays them out."""
    rng = np.random.default_rng(7)
    bf16 = (rng.standard_normal((3, 5)).astype(np.float32).view(np.uint32) >> 16).astype(
        np.uint16)
    return [
        ("model.embed.weight", "F32", rng.standard_normal((4, 3)).astype(np.float32)),
        ("model.norm.weight", "F16", rng.standard_normal((7,)).astype(np.float16)),
        ("model.proj.weight", "BF16", bf16),
        ("model.positions", "I64", np.arange(5, dtype=np.int64)),
        ("model.mask", "BOOL", np.array([True, False, True], dtype=np.bool_)),
        ("model.bytes", "U8", np.arange(11, dtype=np.uint8)),
    ]


def write_foreign(path, tensors, pad_to=8, metadata=None):
    """Header padded with spaces to a multiple of pad_to (1: no padding), data packed."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, array in tensors:
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((pad_to - len(text) % pad_to) % pad_to)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, array in tensors:
            f.write(array.tobytes())
    return 8 + len(text)


def expected_alignment(offset):
    align = 1
    while align < 4096 and offset % (align * 2) == 0:
        align *= 2
    return align


@pytest.mark.parametrize("pad_to", [8, 1])
def test_foreign_file_inspect_and_verify(tmpdir_path, pad_to):
    tensors = tensors_fixture()
    path = os.path.join(tmpdir_path, "foreign.safetensors")
    metadata = {"format": "pt", "note": ""}
    data_offset = write_foreign(path, tensors, pad_to=pad_to, metadata=metadata)
    if pad_to == 1 and data_offset % 2 == 0:  # one more header byte makes the offset odd
        metadata["note"] = "x"
        data_offset = write_foreign(path, tensors, pad_to=pad_to, metadata=metadata)
    if pad_to == 1:
        assert data_offset % 2 == 1, "the unpadded fixture must start its data at an odd offset"
    else:
        assert data_offset % 8 == 0

    result = run("model", "inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["path"] == path
    (file,) = report["files"]
    assert file["path"] == path
    assert file["file_bytes"] == os.path.getsize(path)
    assert file["header_bytes"] == data_offset - 8
    assert file["data_offset"] == data_offset
    assert file["data_alignment"] == expected_alignment(data_offset)
    assert file["digest"] is None
    assert report["tensor_count"] == len(tensors)
    assert report["total_bytes"] == sum(a.nbytes for _, _, a in tensors)

    offset = data_offset
    raw = open(path, "rb").read()
    for got, (name, dtype, array) in zip(report["tensors"], tensors):
        assert got["name"] == name
        assert got["dtype"] == dtype
        assert got["shape"] == list(array.shape)
        assert got["file"] == path
        assert got["offset"] == offset
        assert got["bytes"] == array.nbytes
        assert raw[offset:offset + array.nbytes] == array.tobytes()
        offset += array.nbytes

    result = run("model", "verify", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK {path}: {len(tensors)} tensors")
    assert "no digest recorded" in result.stdout


def test_inspect_text_and_summary(tmpdir_path):
    path = os.path.join(tmpdir_path, "m.safetensors")
    write_foreign(path, tensors_fixture())
    full = run("model", "inspect", path)
    assert full.returncode == 0, full.stderr
    assert "model.proj.weight" in full.stdout and "BF16" in full.stdout
    assert "6 tensors" in full.stdout
    summary = run("model", "inspect", path, "--summary")
    assert summary.returncode == 0
    assert "model.proj.weight" not in summary.stdout
    assert "6 tensors" in summary.stdout


def test_sharded_directory(tmpdir_path):
    tensors = tensors_fixture()
    shards = {"model-00001-of-00002.safetensors": tensors[:2],
              "model-00002-of-00002.safetensors": tensors[2:]}
    weight_map = {}
    for shard, part in shards.items():
        write_foreign(os.path.join(tmpdir_path, shard), part)
        weight_map.update({name: shard for name, _, _ in part})
    with open(os.path.join(tmpdir_path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    report = json.loads(run("model", "inspect", tmpdir_path, "--json").stdout)
    assert [f["path"].rsplit("/", 1)[1] for f in report["files"]] == sorted(shards)
    assert report["tensor_count"] == len(tensors)
    result = run("model", "verify", tmpdir_path)
    assert result.returncode == 0, result.stderr
    assert "in 2 file(s)" in result.stdout


def valid_header():
    return {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}}


def write_header(path, header, data_len, declared_len=None):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text) if declared_len is None else declared_len))
        f.write(text)
        f.write(bytes(range(data_len)))


def corrupt(kind):
    h = valid_header()
    if kind == "overlap":
        h["b"]["data_offsets"] = [4, 8]
        h["b"]["shape"] = [4]
        return h, 8, None
    if kind == "gap":
        h["b"]["data_offsets"] = [10, 14]
        return h, 14, None
    if kind == "wrong_size":
        h["a"]["shape"] = [3]
        return h, 12, None
    if kind == "unknown_dtype":
        h["a"]["dtype"] = "F24"
        return h, 12, None
    if kind == "bad_json":
        return b'{"a": {"dtype": "F32",, }', 0, None
    if kind == "truncated":
        return h, 6, None
    if kind == "absurd":
        return h, 12, 1 << 62
    raise AssertionError(kind)


REJECTIONS = {
    "overlap": "overlaps tensor 'a'",
    "gap": "gap of 2 bytes between tensor 'a'",
    "wrong_size": "tensor 'a': shape [3] of F32 needs 12 bytes",
    "unknown_dtype": "unknown dtype 'F24'",
    "bad_json": "header JSON is malformed at line 1",
    "truncated": "beyond the end of the file",
    "absurd": "is absurd",
}


@pytest.mark.parametrize("kind", sorted(REJECTIONS))
def test_verify_rejects(tmpdir_path, kind):
    path = os.path.join(tmpdir_path, f"{kind}.safetensors")
    header, data_len, declared = corrupt(kind)
    write_header(path, header, data_len, declared)
    result = run("model", "verify", path)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("nexusctl: verify failed: ")
    assert REJECTIONS[kind] in result.stderr
    assert f"{kind}.safetensors" in result.stderr
    assert run("model", "inspect", path).returncode == 1


def test_truncated_prefix(tmpdir_path):
    path = os.path.join(tmpdir_path, "tiny.safetensors")
    with open(path, "wb") as f:
        f.write(b"\x05\x00\x00")
    result = run("model", "verify", path)
    assert result.returncode == 1
    assert "too short for the 8-byte header length" in result.stderr


@pytest.mark.parametrize("args", [[], ["--bogus"], ["a", "b"]])
def test_usage_errors(args):
    result = run("model", "verify", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert run("model", "inspect", *args).returncode == 2
