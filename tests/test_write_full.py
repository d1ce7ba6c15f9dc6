"""test_write_full.py — the model writers on a full disk, for real: `nexusctl model synth` (a
safetensors directory through nx_st_save, or one GGUF file) and `nexusctl model quantize` write
into a small tmpfs that runs out of space part-way through the file.

Each must fail with exit code 1 and a message naming the file and saying there is no space,
and leave nothing behind: no file under the final name and no temporary file beside it.

Mounting needs the privilege to mount (root in a container, as in CI here); where that is
refused the tests are skipped, and say so."""
import os
import shutil
import subprocess
import tempfile

import pytest

import daemon_util as du

NEXUSCTL = du.NEXUSCTL
# Room for a header and a little data, far less than the smallest model written here (the
# tiny preset in F32 is several hundred KiB).
TMPFS_BYTES = 96 * 1024


def ctl(*args):
    return subprocess.run([NEXUSCTL, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def full_dir():
    with du.small_tmpfs(TMPFS_BYTES, prefix="nx-write-full-") as path:
        yield path


@pytest.fixture(scope="module")
def source():
    root = tempfile.mkdtemp(prefix="nx-write-full-src-")
    path = os.path.join(root, "tiny")
    r = ctl("model", "synth", "--arch", "qwen3", "--preset", "tiny", "--dtype", "f32",
            "--seed", "9", "--out", path)
    assert r.returncode == 0, r.stderr
    yield path
    shutil.rmtree(root, ignore_errors=True)


def assert_refused_cleanly(r, full_dir, final_name):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "no space" in r.stderr.lower(), r.stderr
    assert final_name in r.stderr, r.stderr
    assert os.listdir(full_dir) == [], "left behind: " + ", ".join(os.listdir(full_dir))


def test_synth_safetensors_on_full_disk(full_dir):
    out = os.path.join(full_dir, "model")
    r = ctl("model", "synth", "--arch", "qwen3", "--preset", "tiny", "--dtype", "f32",
            "--out", out)
    assert_refused_cleanly(r, full_dir, "model")


def test_synth_gguf_on_full_disk(full_dir):
    out = os.path.join(full_dir, "model.gguf")
    r = ctl("model", "synth", "--arch", "llama", "--preset", "tiny", "--dtype", "f32",
            "--out", out)
    assert_refused_cleanly(r, full_dir, "model.gguf")


@pytest.mark.parametrize("mix", ["f32", "q8_0"])
def test_quantize_on_full_disk(full_dir, source, mix):
    out = os.path.join(full_dir, f"tiny-{mix}.gguf")
    r = ctl("model", "quantize", source, out, "--type", mix)
    assert_refused_cleanly(r, full_dir, f"tiny-{mix}.gguf")


def test_space_returns(full_dir, source):
    """The same file system takes the file once it is big enough: the failure above was the
    space, not the path."""
    subprocess.run(["mount", "-o", "remount,size=64m", full_dir], check=True)
    out = os.path.join(full_dir, "tiny-q8_0.gguf")
    r = ctl("model", "quantize", source, out, "--type", "q8_0")
    assert r.returncode == 0, r.stderr
    assert os.listdir(full_dir) == ["tiny-q8_0.gguf"]
