"""test_llamacpp.py — our engine against llama.cpp itself on the same GGUF files.

For qwen3, qwen2 and llama models (`nexusctl model synth --preset small`: every matrix row a
whole number of 256-blocks, so Q4_K and Q6_K cover every tensor) written by `nexusctl model
quantize` in F32, F16, BF16, Q8_0, Q4_0 and Q4_K_M (plus a tiny Q4_K_M whose rows fall back to
Q5_0 and Q8_0), the same prompt ids go through llama.cpp's own prebuilt CPU build
(tests/tools/llama_ref.mjs: node-llama-cpp, installed by `make llama-ref`) and through ours
(tests/tool_logits on the CPU backend):

1. The final position's logits agree within TOLERANCE[mix] of the largest logit (max |ours -
   llama.cpp| / max |llama.cpp|), for two prompts per file. The tolerances come from
   llama.cpp's own arithmetic:
   - F32: both compute in fp32; only the order of sums differs: 1e-5.
   - F16 / BF16: llama.cpp rounds the activations to the weight's type before its dot products
     (its vec_dot_type), we keep them in fp32. That rounding alone moves llama.cpp's logits by
     about 2^-11 (F16) and 2^-8 (BF16) of the largest, times the depth: 5e-3 and 3e-2.
   - Q8_0, Q4_0, Q5_0, Q4_K, Q6_K: both quantize each activation block to 8 bits exactly as
     ggml does (Q8_0 blocks with an fp16 scale for the 32-element types, Q8_K for the K-quants)
     and sum integers exactly, so the two agree to float rounding (1e-4 is asked of at least
     one prompt of the two)... except where an activation lies within an ulp of a rounding
     boundary: the last bit of the fp32 activation (a norm or a sum done in another order)
     then picks the other quantization step. One such flip moves the logits of these small
     random models by up to ~1e-2 of the largest, the same scale as llama.cpp's own error from
     quantizing activations (the file against its dequantized F32 copy, printed beside each
     result: ~1e-2), so 2e-2 is allowed; and ours against the dequantized copy must be no
     worse than 1.5 x llama.cpp's.
2. Greedy continuations of 16 tokens agree wherever llama.cpp's top-2 gap exceeds the mix's
   tolerance (a divergence on a closer tie is excused, from there on).

Skipped, with the reason, where node or the installed package is missing."""
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

import llama_ref_util as lr

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")
TOOL_LOGITS = os.path.join(BUILD, "tests", "tool_logits")
ARCHS = ["qwen3", "qwen2", "llama"]
MIXES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"]
TOLERANCE = {"f32": 1e-5, "f16": 5e-3, "bf16": 3e-2, "q8_0": 2e-2, "q4_0": 2e-2,
             "q4_k_m": 2e-2}
EXACT = 1e-4  # float rounding: what a quantized file's prompts must reach at least once
PROMPTS = [[3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 383, 279, 50],
           [271, 82, 81, 82, 80, 84, 62, 64, 33, 83, 27, 95, 2, 88, 41, 97]]
GREEDY = 16
CASES = [(a, "small", m) for a in ARCHS for m in MIXES] + [("qwen2", "tiny", "q4_k_m")]


def ctl(*args):
    r = subprocess.run([NEXUSCTL, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"nexusctl {' '.join(args)}: {r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def root():
    lr.require()
    path = tempfile.mkdtemp(prefix="nx-llamacpp-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sources(root):
    out = {}
    for arch in ARCHS:
        for preset in ("small", "tiny"):
            path = os.path.join(root, f"{arch}-{preset}")
            ctl("model", "synth", "--arch", arch, "--preset", preset, "--dtype", "f32",
                "--seed", "21", "--out", path)
            out[(arch, preset)] = path
    return out


def case_name(arch, preset, mix):
    return f"{arch}-{preset}-{mix}"


@pytest.fixture(scope="module")
def references(sources, root):
    """Every case's file (quantized by us) and llama.cpp's greedy run on each prompt, all in
    one node process: {name: [(ids, gaps, rows, meta) per prompt]}."""
    jobs, names = [], []
    for arch, preset, mix in CASES:
        name = case_name(arch, preset, mix)
        gguf = os.path.join(root, name + ".gguf")
        ctl("model", "quantize", sources[(arch, preset)], gguf, "--type", mix)
        for prompt in PROMPTS:
            jobs.append((gguf, prompt, GREEDY))
            names.append(name)
    out = {}
    for name, answer in zip(names, lr.greedy_many(jobs)):
        out.setdefault(name, []).append(answer)
    return out


def ours(model, prompt, out):
    r = subprocess.run([TOOL_LOGITS, model, "--ids", ",".join(map(str, prompt)),
                        "--greedy", str(GREEDY), "--out", out, "--threads", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    rows = np.fromfile(out, dtype=np.float32).reshape(-1, meta["vocab"])
    return rows[len(prompt) - 1], meta["greedy"]


def rel(a, b, scale):
    return float(np.max(np.abs(a - b)) / scale)


@pytest.mark.parametrize("arch,preset,mix", CASES)
def test_same_logits_and_greedy_as_llama_cpp(references, root, arch, preset, mix):
    name = case_name(arch, preset, mix)
    gguf = os.path.join(root, name + ".gguf")  # written by the references fixture
    # the same weights, dequantized to F32: what both engines would compute without rounding
    exact_gguf = os.path.join(root, name + "-f32.gguf")
    ctl("model", "quantize", gguf, exact_gguf, "--type", "f32")
    errors = []
    for k, prompt in enumerate(PROMPTS):
        ref_ids, gaps, ref_rows, _ = references[name][k]
        ref = np.asarray(ref_rows[0], dtype=np.float32)
        our_logits, our_ids = ours(gguf, prompt, os.path.join(root, f"{name}-{k}.bin"))
        exact, _ = ours(exact_gguf, prompt, os.path.join(root, f"{name}-{k}-f32.bin"))
        scale = float(np.max(np.abs(ref)))
        err = rel(our_logits, ref, scale)
        llama_vs_exact, ours_vs_exact = rel(ref, exact, scale), rel(our_logits, exact, scale)
        print(f"{name} prompt {k}: ours vs llama.cpp {err:.3g} (tolerance "
              f"{TOLERANCE[mix]:g}); vs the dequantized weights: llama.cpp "
              f"{llama_vs_exact:.3g}, ours {ours_vs_exact:.3g}")
        assert err <= TOLERANCE[mix], f"{name} prompt {k}: logits differ by {err:.3g}"
        assert ours_vs_exact <= 1.5 * llama_vs_exact + 1e-5, \
            f"{name} prompt {k}: ours is further from the exact result ({ours_vs_exact:.3g}) " \
            f"than llama.cpp ({llama_vs_exact:.3g})"
        agree, why = lr.greedy_agrees(our_ids, ref_ids, gaps, TOLERANCE[mix] * scale)
        assert agree, f"{name} prompt {k}: greedy continuations differ: {why}"
        errors.append(err)
    if mix not in ("f16", "bf16"):
        assert min(errors) <= EXACT, \
            f"{name}: no prompt agrees to float rounding ({errors}): not the same arithmetic"
