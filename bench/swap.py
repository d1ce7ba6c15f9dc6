"""swap.py — residency under pressure: 100 agents over 20 models of three sizes (12 tiny ones
from `nexusctl model synth`, 5 medium and 3 large Qwen3-shaped ones written here with random
weights) in a pool that holds about a third of them, Zipf-distributed tasks (the same
sequence for both runs), through a real nexusd started once with --policy cost and once with
--policy lru. Prints per policy: time to first token p50/p99 (client side, send -> first
token), loads (swaps in) and the bytes they moved, and the wall time.

With --quant TYPE every model is first written as one GGUF file by `nexusctl model quantize
--type TYPE` (q8_0, q4_0, q4_k_m, ...) and the agents name those files: the daemon's status
then counts the quantized bytes, and the pool is scaled by the same ratio as the weights
(quantized bytes / BF16 bytes) so it still holds about a third of them.

  NEXUS_BUILD=build /usr/bin/python3 bench/swap.py [--tasks 1000] [--window 4] [--quant TYPE]
"""
import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import daemon_util as du  # noqa: E402

SIZES = [("tiny", None)] * 12 + [("medium", (256, 4))] * 5 + [("large", (512, 6))] * 3


def write_safetensors(path, tensors):
    """Plain safetensors, BF16, data section 4 KiB aligned (header padded with spaces)."""
    header, offset, blobs = {}, 0, []
    for name, arr in tensors:
        raw = (arr.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((-(len(text) + 8)) % 4096)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)


def qwen3_model(out, template, hidden, layers, seed):
    """A Qwen3-shaped checkpoint with the tiny model's tokenizer and bigger shapes."""
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(template):
        if name != "model.safetensors" and name != "config.json":
            shutil.copy(os.path.join(template, name), out)
    with open(os.path.join(template, "config.json")) as f:
        cfg = json.load(f)
    head_dim, heads = 32, hidden // 32
    kv = max(1, heads // 2)
    cfg.update(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
               max_window_layers=layers)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.standard_normal(shape, dtype=np.float32) * 0.02  # noqa: E731
    ones = lambda n: np.ones(n, dtype=np.float32)  # noqa: E731
    t = [("model.embed_tokens.weight", w(cfg["vocab_size"], hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", ones(hidden)),
              (p + "self_attn.q_proj.weight", w(heads * head_dim, hidden)),
              (p + "self_attn.k_proj.weight", w(kv * head_dim, hidden)),
              (p + "self_attn.v_proj.weight", w(kv * head_dim, hidden)),
              (p + "self_attn.o_proj.weight", w(hidden, heads * head_dim)),
              (p + "self_attn.q_norm.weight", ones(head_dim)),
              (p + "self_attn.k_norm.weight", ones(head_dim)),
              (p + "post_attention_layernorm.weight", ones(hidden)),
              (p + "mlp.gate_proj.weight", w(2 * hidden, hidden)),
              (p + "mlp.up_proj.weight", w(2 * hidden, hidden)),
              (p + "mlp.down_proj.weight", w(hidden, 2 * hidden))]
    t.append(("model.norm.weight", ones(hidden)))
    write_safetensors(os.path.join(out, "model.safetensors"), t)


def make_models(root):
    models = {}
    for i, (kind, shape) in enumerate(SIZES):
        name = f"m{i:02d}-{kind}"
        path = os.path.join(root, name)
        if kind == "tiny":
            r = subprocess.run([du.NEXUSCTL, "model", "synth", "--arch", "qwen3", "--preset",
                                "tiny", "--seed", str(100 + i), "--out", path],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
        else:
            qwen3_model(path, models["m00-tiny"], *shape, seed=200 + i)
        models[name] = path
    return models


def dir_bytes(path, chunk=2 << 20):
    """A model's weight file bytes rounded up to the pool's chunks (the CPU backend's 2 MiB),
    as residency holds them."""
    if os.path.isfile(path):
        n = os.path.getsize(path)
    else:
        n = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
                if f.endswith(".safetensors"))
    return -(-n // chunk) * chunk


def quantize_models(models, qtype):
    """Each model folder to one GGUF file of type qtype; returns the new map (the agents name
    the files, '<name>.gguf', in the models folder)."""
    out = {}
    for name, path in models.items():
        gguf = path + "." + qtype + ".gguf"
        r = subprocess.run([du.NEXUSCTL, "model", "quantize", path, gguf, "--type", qtype],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"quantize {path}: {r.stderr}"
        out[name + ".gguf"] = gguf
    return out


def task_sequence(n_tasks, n_agents, seed=7, s=1.1):
    rng = random.Random(seed)
    ranks = list(range(n_agents))
    rng.shuffle(ranks)  # popularity is independent of the model's size
    weights = [1.0 / (ranks[a] + 1) ** s for a in range(n_agents)]
    return rng.choices(range(n_agents), weights=weights, k=n_tasks)


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]


def run_policy(policy, models, agents, sequence, window, pool_mib):
    d = du.Daemon(agents, models=models, conf={"pool": f"{pool_mib}MiB", "host_cache": "32MiB",
                                               "context": 256, "max_batch": 4})
    try:
        d.start(extra_args=("--policy", policy))
        ttft, first = [], {}
        t0 = time.monotonic()
        with d.client() as c:
            pending, it = {}, iter(enumerate(sequence))
            done = 0
            while done < len(sequence):
                while len(pending) < window:
                    nxt = next(it, None)
                    if nxt is None:
                        break
                    _, a = nxt
                    rid = c.send({"op": "task", "agent": f"a{a:03d}", "input": "hello",
                                  "stream": True})
                    pending[rid] = time.monotonic()
                r = c.recv(120)
                rid = r["id"]
                if r["op"] == "token" and rid not in first:
                    first[rid] = time.monotonic()
                    ttft.append((first[rid] - pending[rid]) * 1000)
                elif r["op"] in ("result", "error"):
                    assert r["op"] == "result", r
                    del pending[rid]
                    done += 1
            wall = time.monotonic() - t0
            status = c.call({"op": "status"})
        loads = sum(m["loads"] for m in status["models"])
        moved = sum(m["loads"] * m["bytes"] for m in status["models"])
        d.stop()
        return {"policy": policy, "ttft_p50": pct(ttft, 0.5), "ttft_p99": pct(ttft, 0.99),
                "loads": loads, "moved_mb": moved / 1e6, "wall_s": wall,
                "pool_mb": status["pool"]["total_bytes"] / 1e6,
                "weights_mb": sum(m["bytes"] for m in status["models"]) / 1e6}
    finally:
        d.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--quant", metavar="TYPE",
                    help="quantize every model to one GGUF file of this type first")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="nx-bench-swap-")
    try:
        models = make_models(root)
        pool_mib = 48
        if args.quant:
            bf16 = sum(dir_bytes(p) for p in models.values())
            models = quantize_models(models, args.quant)
            quant = sum(dir_bytes(p) for p in models.values())
            pool_mib = max(8, round(48 * quant / bf16))
            print(f"swap: models quantized to {args.quant} GGUF: {quant / 1e6:.1f} MB of files "
                  f"for {bf16 / 1e6:.1f} MB of BF16 safetensors (each rounded to 2 MiB chunks) ({quant / bf16:.2f}x), "
                  f"pool {pool_mib} MiB instead of 48")
        names = sorted(models)
        agents = [du.agent(f"a{i:03d}", names[i % len(names)],
                           generation={"max_tokens": 4}, limits={"queue": 1000})
                  for i in range(100)]
        sequence = task_sequence(args.tasks, len(agents))
        print(f"swap: {len(agents)} agents on {len(models)} models "
              f"(12 tiny, 5 medium 256x4, 3 large 512x6), {args.tasks} Zipf(1.1) tasks, "
              f"{args.window} in flight, max_tokens 4")
        results = [run_policy(p, models, agents, sequence, args.window, pool_mib)
                   for p in ("cost", "lru")]
        r0 = results[0]
        print(f"pool {r0['pool_mb']:.0f} MB for {r0['weights_mb']:.0f} MB of weights "
              f"(chunk-rounded), host cache 33.6 MB")
        for r in results:
            print(f"{r['policy']:>5}: ttft p50 {r['ttft_p50']:7.2f} ms  p99 {r['ttft_p99']:7.2f} ms"
                  f"  loads {r['loads']:4d}  moved {r['moved_mb']:8.1f} MB  wall {r['wall_s']:.1f} s")
        c, l = results
        print(f"cost vs lru: loads {c['loads'] / max(1, l['loads']):.2f}x, bytes "
              f"{c['moved_mb'] / max(1e-9, l['moved_mb']):.2f}x, ttft p99 "
              f"{c['ttft_p99'] / max(1e-9, l['ttft_p99']):.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
