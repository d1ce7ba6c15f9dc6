#!/usr/bin/env python3
"""make_seeds.py — write the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/): a few
small, valid (and a few nearly valid) inputs per target, so each fuzzer starts past the
format's first checks. Run from anywhere: /usr/bin/python3 tests/fuzz/make_seeds.py. Deterministic;
the committed files are its output (plus inputs the long runs found and `-merge=1` kept, named
by their SHA-1 as libFuzzer names them). Needs python3-msgpack and numpy.
"""
import json
import os
import struct
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import gguf_ref as G  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def st_seeds():
    t = "fuzz_st_header"
    put(t, "one_f32", safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}},
                                  bytes(16)))
    put(t, "mixed", safetensors({
        "__metadata__": {"format": "pt", "nexus.digest": "xxh64:0123456789abcdef"},
        "a": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]},
        "b": {"dtype": "F16", "shape": [1, 1], "data_offsets": [6, 8]},
        "c": {"dtype": "I64", "shape": [], "data_offsets": [8, 16]},
        "d": {"dtype": "U8", "shape": [0], "data_offsets": [16, 16]}}, bytes(16)))
    put(t, "empty", safetensors({}))
    put(t, "overlap", safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                   "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}},
                                  bytes(8)))


def gguf_bytes(kvs, tensors, **kw):
    path = os.path.join(CORPUS, ".tmp.gguf")
    G.write(path, kvs, tensors, **kw)
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return data


def f32(n):
    import numpy as np
    return np.arange(n, dtype="<f4").tobytes()


def model_kvs(arch, hidden=8, heads=2, kv_heads=1, layers=1, ff=16, vocab=4, extra=()):
    kvs = [("general.architecture", G.STR, arch),
           (f"{arch}.embedding_length", G.U32, hidden),
           (f"{arch}.feed_forward_length", G.U32, ff),
           (f"{arch}.block_count", G.U32, layers),
           (f"{arch}.attention.head_count", G.U32, heads),
           (f"{arch}.attention.head_count_kv", G.U32, kv_heads),
           (f"{arch}.context_length", G.U32, 64),
           (f"{arch}.attention.layer_norm_rms_epsilon", G.F32, 1e-6),
           (f"{arch}.rope.freq_base", G.F32, 10000.0),
           (f"{arch}.vocab_size", G.U32, vocab),
           ("tokenizer.ggml.bos_token_id", G.U32, 0),
           ("tokenizer.ggml.eos_token_id", G.U32, 1)]
    return kvs + list(extra)


def gguf_seeds():
    t = "fuzz_gguf_header"
    put(t, "kv_every_type", gguf_bytes([
        ("u8", G.U8, 1), ("i8", G.I8, -1), ("u16", G.U16, 2), ("i16", G.I16, -2),
        ("u32", G.U32, 3), ("i32", G.I32, -3), ("f32", G.F32, 1.5), ("b", G.BOOL, True),
        ("s", G.STR, "text"), ("u64", G.U64, 4), ("i64", G.I64, -4), ("f64", G.F64, 2.5),
        ("arr_s", G.ARR, ["a", "bc"], G.STR), ("arr_i", G.ARR, [1, 2, 3], G.I32)],
        [("w", "F32", (2, 2), f32(4))]))
    put(t, "tensors", gguf_bytes([("general.architecture", G.STR, "llama")],
                                 [("a", "F16", (4,), bytes(8)), ("b", "BF16", (2, 2), bytes(8)),
                                  ("q", "Q8_0", (32,), bytes(34))], alignment=64))
    put(t, "empty", gguf_bytes([], []))


def model_config_seeds():
    t = "fuzz_model_config"
    base = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
            "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "hidden_act": "silu", "tie_word_embeddings": True}
    put(t, "qwen3.json", json.dumps(dict(base, model_type="qwen3", head_dim=32,
                                         bos_token_id=None, eos_token_id=151645,
                                         attention_bias=False, use_sliding_window=False), indent=1))
    put(t, "qwen2.json", json.dumps(dict(base, model_type="qwen2", eos_token_id=[1, 2]), indent=1))
    put(t, "llama3.json", json.dumps(dict(
        base, model_type="llama", bos_token_id=0, eos_token_id=[1, 2, 3], mlp_bias=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        indent=1))
    put(t, "rope_parameters.json", json.dumps(dict(
        {k: v for k, v in base.items() if k != "rope_theta"}, model_type="mistral",
        rope_parameters={"rope_theta": 1e6}), indent=1))
    put(t, "llama.gguf", gguf_bytes(model_kvs("llama"), [
        ("token_embd.weight", "F32", (4, 8), f32(32)), ("rope_freqs.weight", "F32", (2,), f32(2)),
        ("output.weight", "F32", (4, 8), f32(32))]))
    put(t, "qwen3.gguf", gguf_bytes(model_kvs("qwen3", extra=[
        ("qwen3.attention.key_length", G.U32, 4), ("qwen3.attention.value_length", G.U32, 4),
        ("qwen3.rope.scaling.type", G.STR, "none")]),
        [("token_embd.weight", "F32", (4, 8), f32(32)),
         ("blk.0.attn_q_norm.weight", "F32", (4,), f32(4))]))


def req(**fields):
    return msgpack.packb(fields, use_bin_type=True)


def proto_seeds():
    t = "fuzz_proto"
    params = {"max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
              "repetition_penalty": 1.1, "seed": 42, "stop": ["\n\n", "END"]}
    put(t, "ping", req(op="ping", id=1))
    put(t, "task", req(op="task", id="t-1", agent="writer", input="Hello, wörld",
                       session="s1", stream=True, params=params, route=["editor", "critic"]))
    put(t, "task_min", req(op="task", id=[1, "x"], agent="a", input=""))
    put(t, "cancel", req(op="cancel", id=None, task=7))
    put(t, "status", req(op="status", id={"k": 1.5}))
    put(t, "agents", req(op="agents"))
    put(t, "models", req(op="models", id=b"\x00\xff"))
    for op in ("load", "evict", "pin", "unpin"):
        put(t, op, req(op=op, id=2, model="demo-qwen3"))
    put(t, "tasks", req(op="tasks", id=3, agent="writer", limit=1000))
    put(t, "history", req(op="history", id=4, session="s1"))
    put(t, "metrics", req(op="metrics", id=5))
    put(t, "task_history", req(op="task", id=6, agent="a", input="and now?",
                               history=[{"role": "user", "content": "first"},
                                        {"role": "assistant", "content": "answer"}]))
    put(t, "dup_id", b"\x83\xa2op\xa4ping\xa2id\x01\xa2id\x02")
    put(t, "task_tools", req(op="task", id=7, agent="a", tools=TOOLS, tool_choice="required",
                             parallel_tool_calls=False, history=TOOL_TURNS))


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "w", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
TOOL_TURNS = [{"role": "user", "content": "weather?"},
              {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                    "function": {"name": "get_weather",
                                                                 "arguments": "{\"city\":\"Oslo\"}"}}]},
              {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "4C"}]


def openai_seeds():
    """fuzz_openai: one byte choosing the endpoint (even: chat, odd: completions), then JSON."""
    t = "fuzz_openai"
    chat = {"model": "assistant", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"},
                         {"role": "user", "content": [{"type": "text", "text": "and"},
                                                      {"type": "text", "text": " now?"}]}],
            "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": ["\n", "END"],
            "user": "u1", "n": 1, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1}
    put(t, "chat", b"\x00" + json.dumps(chat).encode())
    put(t, "chat_min", b"\x00" + json.dumps({"model": "a", "messages": [
        {"role": "user", "content": ""}]}).encode())
    put(t, "completion", b"\x01" + json.dumps({"model": "a", "prompt": ["x"], "stop": "\n",
                                                "max_completion_tokens": 3}).encode())
    put(t, "not_object", b"\x00[1, 2]")
    put(t, "chat_tools", b"\x00" + json.dumps({
        "model": "a", "tools": TOOLS, "parallel_tool_calls": True,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [dict(m, content=None) if "tool_calls" in m else m
                     for m in TOOL_TURNS]}).encode())


def conf_seeds():
    src = os.path.join(ROOT, "tests", "fixtures", "conf")
    t = "fuzz_conf"
    for name in ("full.yaml", "minimal.yaml", "short_forms.yaml", "quoted.yaml"):
        with open(os.path.join(src, "good", "agent", name), "rb") as f:
            put(t, name, f.read())
    put(t, "nested_flow.yaml", "name: x\nmodel: m\ndescription: " + "[" * 64 + "]" * 64 + "\n")
    put(t, "anchors.yaml", "name: &n x\nmodel: *n\nstop: &s [a, b]\ngeneration: {stop: *s}\n")
    t = "fuzz_nexus_conf"
    # nexus.yaml beside agents/ and models/ (fuzz_nexus_conf makes them)
    put(t, "defaults.yaml", "# the defaults\npool: 1GiB\n")
    put(t, "full.yaml", """home: var
models: models
agents: agents
listen: tcp://127.0.0.1:15555
events: ipc:///tmp/nexus-fuzz-events
device: cpu
pool: 8589934592
host_cache: 512MiB
max_message_bytes: 65536
max_batch: 4
context: 2048
""")
    put(t, "curve.yaml", """listen: tcp://0.0.0.0:5555
events: tcp://0.0.0.0:5556
pool: 40%
curve:
  secret_key: keys/server.key_secret
  clients: keys/clients
""")
    put(t, "sizes.yaml", "pool: 2.5 GB\nhost_cache: 0\nmax_message_bytes: 1MiB\n")
    put(t, "bad_key.yaml", "pool: 1GiB\npoool: 2\n")
    put(t, "http.yaml", """pool: 1GiB
http:
  listen: "[::]:8080"
  api_keys: [sk-nexus-fuzz-0123456789, sk-nexus-fuzz-abcdefghij]
  idle_timeout: 1m
  max_connections: 8
""")


def tokenizer_seeds():
    t = "fuzz_tokenizer"
    corpus = json.load(open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "corpus.json")))
    texts = corpus if isinstance(corpus, list) else list(corpus.values())
    texts = [x if isinstance(x, str) else x.get("text", "") for x in texts]
    texts = [x for x in texts if x]
    picked = texts[::max(1, len(texts) // 12)][:12]
    picked += ["<|im_start|>user\nhi<|im_end|>", "<|begin_of_text|>x<|eot_id|>",
               "e\u0301 \u212b \uac00\u11a8", "  \t\n\n  trailing   ", "123456789 3.14 $$$"]
    for i, text in enumerate(picked):
        put(t, f"text{i:02d}", bytes([i % 4]) + text.encode())
    put(t, "invalid_utf8", b"\x00abc\xff\xfe\xc0\x80\xed\xa0\x80")


def chat_seeds():
    t = "fuzz_chat_template"

    def chat(tok, kind, thinking, gen, msgs):
        b1 = kind | ((thinking + 1) << 3) | (int(gen) << 5)
        return bytes([tok, b1]) + b"\0".join(s.encode() for m in msgs for s in m)

    conv = [("system", "You are terse."), ("user", "Hi there"), ("assistant", "  Hello!  "),
            ("user", "Bye <|im_end|> \u00e9")]
    for tok in (0, 1):
        for kind in range(5):
            put(t, f"tok{tok}_kind{kind}", chat(tok, kind, kind % 3 - 1, kind != 3, conv))
    put(t, "bad_role", chat(0, 1, -1, True, [("us<er", "x")]))
    put(t, "empty", chat(1, 2, 0, False, [("user", "")]))


def pull_listing_seeds():
    t = "fuzz_pull_listing"
    sha = "4b915c1235e71a9794f8d0d1eee9e3f99c275a59"
    blob = "e4b0cc0e8d43cde717d584f09516b6a172d21176"
    lfs = {"sha256": "4b4131742299cb477f3410035ae30bd2ff2d0ed83006c2e59a38377e9a867f1a",
           "size": 160128, "pointerSize": 134}

    def listing(siblings, commit=sha):
        return json.dumps({"id": "Org/Name", "sha": commit, "siblings": siblings}).encode()

    st = [{"rfilename": "config.json", "size": 711, "blobId": blob},
          {"rfilename": "tokenizer.json", "size": 31349, "blobId": blob},
          {"rfilename": "README.md", "size": 20, "blobId": blob},
          {"rfilename": "sub/notes.txt", "size": 3, "blobId": blob},
          {"rfilename": "model.safetensors", "size": 160128, "blobId": blob, "lfs": lfs}]
    put(t, "safetensors", b"\x00" + listing(st))
    put(t, "safetensors_include", b"\x02" + listing(st))
    gguf = [{"rfilename": "m-q4.gguf", "size": 160128, "blobId": blob, "lfs": lfs},
            {"rfilename": "m-q8.gguf", "size": 160128, "blobId": blob, "lfs": lfs},
            {"rfilename": "README.md", "size": 20, "blobId": blob}]
    put(t, "gguf_file", b"\x01" + listing(gguf))
    put(t, "gguf_no_file", b"\x00" + listing(gguf))
    put(t, "traversal", b"\x02" + listing([{"rfilename": "../config.json", "size": 1,
                                              "blobId": blob},
                                             {"rfilename": "sub/../x.md", "size": 1,
                                              "blobId": blob}]))
    put(t, "no_sha", b"\x00" + listing(st, commit="main"))


def loader_cache_seeds():
    t = "fuzz_loader_cache"
    put(t, "two_entries", b"# nexus loader I/O shapes\n"
        b"v1 dev=254:0 fsid=5a0a4a4758682a8a io=io_uring threads=2 depth=2 chunk_kib=16384\n"
        b"v1 dev=8:1 fsid=0000000000000042 io=threads threads=8 depth=1 chunk_kib=32768\n")
    put(t, "corrupt_and_stale", b"v1 dev=254:0 fsid=zz io=io_uring threads=2\n"
        b"v1 dev=254:0 fsid=0000000000000abc io=io_uring threads=0 depth=2 chunk_kib=16384\n"
        b"\r\n   \n# c\n"
        b"v1 dev=254:0 fsid=0000000000000def io=threads threads=6 depth=1 chunk_kib=4096 note=x\n")
    put(t, "nul_and_long", b"v1 dev=1:2\x00 x\n" + b"y" * 1500 + b"\n"
        b"v1 dev=1:2 fsid=0000000000000001 io=io_uring threads=1 depth=64 chunk_kib=4\n")


def main():
    # rewrites its own files; inputs that `-merge=1` added beside them are kept
    st_seeds()
    gguf_seeds()
    model_config_seeds()
    proto_seeds()
    openai_seeds()
    conf_seeds()
    tokenizer_seeds()
    chat_seeds()
    pull_listing_seeds()
    loader_cache_seeds()
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print(f"{target}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()
