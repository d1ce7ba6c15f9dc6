"""The interleaved batch-1 bench (bench/quant_pair.py) and the serving modes it drives:
`bench/decode --serve` and `bench/llama_bench.mjs --serve` answer one JSON line per command,
refuse bad commands with an error naming them and keep serving; the driver runs both engines
on one small GGUF file (written by `nexusctl model quantize` from a synthesized qwen3) and
prints a table row from real bursts. llama.cpp's side is skipped, with the reason, where node
or `make llama-ref` is missing."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import llama_ref_util as lr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("NEXUS_BUILD", os.path.join(ROOT, "build"))
DECODE = os.path.join(BUILD, "bench", "decode")


@pytest.fixture(scope="module")
def gguf():
    root = tempfile.mkdtemp(prefix="nx-bench-pair-")
    src, out = os.path.join(root, "src"), os.path.join(root, "m.gguf")
    for args in (["model", "synth", "--arch", "qwen3", "--preset", "tiny", "--dtype", "f32",
                  "--seed", "5", "--out", src],
                 ["model", "quantize", src, out, "--type", "q8_0"]):
        r = subprocess.run([os.path.join(BUILD, "nexusctl"), *args], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    yield out
    shutil.rmtree(root, ignore_errors=True)


def converse(argv, commands):
    r = subprocess.run(argv, input="".join(c + "\n" for c in commands), capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def check_serving(lines, has_bandwidth):
    assert lines[0]["ready"] is True and lines[0]["weight_bytes_per_step"] > 0
    first, rest = lines[1], lines[2:]
    assert first["op"] == "decode" and first["tokens"] == 5
    assert first["seconds"] > 0 and first["tokens_per_s"] == pytest.approx(5 / first["seconds"])
    assert first["major_faults"] >= 0
    if has_bandwidth:
        assert rest[0]["op"] == "bandwidth" and rest[0]["bytes_per_s"] > 1e8
    else:
        assert "unknown command 'bandwidth'" in rest[0]["error"]
    for bad, line in zip(["bogus", "decode 0", "decode 9", "decode 2 2"], rest[1:5]):
        assert line["error"].startswith(f"unknown command '{bad}'"), line
        assert "1 <= N <= 8" in line["error"]
    assert rest[5]["op"] == "decode" and rest[5]["tokens"] == 8  # still serving after errors
    assert len(rest) == 6  # nothing after quit


COMMANDS = ["decode 5", "bandwidth", "bogus", "decode 0", "decode 9", "decode 2 2", "decode 8",
            "quit", "decode 3"]


def test_decode_serve(gguf):
    lines = converse([DECODE, gguf, "--device", "cpu", "--threads", "2", "--tokens", "8",
                      "--serve"], COMMANDS)
    check_serving(lines, has_bandwidth=True)


def test_llama_bench_serve(gguf):
    lr.require()
    lines = converse([lr.node_path(), os.path.join(ROOT, "bench", "llama_bench.mjs"), gguf,
                      "--threads", "2", "--tokens", "8", "--batches", "1", "--serve"], COMMANDS)
    check_serving(lines, has_bandwidth=False)


def test_quant_pair_runs_both(gguf, tmp_path):
    lr.require()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "quant_pair.py"),
                        "--sessions", "2", "--rounds", "2", "--tokens", "4", "--out",
                        str(tmp_path), gguf],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "BUILD": BUILD, "NODE": lr.node_path()})
    assert r.returncode == 0, r.stdout + r.stderr
    row = [line for line in r.stdout.splitlines() if line.startswith("| m.gguf |")]
    assert len(row) == 1, r.stdout
    result = json.load(open(tmp_path / "m0.json"))
    assert [x["round"] for x in result["rounds"]] == [1, 2, 3, 4]
    assert [x["session"] for x in result["rounds"]] == [1, 1, 2, 2]
    assert [s["loaded_first"] for s in result["sessions"]] == ["ours", "base"]
    for x in result["rounds"]:
        assert x["ours"]["tokens"] == 4 and x["base"]["tokens"] == 4
    for s in result["sessions"]:  # before and after the bursts, never between
        assert len(s["bandwidth"]) == 2 and min(s["bandwidth"]) > 1e8
    assert [x["first"] for x in result["rounds"]] == ["ours", "base"] * 2  # alternating


def test_quant_pair_bad_arguments(tmp_path):
    script = os.path.join(ROOT, "bench", "quant_pair.py")
    r = subprocess.run([sys.executable, script, "--out", str(tmp_path), "/no/such.gguf"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode != 0 and "/no/such.gguf: no such file or folder" in r.stderr
    r = subprocess.run([sys.executable, script, "--sessions", "0", "/no/such.gguf"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode != 0 and "--sessions" in r.stderr
