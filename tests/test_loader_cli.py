"""`nexusctl model load` end to end: files from another writer (numpy, unaligned data start),
--check, --json, read modes, the O_DIRECT fallback on a file system without O_DIRECT, and bad
arguments; and `nexusctl model inspect|verify|load` on GGUF files (ours and another writer's,
tests/tools/gguf_ref.py). Runs the real binary on real files."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")


def run(*args, **kw):
    return subprocess.run([NEXUSCTL, *args], capture_output=True, text=True, timeout=120, **kw)


def write_foreign(path, tensors, pad_to=1):
    """A safetensors file as other writers make it: data right after the header, header padded
    with spaces only to `pad_to` bytes (HF pads to 8; 1 means not at all)."""
    header, blobs, at = {}, [], 0
    for name, arr, dtype in tensors:
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % pad_to)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    return 8 + len(text)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="nx-load-cli-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def sample_tensors(seed):
    rng = np.random.default_rng(seed)
    bf16 = (rng.standard_normal((300, 257)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return [
        ("emb", rng.standard_normal((1000, 333)).astype(np.float32), "F32"),
        ("half", rng.standard_normal((77, 1025)).astype(np.float16), "F16"),
        ("bf", bf16, "BF16"),
        ("ids", rng.integers(-5, 5, size=(13,), dtype=np.int64), "I64"),
        ("mask", rng.integers(0, 2, size=(7, 3)).astype(np.bool_), "BOOL"),
    ]


@pytest.mark.parametrize("pad_to", [1, 8])
@pytest.mark.parametrize("mode", ["auto", "direct", "buffered"])
def test_foreign_file_loads_and_checks(tmp, pad_to, mode):
    path = os.path.join(tmp, "foreign.safetensors")
    data_start = write_foreign(path, sample_tensors(1), pad_to)
    assert pad_to == 8 or data_start % 8 != 0
    r = run("model", "load", path, "--device", "cpu", "--check", "--json", "--read", mode,
            "--chunk-mib", "1", "--threads", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["device"] == "cpu"
    assert out["tensors"] == 5
    assert out["bytes"] == os.path.getsize(path) - data_start
    assert out["check"]["ok"] is True
    if mode != "auto":
        assert out["read_mode"] == mode
    assert out["gbps"] > 0 and out["seconds"] > 0


def test_human_output_names_mode_and_rate(tmp):
    path = os.path.join(tmp, "m.safetensors")
    write_foreign(path, sample_tensors(2), 8)
    r = run("model", "load", path, "--device", "cpu", "--check")
    assert r.returncode == 0, r.stderr
    assert "GB/s" in r.stdout and "read mode:" in r.stdout
    assert "check: every tensor matches" in r.stdout


def have_private_mounts():
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not have_private_mounts(), reason="no user+mount namespaces (unshare -rm)")
def test_direct_falls_back_on_a_file_system_without_o_direct(tmp):
    """ramfs has no O_DIRECT (tmpfs has had it since Linux 6.6): the load must fall back to
    buffered reads, say so, and still be byte-exact."""
    src = os.path.join(tmp, "src.safetensors")
    write_foreign(src, sample_tensors(3), 1)
    mnt = os.path.join(tmp, "ramfs")
    os.mkdir(mnt)
    script = (f"mount -t ramfs none {mnt} && cp {src} {mnt}/m.safetensors && "
              f"{NEXUSCTL} model load {mnt}/m.safetensors --device cpu --read direct --check --json")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["fallbacks"] >= 1
    assert out["check"]["ok"] is True


def test_sharded_directory(tmp):
    a = sample_tensors(4)
    write_foreign(os.path.join(tmp, "model-00001-of-00002.safetensors"), a[:2], 8)
    write_foreign(os.path.join(tmp, "model-00002-of-00002.safetensors"), a[2:], 1)
    weight_map = {n: "model-00001-of-00002.safetensors" for n, _, _ in a[:2]}
    weight_map.update({n: "model-00002-of-00002.safetensors" for n, _, _ in a[2:]})
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    r = run("model", "load", tmp, "--device", "cpu", "--check", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tensors"] == 5


def test_pool_too_small_is_a_clear_error(tmp):
    path = os.path.join(tmp, "m.safetensors")
    rng = np.random.default_rng(5)
    write_foreign(path, [("w", rng.standard_normal((1024, 1024)).astype(np.float32), "F32")], 8)
    r = run("model", "load", path, "--device", "cpu", "--pool-mib", "2")
    assert r.returncode == 1
    assert "load failed" in r.stderr and "m.safetensors" in r.stderr and "free" in r.stderr


def test_bad_files_and_arguments(tmp):
    r = run("model", "load", os.path.join(tmp, "missing.safetensors"), "--device", "cpu")
    assert r.returncode == 1 and "missing.safetensors" in r.stderr
    bad = os.path.join(tmp, "bad.safetensors")
    with open(bad, "wb") as f:
        f.write(struct.pack("<Q", 1 << 40) + b"{}")
    r = run("model", "load", bad, "--device", "cpu")
    assert r.returncode == 1 and "bad.safetensors" in r.stderr
    for args, word in [((), "PATH"), (("x", "--threads", "0"), "--threads"),
                       (("x", "--device", "tpu"), "--device"), (("x", "--read", "fast"), "--read"),
                       (("x", "--chunk-mib", "abc"), "--chunk-mib"), (("x", "--bogus"), "--bogus"),
                       (("x", "y"), "extra")]:
        r = run("model", "load", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert word in r.stderr, (args, r.stderr)


def test_cuda_without_a_gpu_is_a_clear_error(tmp):
    """On a machine without a GPU (CI), --device cuda fails with the reason, not a crash."""
    path = os.path.join(tmp, "m.safetensors")
    write_foreign(path, sample_tensors(6)[:1], 8)
    probe = subprocess.run(["sh", "-c", "command -v nvidia-smi && nvidia-smi -L"],
                           capture_output=True, text=True)
    if probe.returncode == 0 and "GPU" in probe.stdout:
        pytest.skip("a GPU is present: this test is about machines without one")
    r = run("model", "load", path, "--device", "cuda")
    assert r.returncode == 1
    assert "CUDA" in r.stderr or "cuda" in r.stderr


# ---- GGUF: inspect, verify and load take a .gguf path --------------------------------------

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tools"))
import gguf_ref  # noqa: E402

TOOL_GGUF = os.path.join(BUILD, "tests", "tool_gguf_write")


def write_gguf_ours(tmp, name="ours.gguf"):
    """A GGUF file from nx_gguf_save (tests/tool_gguf_write): it carries nexus.digest."""
    data = np.arange(64 * 3, dtype=np.float32).reshape(3, 64)
    raw = os.path.join(tmp, "w.bin")
    with open(raw, "wb") as f:
        f.write(gguf_ref.quantize_q8_0(data))
    spec = {"kvs": [{"key": "general.architecture", "type": "str", "value": "qwen3"},
                    {"key": "tokenizer.ggml.tokens", "type": "arr", "elem_type": "str",
                     "value": [f"tok{i}" for i in range(100)]}],
            "tensors": [{"name": "blk.0.w", "dtype": "Q8_0", "shape": [3, 64], "data_file": raw},
                        {"name": "norm", "dtype": "F32", "shape": [64], "fill": True}]}
    spec_path = os.path.join(tmp, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    path = os.path.join(tmp, name)
    r = subprocess.run([TOOL_GGUF, spec_path, path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return path


def test_gguf_inspect_text_and_json(tmp):
    path = write_gguf_ours(tmp)
    r = run("model", "inspect", path)
    assert r.returncode == 0, r.stderr
    assert "GGUF v3, general.alignment 32, 2 tensors, 5 keys" in r.stdout
    assert '"qwen3"' in r.stdout
    assert "arr[str]  100 elements: [\"tok0\", \"tok1\"" in r.stdout and ", ...]" in r.stdout
    assert "Q8_0" in r.stdout and "[3, 64]" in r.stdout
    assert "4 KiB aligned" in r.stdout and "xxh3-64:" in r.stdout
    out = json.loads(run("model", "inspect", path, "--json").stdout)
    assert out["format"] == "gguf" and out["gguf"]["version"] == 3
    keys = [m["key"] for m in out["gguf"]["metadata"]]
    assert keys == ["general.alignment", "general.architecture", "tokenizer.ggml.tokens",
                    "nexus.digest", "nexus.pad"]
    assert out["gguf"]["metadata"][2]["value"] == [f"tok{i}" for i in range(100)]
    assert {t["name"]: t["dtype"] for t in out["tensors"]} == {"blk.0.w": "Q8_0", "norm": "F32"}
    summary = json.loads(run("model", "inspect", path, "--json", "--summary").stdout)
    assert summary["tensors"] == [] and summary["gguf"]["metadata"][2]["truncated"] is True


def test_gguf_verify_digest_and_a_flipped_byte(tmp):
    path = write_gguf_ours(tmp)
    r = run("model", "verify", path)
    assert r.returncode == 0, r.stderr
    assert "digest verified in 1 file(s)" in r.stdout
    data_offset = json.loads(run("model", "inspect", path, "--json").stdout)["files"][0]["data_offset"]
    with open(path, "r+b") as f:
        f.seek(data_offset + 10)
        b = f.read(1)
        f.seek(data_offset + 10)
        f.write(bytes([b[0] ^ 1]))
    r = run("model", "verify", path, "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["code"] == "EDIGEST"
    assert "ours.gguf" in out["error"] and "digest mismatch" in out["error"]
    # a file without a digest (another writer's) verifies as valid, with no digest to check
    plain = os.path.join(tmp, "plain.gguf")
    gguf_ref.write(plain, [("general.name", gguf_ref.STR, "x")],
                   [("w", "F32", [4], np.ones(4, dtype=np.float32).tobytes())])
    r = run("model", "verify", plain)
    assert r.returncode == 0, r.stderr
    assert "no digest recorded" in r.stdout


@pytest.mark.parametrize("mode", ["auto", "direct", "buffered"])
def test_gguf_load_and_check(tmp, mode):
    rng = np.random.default_rng(7)
    big = rng.standard_normal((700, 1024)).astype(np.float32)  # ~2.9 MB: many 1 MiB chunks
    path = os.path.join(tmp, "foreign.gguf")
    data_offset, _ = gguf_ref.write(path, [("general.architecture", gguf_ref.STR, "llama")],
                                    [("a", "F32", [700, 1024], big.tobytes()),
                                     ("b", "Q8_0", [4, 1024], gguf_ref.quantize_q8_0(big[:4]))],
                                    alignment=64, gap=1)
    assert data_offset % 4096 != 0  # another writer's layout: not 4 KiB aligned
    r = run("model", "load", path, "--device", "cpu", "--check", "--json", "--read", mode,
            "--chunk-mib", "1", "--threads", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tensors"] == 2 and out["check"]["ok"] is True
    assert out["bytes"] == os.path.getsize(path) - data_offset
    ours = write_gguf_ours(tmp)
    r = run("model", "load", ours, "--device", "cpu", "--check")
    assert r.returncode == 0, r.stderr
    assert "check: every tensor matches" in r.stdout


def test_gguf_bad_files_name_the_problem(tmp):
    bad = os.path.join(tmp, "bad.gguf")
    with open(bad, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    for cmd in ("inspect", "verify", "load"):
        r = run("model", cmd, bad, *(("--device", "cpu") if cmd == "load" else ()))
        assert r.returncode == 1, (cmd, r.stdout)
        assert "bad.gguf" in r.stderr and "GGUF v1 is not supported" in r.stderr, (cmd, r.stderr)
    with open(bad, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", 1) + b"w" +
                struct.pack("<IQIQ", 1, 48, 8, 0))  # Q8_0 row of 48: not whole blocks
        f.write(b"\0" * 64)
    r = run("model", "inspect", bad)
    assert r.returncode == 1
    assert "tensor 'w'" in r.stderr and "not a multiple of the block (32" in r.stderr
    with open(bad, "wb") as f:
        f.write(b"NOPE" + b"\0" * 20)
    r = run("model", "inspect", bad)
    assert r.returncode == 1 and "not a GGUF file" in r.stderr
