"""test_daemon_gguf.py — GGUF models through a real nexusd: agents whose `model:` names a .gguf
file in the models folder (a Q4_K_M and a Q8_0 one) answer tasks with the same tokens as
`nexusctl run` on that file, `status` counts the file's quantized bytes, the two swap through a
pool that holds one at a time, and a corrupt .gguf fails its tasks with model_error while the
daemon keeps serving the others."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

import daemon_util as du


@pytest.fixture(scope="module")
def models():
    root = tempfile.mkdtemp(prefix="nx-daemon-gguf-")
    out = {}
    for name, arch, mix in (("q3.gguf", "qwen3", "q4_k_m"), ("ll.gguf", "llama", "q8_0")):
        path = os.path.join(root, name)
        r = subprocess.run([du.NEXUSCTL, "model", "synth", "--arch", arch, "--preset", "small",
                            "--dtype", mix, "--seed", "9", "--out", path],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out[name] = path
    bad = os.path.join(root, "bad.gguf")
    with open(out["q3.gguf"], "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:  # the header says more tensor data than the file holds
        f.write(data[: len(data) // 2])
    out["bad.gguf"] = bad
    yield out
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(models):
    agents = [du.agent("qa", "q3.gguf"), du.agent("la", "ll.gguf"), du.agent("bad", "bad.gguf")]
    # a pool that holds one of the two models (2 MiB each, in 1 MiB chunks) and its sequence
    # at a time: tasks swap them
    with du.running(agents, models=models, conf={"pool": "4MiB", "host_cache": "16MiB",
                                                 "context": 256, "max_batch": 2}) as d:
        yield d


def run_text(model, text):
    r = subprocess.run([du.NEXUSCTL, "run", model, text, "--max-tokens", "8", "--json",
                        "--template", "raw", "--context", "256"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["text"]


def test_gguf_agents_answer_like_run(daemon, models):
    prompt = "Hello from a quantized model"
    expected = {name: run_text(models[name], prompt) for name in ("q3.gguf", "ll.gguf")}
    with daemon.client() as c:
        for agent, model in (("qa", "q3.gguf"), ("la", "ll.gguf"), ("qa", "q3.gguf")):
            _, _, r = c.task(agent, prompt)
            assert r["op"] == "result", r
            assert r["output"] == expected[model], (agent, r)
        st = c.call({"op": "status"})
    by_name = {m["name"]: m for m in st["models"]}
    for name in ("q3.gguf", "ll.gguf"):
        m = by_name[name]
        assert m["loads"] >= 1, m
        # what residency holds is the file's (quantized) data, rounded to the pool's chunks
        assert m["bytes"] <= os.path.getsize(models[name]) + (1 << 20), m
    assert by_name["q3.gguf"]["loads"] >= 2  # swapped out for ll.gguf and back


def test_corrupt_gguf_fails_its_tasks_only(daemon):
    with daemon.client() as c:
        _, _, r = c.task("bad", "hi")
        assert r["op"] == "error" and r["code"] == "model_error", r
        # the reader's message names the file and the tensor that runs past its end
        assert "bad.gguf" in r["message"] and "beyond the end of the file" in r["message"], r
        _, _, r = c.task("qa", "still serving")
        assert r["op"] == "result", r
