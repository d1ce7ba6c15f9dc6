"""llama_ref_util.py — helpers for tests that compare our engine with llama.cpp on the same
GGUF file: they run tests/tools/llama_ref.mjs (llama.cpp's prebuilt CPU binaries through
node-llama-cpp, installed by `make llama-ref` into .tools/llama-ref/) and parse its answers
into numpy arrays.

    import llama_ref_util as lr
    lr.require()                                    # pytest.skip with the reason when absent
    logits, meta = lr.logits(gguf, [1, 2, 3])       # float32 [vocab], last position, raw
    ids, gaps, rows, meta = lr.greedy(gguf, [1, 2, 3], 16)
    [(ids, gaps, rows, meta), ...] = lr.greedy_many([(gguf, [1, 2, 3], 16), ...])  # one node
    ok, why = lr.greedy_agrees(our_ids, ids, gaps)  # a divergence on a near-tie is excused
    lr.tokenize(gguf, "Hello")  /  lr.tokenize(gguf, ["a", "b"])  /  lr.info(gguf)

Every call starts node once (about a second: llama.cpp's libraries and the model load), so
tokenize takes a list of texts to do a whole corpus in one run. The defaults (fp32 KV cache,
no flash attention, 2 threads) are llama_ref.mjs's: llama.cpp's attention then computes in
fp32 as our CPU engine does.
"""
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tests", "tools", "llama_ref.mjs")
MIN_NODE_MAJOR = 20  # node-llama-cpp 3 asks for node >= 20


def ref_dir():
    return os.environ.get("LLAMA_REF_DIR") or os.path.join(ROOT, ".tools", "llama-ref")


def node_path():
    return os.environ.get("NODE") or shutil.which("node")


def unavailable_reason():
    """None when the reference can run, else why not (the text a skip shows)."""
    node = node_path()
    if not node:
        return "llama.cpp reference: node is not installed"
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "llama.cpp reference: cannot run node --version"
    if major < MIN_NODE_MAJOR:
        return f"llama.cpp reference: node {version} is too old (node-llama-cpp wants >= {MIN_NODE_MAJOR})"
    pkg = os.path.join(ref_dir(), "node_modules", "node-llama-cpp", "package.json")
    bins = os.path.join(ref_dir(), "node_modules", "@node-llama-cpp", "linux-x64", "bins")
    if not os.path.exists(pkg) or not os.path.isdir(bins):
        return f"llama.cpp reference: node-llama-cpp is not installed in {ref_dir()} (run `make llama-ref`)"
    return None


def available():
    return unavailable_reason() is None


def require():
    """Skip the calling test (pytest.skip) when node or the installed package is missing."""
    reason = unavailable_reason()
    if reason:
        import pytest
        pytest.skip(reason)


def run(command, model, *args, timeout=600):
    """Run `llama_ref.mjs COMMAND MODEL ARGS...`; its JSON answer as a dict. Raises
    RuntimeError with llama_ref's stderr when it fails."""
    cmd = [node_path() or "node", TOOL, command, os.fspath(model), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no JSON: {proc.stdout[-500:]!r}")
    return json.loads(lines[-1])


def _ids_arg(ids):
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError("at least one token id is needed")
    return ",".join(map(str, ids))


def _options(threads, kv, flash_attn):
    return ["--threads", threads, "--kv", kv, "--flash-attn", flash_attn]


def logits(model, ids, threads=2, kv="f32", flash_attn="off"):
    """llama.cpp's raw logits at the last of `ids` (no BOS added): (float32 [vocab], meta)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.f32")
        meta = run("logits", model, "--tokens", _ids_arg(ids), "--out", out,
                   *_options(threads, kv, flash_attn))
        arr = np.fromfile(out, dtype="<f4")
    if arr.size != meta["vocab"]:
        raise RuntimeError(f"llama_ref wrote {arr.size} logits for a vocabulary of {meta['vocab']}")
    return arr, meta


def greedy(model, ids, n, threads=2, kv="f32", flash_attn="off", with_logits=False):
    """n greedy ids after `ids`: (ids list, float64 [n] top-1 minus top-2 logit per step,
    float32 [n, vocab] logits of each step or None, meta)."""
    opts = ["--tokens", _ids_arg(ids), "--n", int(n), *_options(threads, kv, flash_attn)]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "greedy.f32")
        meta = run("greedy", model, *opts, *(["--out", out] if with_logits else []))
        rows = np.fromfile(out, dtype="<f4").reshape(int(n), -1) if with_logits else None
    gaps = np.array([np.nan if g is None else g for g in meta["gaps"]], dtype=np.float64)
    return list(meta["ids"]), gaps, rows, meta


def greedy_many(jobs, threads=2, kv="f32", flash_attn="off"):
    """greedy() for each (model, ids, n) of `jobs` in one node process (starting node and
    llama.cpp's libraries is most of a small model's time); every step's logits are kept.
    A list of (ids list, gaps, float32 [n, vocab] rows, meta), in the jobs' order."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = [{"model": os.fspath(m), "tokens": [int(i) for i in ids], "n": int(n),
                 "out": os.path.join(tmp, f"{k}.f32")} for k, (m, ids, n) in enumerate(jobs)]
        path = os.path.join(tmp, "jobs.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        answer = run("greedy-batch", path, *_options(threads, kv, flash_attn))
        out = []
        for job, meta in zip(spec, answer["results"]):
            rows = np.fromfile(job["out"], dtype="<f4").reshape(job["n"], -1)
            gaps = np.array([np.nan if g is None else g for g in meta["gaps"]], dtype=np.float64)
            out.append((list(meta["ids"]), gaps, rows, meta))
    if len(out) != len(jobs):
        raise RuntimeError(f"llama_ref answered {len(out)} of {len(jobs)} greedy jobs")
    return out


def tokenize(model, text, special=False):
    """llama.cpp's ids for a text (list of int) or for each of a list of texts (no BOS).
    Texts travel in a file: argv cannot hold NUL."""
    flag = ["--special"] if special else []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "text")
        with open(path, "w", encoding="utf-8", newline="") as f:
            if isinstance(text, str):
                f.write(text)
            else:
                json.dump(list(text), f, ensure_ascii=False)
        if isinstance(text, str):
            return run("tokenize", model, "--text-file", path, *flag)["ids"]
        return run("tokenize", model, "--texts-json", path, *flag)["cases"]


def info(model):
    """What llama.cpp reports for the file: architecture, vocab, n_ctx_train, size,
    description, print_info lines and which ggml CPU variant it loaded."""
    return run("info", model)


def rel_err(ours, ref):
    """Largest absolute difference relative to the reference's largest |logit|."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-30))


def greedy_agrees(ours, ref, ref_gaps, tie_gap=1e-2):
    """(ok, message): our greedy ids against llama.cpp's. They must match up to the first
    difference; a difference where llama.cpp's top-2 gap is below `tie_gap` (a near tie,
    which rounding may break either way) is excused, and nothing after it is compared."""
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a != b:
            gap = ref_gaps[i]
            if gap is not None and not np.isnan(gap) and gap < tie_gap:
                return True, f"differ at step {i} ({a} vs {b}) on a near tie (gap {gap:.3g})"
            return False, f"differ at step {i}: ours {a}, llama.cpp {b} (gap {gap:.3g})"
    if len(ours) != len(ref):
        return False, f"lengths differ: ours {len(ours)}, llama.cpp {len(ref)}"
    return True, f"all {len(ref)} ids agree"
