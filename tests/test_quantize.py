"""test_quantize.py — `nexusctl model quantize` and GGUF models end to end: the tensor types
llama-quantize would choose for each mix (Q6_K heads, Q4_K_M's "more bits" layers, fallbacks
for rows that are not whole blocks), an F32 GGUF giving the safetensors model's logits
(llama's q/k permutation and adjacent-pair RoPE included), the GGUF tokenizer encoding the
reference corpus exactly like the real Qwen3 and Llama 3 tokenizer.json it was written from,
synth --out FILE.gguf, `nexusctl run` on every mix, a GGUF file as the input (requantized,
dequantized), the output's folder made, and the errors (bad type, an unknown pre-tokenizer, a
missing directory, a file where the output's folder should be)."""
import gzip
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")
TOOL_LOGITS = os.path.join(BUILD, "tests", "tool_logits")
TOOL_TOKENIZE = os.path.join(BUILD, "tests", "tool_tokenize")
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tokenizer")
ARCHS = ["qwen3", "qwen2", "llama"]
MIXES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"]


def ctl(*args, timeout=300):
    return subprocess.run([NEXUSCTL, *args], capture_output=True, text=True, timeout=timeout)


def ok(*args):
    r = ctl(*args)
    assert r.returncode == 0, f"nexusctl {' '.join(args)}: {r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def root():
    path = tempfile.mkdtemp(prefix="nx-quantize-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sources(root):
    """Safetensors models in F32: tiny (fallbacks everywhere) and small (K-quants fit)."""
    out = {}
    for arch in ARCHS:
        for preset in ("tiny", "small"):
            path = os.path.join(root, f"{arch}-{preset}")
            ok("model", "synth", "--arch", arch, "--preset", preset, "--dtype", "f32",
               "--seed", "5", "--out", path)
            out[(arch, preset)] = path
    return out


def quantize(src, out, mix):
    r = ctl("model", "quantize", src, out, "--type", mix, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def dtypes(path):
    info = json.loads(ok("model", "inspect", path, "--json"))
    return {t["name"]: t["dtype"] for t in info["tensors"]}


def test_q4_k_m_types_follow_llama_quantize(sources, root):
    """small llama: untied head; 2 layers, so "more bits" (first and last eighth, every
    third between) is layer 1 only."""
    out = os.path.join(root, "llama-small-q4km.gguf")
    report = quantize(sources[("llama", "small")], out, "q4_k_m")
    types = dtypes(out)
    assert types["output.weight"] == "Q6_K"
    assert types["token_embd.weight"] == "Q4_K"          # untied: the base type
    assert types["blk.0.attn_v.weight"] == "Q4_K"
    assert types["blk.1.attn_v.weight"] == "Q6_K"
    assert types["blk.0.ffn_down.weight"] == "Q4_K"
    assert types["blk.1.ffn_down.weight"] == "Q6_K"
    assert types["blk.0.attn_q.weight"] == "Q4_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert types["rope_freqs.weight"] == "F32"           # Llama 3 scaling, as llama.cpp has it
    assert report["dtypes"] == {"F32": sum(t == "F32" for t in types.values()),
                                "Q4_K": sum(t == "Q4_K" for t in types.values()),
                                "Q6_K": sum(t == "Q6_K" for t in types.values())}
    assert report["out_bytes"] == os.path.getsize(out)


def test_tied_head_and_fallbacks(sources, root):
    """tiny qwen3: rows of 64 or 128 are not whole 256-blocks: Q4_K falls back to Q5_0 and the
    tied embedding (the head) to Q8_0, as llama.cpp's fallbacks do."""
    out = os.path.join(root, "qwen3-tiny-q4km.gguf")
    quantize(sources[("qwen3", "tiny")], out, "q4_k_m")
    types = dtypes(out)
    assert "output.weight" not in types
    assert types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.attn_q.weight"] == "Q5_0"
    assert types["blk.1.ffn_down.weight"] == "Q8_0"    # Q6_K wanted, rows of 128
    out = os.path.join(root, "qwen3-small-q4_0.gguf")
    quantize(sources[("qwen3", "small")], out, "q4_0")
    types = dtypes(out)
    assert types["token_embd.weight"] == "Q6_K"         # tied: the head's rule
    assert types["blk.0.ffn_down.weight"] == "Q4_0"


def logits(model, out):
    r = subprocess.run([TOOL_LOGITS, model, "--ids", "3,14,15,92,65,35,89,79,32,38",
                        "--greedy", "4", "--out", out, "--threads", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out, dtype=np.float32), json.loads(r.stdout)


@pytest.mark.parametrize("arch", ARCHS)
def test_f32_gguf_gives_the_safetensors_logits(sources, root, arch):
    """The same floats through GGUF: only the layout changed (names, llama's permuted q/k rows
    rotated as adjacent pairs, rope_freqs for the scaling); logits agree to float rounding."""
    src = sources[(arch, "small")]
    gguf = os.path.join(root, f"{arch}-small-f32.gguf")
    quantize(src, gguf, "f32")
    a, ja = logits(src, os.path.join(root, f"{arch}-st.bin"))
    b, jb = logits(gguf, os.path.join(root, f"{arch}-gguf.bin"))
    assert a.shape == b.shape and a.size > 0
    rel = float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
    assert rel < 1e-5, f"{arch}: max relative difference {rel}"
    assert ja["greedy"] == jb["greedy"]


@pytest.mark.parametrize("mix", MIXES)
def test_every_mix_runs(sources, root, mix):
    gguf = os.path.join(root, f"qwen2-small-{mix}.gguf")
    quantize(sources[("qwen2", "small")], gguf, mix)
    r = ctl("run", gguf, "Hello there", "--max-tokens", "6", "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["ids"]) == 6 or out["stop_reason"] == "eos"


def test_synth_writes_gguf(root):
    path = os.path.join(root, "synth-llama-q8.gguf")
    r = ctl("model", "synth", "--arch", "llama", "--preset", "tiny", "--dtype", "q8_0",
            "--out", path)
    assert r.returncode == 0, r.stderr
    assert "q8_0" in r.stdout
    types = dtypes(path)
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    assert not [p for p in os.listdir(root) if ".synth-" in p]   # its temporary dir is gone
    r = ctl("model", "synth", "--arch", "llama", "--preset", "tiny", "--dtype", "q4_k_m",
            "--out", os.path.join(root, "dir-not-gguf"))
    assert r.returncode == 2 and "needs --out FILE.gguf" in r.stderr


@pytest.mark.parametrize("name", ["qwen3", "llama3"])
def test_gguf_tokenizer_matches_reference(root, name):
    """The real tokenizer.json written into GGUF (tokens, types, merges, pre-tokenizer name)
    and read back encodes the whole corpus as the JavaScript reference did."""
    tok_dir = os.path.join(root, f"tok-{name}")
    os.makedirs(tok_dir, exist_ok=True)
    with gzip.open(os.path.join(FIXTURES, name, "tokenizer.json.gz"), "rb") as f_in, \
            open(os.path.join(tok_dir, "tokenizer.json"), "wb") as f_out:
        shutil.copyfileobj(f_in, f_out)
    shutil.copy(os.path.join(FIXTURES, name, "tokenizer_config.json"), tok_dir)
    arch = "qwen3" if name == "qwen3" else "llama"
    model = os.path.join(root, f"real-{name}")
    ok("model", "synth", "--arch", arch, "--preset", "tiny", "--dtype", "f32",
       "--tokenizer", tok_dir, "--out", model)
    gguf = model + ".gguf"
    quantize(model, gguf, "q8_0")
    r = subprocess.run([TOOL_TOKENIZE, "encode", gguf, os.path.join(FIXTURES, "corpus.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    with open(os.path.join(FIXTURES, f"{name}_expected.json"), encoding="utf-8") as f:
        expected = json.load(f)["cases"]
    bad = [i for i, (e, g) in enumerate(zip(expected, got)) if g.get("ids") != e]
    assert len(got) == len(expected) and not bad, f"cases {bad[:10]} differ"
    # the chat template and its stop token came along
    chat_dir = subprocess.run([NEXUSCTL, "tokenize", model, "hi", "--chat"],
                              capture_output=True, text=True, timeout=60)
    chat_gguf = subprocess.run([NEXUSCTL, "tokenize", gguf, "hi", "--chat"],
                               capture_output=True, text=True, timeout=60)
    assert chat_gguf.returncode == 0, chat_gguf.stderr
    assert chat_gguf.stdout == chat_dir.stdout


def test_errors(sources, root):
    src = sources[("qwen3", "tiny")]
    r = ctl("model", "quantize", src, os.path.join(root, "x.gguf"), "--type", "q3_k")
    assert r.returncode == 2 and "unknown --type 'q3_k'" in r.stderr
    r = ctl("model", "quantize", src, os.path.join(root, "x.gguf"))
    assert r.returncode == 2 and "--type is required" in r.stderr
    r = ctl("model", "quantize", os.path.join(root, "nope"), os.path.join(root, "x.gguf"),
            "--type", "q8_0")
    assert r.returncode == 1 and "nope" in r.stderr
    # a pre-tokenizer llama.cpp has no name for
    odd = os.path.join(root, "odd-pretok")
    shutil.copytree(src, odd)
    with open(os.path.join(odd, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+|\\S+"
    with open(os.path.join(odd, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f)
    out = os.path.join(root, "odd.gguf")
    r = ctl("model", "quantize", odd, out, "--type", "q8_0")
    assert r.returncode == 1 and "pre-tokenizer" in r.stderr
    assert not os.path.exists(out)


def test_output_folder_is_made(sources, root):
    """OUT's missing folders are made (as synth --out does), but only once the input is good;
    a file where a folder should be is named."""
    src = sources[("qwen3", "tiny")]
    out = os.path.join(root, "made", "for", "it", "q8.gguf")
    quantize(src, out, "q8_0")
    assert dtypes(out)["blk.0.attn_q.weight"] == "Q8_0"
    r = ctl("model", "quantize", os.path.join(root, "nope"),
            os.path.join(root, "not-made", "x.gguf"), "--type", "q8_0")
    assert r.returncode == 1 and not os.path.exists(os.path.join(root, "not-made"))
    blocker = os.path.join(root, "a-file")
    with open(blocker, "w", encoding="utf-8") as f:
        f.write("not a folder\n")
    r = ctl("model", "quantize", src, os.path.join(blocker, "sub", "x.gguf"), "--type", "q8_0")
    assert r.returncode == 1
    assert f"creating '{os.path.join(blocker, 'sub')}': Not a directory" in r.stderr, r.stderr


def test_gguf_input_requantize_and_dequantize(sources, root):
    """A GGUF file as the input: requantized with the same rules (names, order and keys kept,
    general.file_type updated), or dequantized to F32, whose logits then equal the quantized
    file's to the activation quantization's error."""
    src = os.path.join(root, "llama-small-q8.gguf")
    quantize(sources[("llama", "small")], src, "q8_0")
    re = os.path.join(root, "llama-small-requant.gguf")
    quantize(src, re, "q4_k_m")
    types = dtypes(re)
    assert list(types) == list(dtypes(src))                  # same tensors, same order
    assert types["output.weight"] == "Q6_K" and types["blk.1.attn_v.weight"] == "Q6_K"
    assert types["blk.0.attn_q.weight"] == "Q4_K" and types["rope_freqs.weight"] == "F32"
    info = json.loads(ok("model", "inspect", re, "--json", "--summary"))
    keys = {k["key"]: k.get("value") for k in info["gguf"]["metadata"]}
    assert keys["general.file_type"] == 15 and keys["general.architecture"] == "llama"
    assert keys["tokenizer.ggml.pre"] == "llama-bpe"
    dq = os.path.join(root, "llama-small-dq.gguf")
    quantize(src, dq, "f32")
    assert set(dtypes(dq).values()) == {"F32"}
    a, _ = logits(src, os.path.join(root, "q8.bin"))
    b, _ = logits(dq, os.path.join(root, "dq.bin"))
    rel = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    assert 0 < rel < 5e-2, rel   # only the activations' 8-bit rounding separates them
