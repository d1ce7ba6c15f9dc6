"""test_synth.py — 'nexusctl model synth': config.json, tensors, shards, determinism, tokenizer,
--tokenizer copying and argument errors, checked against real files written by the real binary.
Safetensors headers are parsed here in Python, independently of the C reader."""
import hashlib
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

ARCHS = ["qwen3", "qwen2", "llama"]
DTYPES = {"bf16": ("BF16", 2, "bfloat16"), "f16": ("F16", 2, "float16"),
          "f32": ("F32", 4, "float32")}
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128)
TINY_HEAD_DIM = {"qwen3": 32, "qwen2": 16, "llama": 16}
TINY_TIED = {"qwen3": True, "qwen2": True, "llama": False}
HF_ARCH = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
SPECIALS = {
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "qwen3": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
    "llama": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
              "<|end_header_id|>", "<|eot_id|>"],
}


@pytest.fixture
def tmp():
    path = tempfile.mkdtemp(prefix="nx-synth-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def synth(*args):
    return subprocess.run([NEXUSCTL, "model", "synth", *args], capture_output=True, text=True,
                          timeout=120)


def synth_ok(*args):
    r = synth(*args)
    assert r.returncode == 0, r.stderr
    return r


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def read_tensors(model_dir):
    """name -> (dtype, shape, bytes, file name) for a single-file or sharded directory."""
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    files = (sorted(set(json.load(open(index_path))["weight_map"].values()))
             if os.path.exists(index_path) else ["model.safetensors"])
    out = {}
    for name in files:
        path = os.path.join(model_dir, name)
        header, data_offset = read_header(path)
        with open(path, "rb") as f:
            for tname, t in header.items():
                begin, end = t["data_offsets"]
                f.seek(data_offset + begin)
                assert tname not in out
                out[tname] = (t["dtype"], t["shape"], f.read(end - begin), name)
    return out


def expected_tensors(arch, cfg):
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd, heads, kv = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    t = {"model.embed_tokens.weight": [vocab, h], "model.norm.weight": [h]}
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = [vocab, h]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = [h]
        t[p + "post_attention_layernorm.weight"] = [h]
        t[p + "self_attn.q_proj.weight"] = [heads * hd, h]
        t[p + "self_attn.k_proj.weight"] = [kv * hd, h]
        t[p + "self_attn.v_proj.weight"] = [kv * hd, h]
        t[p + "self_attn.o_proj.weight"] = [h, heads * hd]
        t[p + "mlp.gate_proj.weight"] = [inter, h]
        t[p + "mlp.up_proj.weight"] = [inter, h]
        t[p + "mlp.down_proj.weight"] = [h, inter]
        if arch == "qwen2":
            t[p + "self_attn.q_proj.bias"] = [heads * hd]
            t[p + "self_attn.k_proj.bias"] = [kv * hd]
            t[p + "self_attn.v_proj.bias"] = [kv * hd]
        if arch == "qwen3":
            t[p + "self_attn.q_norm.weight"] = [hd]
            t[p + "self_attn.k_norm.weight"] = [hd]
    return t


def as_float(dtype, raw):
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4")
    if dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)


def model_digest(model_dir):
    h = hashlib.sha256()
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            h.update(open(os.path.join(model_dir, name), "rb").read())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shards", [1, 3])
def test_tiny_model(tmp, arch, dtype, shards):
    out = os.path.join(tmp, "m")
    r = synth_ok("--arch", arch, "--preset", "tiny", "--out", out, "--dtype", dtype,
                 "--shards", str(shards))
    assert r.stdout.startswith(f"wrote {out}: {arch} tiny {dtype}, ")
    st_dtype, esize, torch_dtype = DTYPES[dtype]
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["architectures"] == [HF_ARCH[arch]]
    assert cfg["model_type"] == arch
    for k, v in TINY.items():
        assert cfg[k] == v, k
    assert cfg["head_dim"] == TINY_HEAD_DIM[arch]
    assert cfg["tie_word_embeddings"] == TINY_TIED[arch]
    assert cfg["torch_dtype"] == torch_dtype
    assert cfg["hidden_act"] == "silu"
    assert cfg["vocab_size"] % 64 == 0
    if arch == "llama":
        assert cfg["rope_scaling"]["rope_type"] == "llama3"
        assert cfg["rms_norm_eps"] == 1e-5 and cfg["rope_theta"] == 500000
        assert cfg["attention_bias"] is False and cfg["mlp_bias"] is False
    else:
        assert cfg["rope_scaling"] is None and cfg["use_sliding_window"] is False
        assert cfg["rms_norm_eps"] == 1e-6 and cfg["rope_theta"] == 1e6
    if arch == "qwen3":
        assert cfg["attention_bias"] is False

    tensors = read_tensors(out)
    expected = expected_tensors(arch, cfg)
    assert set(tensors) == set(expected)
    for name, shape in expected.items():
        got_dtype, got_shape, raw, _ = tensors[name]
        assert got_dtype == st_dtype and got_shape == shape, name
        assert len(raw) == int(np.prod(shape)) * esize

    files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    if shards == 1:
        assert files == ["model.safetensors"]
        assert not os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    else:
        assert files == [f"model-{k:05d}-of-{shards:05d}.safetensors" for k in
                         range(1, shards + 1)]
        index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
        assert set(index["weight_map"]) == set(expected)
        assert index["metadata"]["total_size"] == sum(len(t[2]) for t in tensors.values())
        for name, (_, _, _, fname) in tensors.items():
            assert index["weight_map"][name] == fname
    assert [f for f in os.listdir(tmp) if f != "m"] == []  # no temporary left behind
    subprocess.run([NEXUSCTL, "model", "verify", out], check=True, capture_output=True)


def test_values_look_like_weights(tmp):
    out = os.path.join(tmp, "m")
    synth_ok("--arch", "qwen2", "--preset", "tiny", "--out", out, "--dtype", "f32")
    t = read_tensors(out)
    emb = as_float("F32", t["model.embed_tokens.weight"][2])
    assert abs(emb.mean()) < 0.002 and 0.017 < emb.std() < 0.023
    norm = as_float("F32", t["model.layers.0.input_layernorm.weight"][2])
    assert abs(norm.mean() - 1.0) < 0.02 and norm.std() < 0.05
    bias = as_float("F32", t["model.layers.0.self_attn.q_proj.bias"][2])
    assert np.abs(bias).max() < 0.1 and bias.std() > 0
    # bf16 is f32 rounded to nearest even: same seed, same values within bf16 precision
    out16 = os.path.join(tmp, "b")
    synth_ok("--arch", "qwen2", "--preset", "tiny", "--out", out16, "--dtype", "bf16")
    emb16 = as_float("BF16", read_tensors(out16)["model.embed_tokens.weight"][2])
    assert np.allclose(emb16, emb, rtol=2 ** -8, atol=0)


def test_seed_determinism_and_sharding(tmp):
    a, b, c, d = (os.path.join(tmp, x) for x in "abcd")
    synth_ok("--arch", "llama", "--preset", "tiny", "--out", a, "--seed", "7")
    synth_ok("--arch", "llama", "--preset", "tiny", "--out", b, "--seed", "7")
    synth_ok("--arch", "llama", "--preset", "tiny", "--out", c, "--seed", "8")
    synth_ok("--arch", "llama", "--preset", "tiny", "--out", d, "--seed", "7", "--shards", "4")
    assert model_digest(a) == model_digest(b)
    ta, tc, td = read_tensors(a), read_tensors(c), read_tensors(d)
    assert all(ta[n][2] != tc[n][2] for n in ta)
    assert {n: v[2] for n, v in ta.items()} == {n: v[2] for n, v in td.items()}
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert open(os.path.join(a, name)).read() == open(os.path.join(c, name)).read()


def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def bpe_encode(word, ranks):
    parts = list(word)
    while len(parts) > 1:
        pairs = [(ranks.get((parts[i], parts[i + 1]), 1 << 30), i) for i in range(len(parts) - 1)]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer(tmp, arch):
    out = os.path.join(tmp, "m")
    synth_ok("--arch", arch, "--preset", "tiny", "--out", out)
    cfg = json.load(open(os.path.join(out, "config.json")))
    tok = json.load(open(os.path.join(out, "tokenizer.json")))
    tcfg = json.load(open(os.path.join(out, "tokenizer_config.json")))
    gen = json.load(open(os.path.join(out, "generation_config.json")))
    model = tok["model"]
    assert model["type"] == "BPE" and model["byte_fallback"] is False
    assert model["ignore_merges"] == (arch == "llama")
    assert tok["normalizer"] == (None if arch == "llama" else {"type": "NFC"})
    split = tok["pre_tokenizer"]["pretokenizers"][0]
    assert split["type"] == "Split" and split["behavior"] == "Isolated"
    assert ("\\p{N}{1,3}" in split["pattern"]["Regex"]) == (arch == "llama")
    vocab = model["vocab"]
    b2u = bytes_to_unicode()
    assert [vocab[b2u[b]] for b in range(256)] == list(range(256))
    assert 350 <= len(model["merges"]) <= 400
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    assert all(isinstance(m, str) == (arch == "qwen2") for m in model["merges"])
    for left, right in merges:
        assert left in vocab and right in vocab and left + right in vocab
    added = tok["added_tokens"]
    assert [a["content"] for a in added] == SPECIALS[arch]
    ids = list(vocab.values()) + [a["id"] for a in added]
    assert len(ids) == len(set(ids)) and max(ids) < cfg["vocab_size"]
    assert [a["id"] for a in added] == list(range(len(vocab), len(vocab) + len(added)))
    for a in added:
        assert a["special"] == (a["content"] not in ("<think>", "</think>"))
        assert str(a["id"]) in tcfg["added_tokens_decoder"]
    by_content = {a["content"]: a["id"] for a in added}
    if arch == "llama":
        assert cfg["bos_token_id"] == by_content["<|begin_of_text|>"]
        assert cfg["eos_token_id"] == [by_content["<|end_of_text|>"], by_content["<|eot_id|>"]]
        assert "<|start_header_id|>" in tcfg["chat_template"]
    else:
        assert cfg["bos_token_id"] == by_content["<|endoftext|>"]
        assert cfg["eos_token_id"] == by_content["<|im_end|>"] == by_content[tcfg["eos_token"]]
        assert "<|im_start|>" in tcfg["chat_template"]
        assert ("enable_thinking" in tcfg["chat_template"]) == (arch == "qwen3")
    assert gen["eos_token_id"] == cfg["eos_token_id"]
    # a round trip through the merges: byte-level encode, BPE, ids, back to bytes
    ranks = {m: r for r, m in enumerate(merges)}
    inverse = {v: k for k, v in vocab.items()}
    u2b = {u: b for b, u in b2u.items()}
    text = "The loader reads 1234 tensors: café, Straße, 日本語!\n"
    got = b""
    for word in text.replace(" ", "\0 ").split("\0"):
        pieces = bpe_encode("".join(b2u[b] for b in word.encode()), ranks)
        got += bytes(u2b[c] for p in pieces for c in inverse[vocab[p]])
    assert got == text.encode()
    assert len(bpe_encode("".join(b2u[b] for b in b" the"), ranks)) == 1


def test_tokenizer_copy(tmp):
    src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
    synth_ok("--arch", "qwen3", "--preset", "tiny", "--out", src)
    synth_ok("--arch", "qwen3", "--preset", "tiny", "--out", out, "--seed", "3",
             "--tokenizer", src)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert open(os.path.join(src, name), "rb").read() == \
            open(os.path.join(out, name), "rb").read()
    a, b = (json.load(open(os.path.join(d, "config.json"))) for d in (src, out))
    assert (a["bos_token_id"], a["eos_token_id"], a["vocab_size"]) == \
        (b["bos_token_id"], b["eos_token_id"], b["vocab_size"])

    # a hand-made tokenizer: ids are looked up by content, vocab follows the highest id
    hand = os.path.join(tmp, "hand")
    os.mkdir(hand)
    vocab = {chr(ord("a") + i): i for i in range(20)}
    json.dump({"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []},
               "added_tokens": [{"id": 100, "content": "<s>", "special": True},
                                {"id": 130, "content": "</s>", "special": True}]},
              open(os.path.join(hand, "tokenizer.json"), "w"))
    json.dump({"bos_token": "<s>", "eos_token": {"content": "</s>"}},
              open(os.path.join(hand, "tokenizer_config.json"), "w"))
    out2 = os.path.join(tmp, "out2")
    synth_ok("--arch", "llama", "--preset", "tiny", "--out", out2, "--tokenizer", hand)
    cfg = json.load(open(os.path.join(out2, "config.json")))
    assert cfg["bos_token_id"] == 100 and cfg["eos_token_id"] == 130
    assert cfg["vocab_size"] == 192
    assert read_tensors(out2)["lm_head.weight"][1] == [192, 64]

    # no tokenizer.json: a clear error, nothing written
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    out3 = os.path.join(tmp, "out3")
    r = synth("--arch", "qwen2", "--preset", "tiny", "--out", out3, "--tokenizer", empty)
    assert r.returncode == 1 and "tokenizer.json" in r.stderr
    assert not os.path.exists(out3)
    assert sorted(os.listdir(tmp)) == ["empty", "hand", "out", "out2", "src"]


@pytest.mark.parametrize("args", [
    [],
    ["--arch", "gpt2", "--preset", "tiny", "--out", "X"],
    ["--arch", "qwen3", "--preset", "70b", "--out", "X"],
    ["--arch", "qwen3", "--preset", "tiny"],
    ["--preset", "tiny", "--out", "X"],
    ["--arch", "qwen3", "--preset", "tiny", "--out", "X", "--dtype", "f8"],
    ["--arch", "qwen3", "--preset", "tiny", "--out", "X", "--seed", "-1"],
    ["--arch", "qwen3", "--preset", "tiny", "--out", "X", "--seed", "12abc"],
    ["--arch", "qwen3", "--preset", "tiny", "--out", "X", "--shards", "0"],
    ["--arch", "qwen3", "--preset", "tiny", "--out", "X", "--shards", "25"],
    ["--arch", "qwen3", "--preset", "tiny", "--out", "X", "--bogus"],
    ["--arch", "qwen3", "--preset", "tiny", "--out"],
])
def test_bad_arguments(tmp, args):
    args = [os.path.join(tmp, "X") if a == "X" else a for a in args]
    r = synth(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("nexusctl model synth: ") and r.stderr.count("\n") == 1
    assert os.listdir(tmp) == []


def test_shards_up_to_tensor_count(tmp):
    out = os.path.join(tmp, "m")
    synth_ok("--arch", "qwen3", "--preset", "tiny", "--out", out, "--shards", "24")
    assert len([f for f in os.listdir(out) if f.endswith(".safetensors")]) == 24
    assert len(read_tensors(out)) == 24


def test_output_directory_rules(tmp):
    out = os.path.join(tmp, "m")
    os.mkdir(out)  # an empty directory is fine
    synth_ok("--arch", "qwen2", "--preset", "tiny", "--out", out + "/")
    before = model_digest(out)
    r = synth("--arch", "qwen2", "--preset", "tiny", "--out", out, "--seed", "1")
    assert r.returncode == 1 and "not empty" in r.stderr and out in r.stderr
    assert model_digest(out) == before
    nested = os.path.join(tmp, "a", "b", "c")
    synth_ok("--arch", "llama", "--preset", "tiny", "--out", nested)
    assert os.path.exists(os.path.join(nested, "config.json"))
    help_text = subprocess.run([NEXUSCTL, "model", "synth", "--help"], capture_output=True,
                               text=True).stdout
    assert "Qwen3-0.6B" in help_text and "Llama-3.1-8B" in help_text


def test_qwen3_0_6b(tmp):
    out = os.path.join(tmp, "m")
    r = synth_ok("--arch", "qwen3", "--preset", "0.6b", "--out", out)
    assert "310 tensors, 1.192 GB in 1 file" in r.stdout
    cfg = json.load(open(os.path.join(out, "config.json")))
    want = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
                tie_word_embeddings=True, max_position_embeddings=40960)
    assert {k: cfg[k] for k in want} == want
    header, _ = read_header(os.path.join(out, "model.safetensors"))
    assert set(header) == set(expected_tensors("qwen3", cfg))
    assert header["model.embed_tokens.weight"]["shape"] == [151936, 1024]
