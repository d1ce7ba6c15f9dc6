"""`nexusctl model load` end to end: files from another writer (numpy, unaligned data start),
--check, --json, read modes, the O_DIRECT fallback on a file system without O_DIRECT, and bad
arguments. Runs the real binary on real files."""
import json
import os
import shutil
import struct
import subprocess
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
