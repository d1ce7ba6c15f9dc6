"""ref_forward.py — a numpy reference of the forward pass of Hugging Face's LlamaForCausalLM
(and Mistral, same layout), Qwen2ForCausalLM and Qwen3ForCausalLM, in float64, written from
the modeling code's definitions and independent of the C engine: safetensors headers are
parsed here, bf16 is widened by a 16-bit shift, every value comes from config.json.

    logits = forward(load_config(d), load_weights(d), [1, 2, 3])   # [tokens, vocab]

Also writes small safetensors files (save_safetensors) so tests can make model variants that
`nexusctl model synth` does not produce.
"""
import json
import math
import os
import struct

import numpy as np

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def read_safetensors(path):
    """name -> float64 array for one .safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        raw = np.frombuffer(data[begin:end], dtype=ST_DTYPES[t["dtype"]])
        if t["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.astype(np.float64).reshape(t["shape"])
    return out


def load_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = [f for f in sorted(os.listdir(model_dir)) if f.endswith(".safetensors")]
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(model_dir, name)))
    return weights


def save_safetensors(path, tensors):
    """tensors: name -> float32 array. A plain, contiguous, 8-byte-padded header file."""
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        blob = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def load_config(model_dir):
    return json.load(open(os.path.join(model_dir, "config.json")))


def rope_inv_freq(cfg, head_dim):
    """Default RoPE frequencies, then Llama 3 scaling as _compute_llama3_parameters."""
    params = cfg.get("rope_parameters") or {}  # transformers 5 keeps both here
    base = cfg["rope_theta"] if "rope_theta" in cfg else params["rope_theta"]
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    scaling = cfg.get("rope_scaling") or params
    if scaling.get("rope_type", scaling.get("type")) != "llama3":
        return inv_freq
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled)


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def attention(cfg, w, p, h, cos, sin):
    """One layer's self-attention over the whole sequence (causal), h: [n, hidden]."""
    n = h.shape[0]
    heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or hidden // heads
    qkv_bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)

    def proj(name, x):
        y = x @ w[p + name + ".weight"].T
        return y + w[p + name + ".bias"] if qkv_bias else y

    q = proj("q_proj", h).reshape(n, heads, hd)
    k = proj("k_proj", h).reshape(n, kv_heads, hd)
    v = proj("v_proj", h).reshape(n, kv_heads, hd)
    if cfg["model_type"] == "qwen3":  # per-head RMSNorm before RoPE
        q = rms_norm(q, w[p + "q_norm.weight"], cfg["rms_norm_eps"])
        k = rms_norm(k, w[p + "k_norm.weight"], cfg["rms_norm_eps"])
    q = q * cos[:, None, :] + rotate_half(q) * sin[:, None, :]
    k = k * cos[:, None, :] + rotate_half(k) * sin[:, None, :]
    groups = heads // kv_heads
    k = np.repeat(k, groups, axis=1)  # repeat_kv: q head i uses kv head i // groups
    v = np.repeat(v, groups, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
    scores = scores + np.triu(np.full((n, n), -np.inf), 1)[None]
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
    out = np.einsum("hqk,khd->qhd", probs, v).reshape(n, heads * hd)
    out = out @ w[p + "o_proj.weight"].T
    if cfg["model_type"] != "qwen2" and cfg.get("attention_bias", False):
        out = out + w[p + "o_proj.bias"]
    return out


def forward(cfg, w, ids):
    """Logits [len(ids), vocab] in float64 for the token ids at positions 0..n-1."""
    eps = cfg["rms_norm_eps"]
    heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    hd = cfg.get("head_dim") or hidden // heads
    pos = np.arange(len(ids), dtype=np.float64)
    freqs = pos[:, None] * rope_inv_freq(cfg, hd)[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    x = w["model.embed_tokens.weight"][np.asarray(ids)]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        x = x + attention(cfg, w, p + "self_attn.", h, cos, sin)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    h = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight")
    if head is None:
        head = w["model.embed_tokens.weight"]
    return h @ head.T


def greedy(cfg, w, ids, n):
    """n greedy tokens after ids (recomputes the whole prefix each time: it is a reference)."""
    seq, out = list(ids), []
    for _ in range(n):
        out.append(int(np.argmax(forward(cfg, w, seq)[-1])))
        seq.append(out[-1])
    return out
