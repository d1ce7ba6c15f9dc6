"""gpu_decode.py — decode tokens/s of our engine (build/bench/decode's JSON, one per model)
beside the roofline and beside transformers' generate on the same model, in the same run
(gpu_suite.sh section 3).

  * roofline: batch x (device memory bandwidth / weight bytes read per step), the bandwidth
    measured here with a large device-to-device copy through torch (bytes read + written,
    median of 10 after warm-up); the KV cache's reads are left out, so it is an upper bound.
  * transformers: from_pretrained(dtype=bfloat16, device_map='cuda'), greedy generate with
    the decode bench's prompt length and new tokens at each batch, torch.cuda.synchronize
    around each call, median of 3; the 1-token generate (prefill) is timed too and subtracted,
    so both sides count decode steps only.

  * quantized GGUF files (--quantized LABEL=FILE, decode-LABEL.json): the roofline of the
    bytes they read per step, from the file's own tensor table (every tensor, less the
    embedding table when the file has a separate output head); no transformers run (it does
    not read GGUF here). Reported beside the same preset's bf16 figure, with no target yet.

Targets: batch-1 decode >= 70% of the roofline for 4b and 8b; >= 5x transformers' tokens/s.

  python3 bench/gpu_decode.py --decode-dir D --model 0.6b=DIR --model 4b=DIR
      [--quantized 4b-q4_k_m=FILE.gguf] [--deadline-s N] [--no-torch] [--json FILE]
      [--summary FILE]

--deadline-s bounds the whole run: a transformers measurement that would not fit is skipped
with a "skipped (time)" line. --no-torch (or no torch) prints our figures alone.
"""
import argparse
import json
import os
import statistics
import struct
import sys
import time

T0 = time.monotonic()
ROOFLINE_TARGET = 0.70
HF_TARGET = 5.0


def log(*args):
    print(*args, flush=True)


def left(args):
    return args.deadline_s - (time.monotonic() - T0)


def measure_bandwidth(torch):
    """Device-to-device copy of 2 GiB: (read + written) bytes / median time."""
    n = 1 << 30  # bf16 elements: 2 GiB per buffer
    src = torch.randn(n, device="cuda", dtype=torch.float32).to(torch.bfloat16)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(10):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    bytes_moved = 2 * src.numel() * src.element_size()
    del src, dst
    torch.cuda.empty_cache()
    return bytes_moved / statistics.median(times)


# ggml type id -> (elements, bytes) per block, for the types a GGUF of ours may hold
GGML_BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
               8: (32, 34), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
               14: (256, 210), 30: (1, 2)}
GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_tensor_bytes(path):
    """{tensor name: payload bytes} from a GGUF file's header (v2 and v3)."""
    with open(path, "rb") as f:
        def read(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))

        def string():
            (n,) = read("Q")
            return f.read(n)

        def skip(vtype):
            if vtype == 8:
                string()
            elif vtype == 9:
                etype, count = read("IQ")
                if etype == 8:
                    for _ in range(count):
                        string()
                else:
                    f.seek(GGUF_SCALAR[etype] * count, os.SEEK_CUR)
            else:
                f.seek(GGUF_SCALAR[vtype], os.SEEK_CUR)

        magic, version = read("4sI")
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path}: not a GGUF v2/v3 file")
        n_tensors, n_kv = read("QQ")
        for _ in range(n_kv):
            string()
            skip(read("I")[0])
        sizes = {}
        for _ in range(n_tensors):
            name = string().decode()
            (ndim,) = read("I")
            dims = read("Q" * ndim)
            ttype, _offset = read("IQ")
            elems, block = GGML_BLOCKS[ttype]
            count = 1
            for d in dims:
                count *= d
            sizes[name] = count // elems * block
        return sizes


def gguf_bytes_per_step(path):
    """Bytes a decode step reads: every tensor, less the embedding table when the head is its
    own tensor (then only the prompt's rows of the table are gathered)."""
    sizes = gguf_tensor_bytes(path)
    total = sum(sizes.values())
    if "output.weight" in sizes:
        total -= sizes.get("token_embd.weight", 0)
    return total


def load_hf(torch, path):
    import transformers

    def load(**kw):
        auto = transformers.AutoModelForCausalLM
        try:
            return auto.from_pretrained(path, dtype=torch.bfloat16, **kw)
        except TypeError:  # transformers before 4.56 names it torch_dtype
            return auto.from_pretrained(path, torch_dtype=torch.bfloat16, **kw)

    try:
        model = load(device_map="cuda")
    except (ImportError, ValueError) as e:
        # transformers 4 wants accelerate for any device_map: load, then move
        if "ccelerate" not in str(e):
            raise
        log("   transformers: no device_map without accelerate; loading, then .to('cuda')")
        model = load().to("cuda")
    return model.eval()


def time_generate(torch, model, batch, prompt, new_tokens, vocab, repeat):
    g = torch.Generator(device="cpu").manual_seed(batch)
    ids = torch.randint(0, vocab, (batch, prompt), generator=g).to("cuda")
    mask = torch.ones_like(ids)

    def once(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        torch.cuda.synchronize()
        assert out.shape[1] == prompt + n, out.shape
        return time.perf_counter() - t

    once(2)  # warm-up: kernels, cuBLAS handles, caches
    full = statistics.median(once(new_tokens) for _ in range(repeat))
    prefill = statistics.median(once(1) for _ in range(repeat))
    return batch * (new_tokens - 1) / max(full - prefill, 1e-9), full, prefill


def hf_figures(args, torch, preset, path, ours):
    """{batch: tokens/s} of transformers' generate; skipped (time) entries are absent."""
    out = {}
    with open(os.path.join(path, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    gb = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path)) / 1e9
    need = 10 + 2.5 * gb  # load from page cache + first kernels, seconds (rough)
    if left(args) < need:
        log(f"decode {preset}: transformers generate skipped (time: {left(args):.0f}s left, "
            f"~{need:.0f}s needed to load)")
        return out, "skipped (time)"
    t = time.monotonic()
    model = load_hf(torch, path)
    log(f"   transformers loaded {preset} in {time.monotonic() - t:.1f}s")
    try:
        for row in ours["figures"]:
            if row["phase"] != "decode":
                continue
            batch = row["batch"]
            est = 3 * 2 * args.tokens * 0.05 + 5  # 3 x 2 calls at <= 50 ms a step, + warm-up
            if left(args) < est:
                log(f"decode {preset} b{batch}: transformers skipped (time)")
                continue
            tok_s, full, prefill = time_generate(torch, model, batch, args.prompt, args.tokens,
                                                 vocab, args.repeat)
            out[batch] = tok_s
            log(f"   transformers {preset} batch {batch}: {tok_s:.1f} tok/s (generate "
                f"{args.tokens} tokens {full:.3f}s, 1 token {prefill:.3f}s)")
    finally:
        del model
        torch.cuda.empty_cache()
    return out, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--decode-dir", required=True, help="folder with decode-PRESET.json")
    ap.add_argument("--model", action="append", default=[], help="PRESET=MODEL_DIR")
    ap.add_argument("--quantized", action="append", default=[],
                    help="LABEL=FILE.gguf (decode-LABEL.json; LABEL starts with the preset)")
    ap.add_argument("--prompt", type=int, default=16, help="the decode bench's --decode-prompt")
    ap.add_argument("--tokens", type=int, default=64, help="the decode bench's --tokens")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--deadline-s", type=float, default=300)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--summary")
    args = ap.parse_args()
    models = [m.split("=", 1) for m in args.model]

    torch, bandwidth, why_no_torch = None, None, "--no-torch"
    if not args.no_torch:
        try:
            import torch
            assert torch.cuda.is_available(), "torch sees no CUDA device"
            bandwidth = measure_bandwidth(torch)
            log(f"device memory bandwidth (D2D copy, read + written): {bandwidth / 1e9:.0f} GB/s")
        except Exception as e:
            torch, why_no_torch = None, f"{type(e).__name__}: {e}"
            log(f"decode: no torch measurements ({why_no_torch})")

    rows, lines, failed = [], [], False
    for preset, path in models:
        try:
            with open(os.path.join(args.decode_dir, f"decode-{preset}.json")) as f:
                ours = json.load(f)
        except (OSError, ValueError) as e:
            lines.append(f"decode {preset}: FAIL (no decode bench result: {e})")
            failed = True
            continue
        hf, hf_note = {}, None
        if torch is not None:
            try:
                hf, hf_note = hf_figures(args, torch, preset, path, ours)
            except Exception as e:
                hf_note = f"transformers failed: {type(e).__name__}: {str(e)[:200]}"
                log(f"decode {preset}: {hf_note}")
        wbytes = ours["weight_bytes_per_step"]
        verdicts = []
        if ours.get("backend") != "cuda":
            verdicts.append(f"FAIL (the decode bench ran on backend '{ours.get('backend')}', "
                            "not cuda)")
        greedy_b1 = next((r["tokens_per_s"] for r in ours["figures"]
                          if r["phase"] == "decode" and r["batch"] == 1), None)
        for row in ours["figures"]:
            if row["phase"] == "decode_sampled" and greedy_b1:
                verdicts.append(f"b{row['batch']} sampled (T 0.8, top-k 50, top-p 0.9, "
                                f"penalty 1.1; picks on the GPU) {row['tokens_per_s']:.1f} "
                                f"tok/s, {100 * row['tokens_per_s'] / greedy_b1:.0f}% of greedy")
            if row["phase"] != "decode":
                continue
            b, tok_s = row["batch"], row["tokens_per_s"]
            roof = b * bandwidth / wbytes if bandwidth else None
            r = {"model": preset, "batch": b, "ours_tok_s": tok_s, "roofline_tok_s": roof,
                 "hf_tok_s": hf.get(b), "weight_bytes_per_step": wbytes}
            rows.append(r)
            if b == 1 and preset in ("4b", "8b"):
                if roof:
                    ok = tok_s >= ROOFLINE_TARGET * roof
                    verdicts.append(f"b1 {100 * tok_s / roof:.0f}% of roofline "
                                    f"{'PASS' if ok else 'FAIL'}")
                else:
                    verdicts.append("roofline not measured")
            if hf.get(b):
                ratio = tok_s / hf[b]
                verdicts.append(f"b{b} {ratio:.1f}x transformers "
                                f"{'PASS' if ratio >= HF_TARGET else 'FAIL'}")
        unfused = unfused_b1(args.decode_dir, preset)
        if unfused and greedy_b1:
            verdicts.append(f"b1 with RMSNorm as its own kernel {unfused:.1f} tok/s (the fused "
                            f"default is {100 * greedy_b1 / unfused:.0f}% of it)")
        if torch is None:
            verdicts.append(f"transformers not measured ({why_no_torch})")
        elif hf_note:
            verdicts.append(f"transformers {hf_note}")
        lines.append(f"decode {preset}: " + "; ".join(verdicts))

    for label, path in (q.split("=", 1) for q in args.quantized):
        failed = quantized_rows(args, label, path, bandwidth, rows, lines) or failed

    print_table(rows, bandwidth)
    for line in lines:
        log(line)
        failed = failed or "FAIL" in line
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bandwidth_bps": bandwidth, "rows": rows, "verdicts": lines}, f, indent=2)
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(table_text(rows, bandwidth) + "".join(s + "\n" for s in lines))
    return 1 if failed else 0


def decode_b1(decode_dir, label):
    """Batch-1 greedy tokens/s of decode-LABEL.json, or None."""
    try:
        with open(os.path.join(decode_dir, f"decode-{label}.json")) as f:
            figures = json.load(f)["figures"]
    except (OSError, ValueError, KeyError):
        return None
    return next((r["tokens_per_s"] for r in figures
                 if r["phase"] == "decode" and r["batch"] == 1), None)


def quantized_rows(args, label, path, bandwidth, rows, lines):
    """Rows and a verdict line for a quantized file's decode bench; True when it failed."""
    try:
        with open(os.path.join(args.decode_dir, f"decode-{label}.json")) as f:
            ours = json.load(f)
    except (OSError, ValueError) as e:
        lines.append(f"decode {label}: FAIL (no decode bench result: {e})")
        return True
    try:
        wbytes = gguf_bytes_per_step(path)
    except (OSError, ValueError, KeyError, struct.error) as e:
        wbytes = ours["weight_bytes_per_step"]
        log(f"decode {label}: {path}'s tensor table not read ({e}); bytes per step from the "
            "decode bench")
    verdicts = []
    if ours.get("backend") != "cuda":
        verdicts.append(f"FAIL (the decode bench ran on backend '{ours.get('backend')}', not "
                        "cuda)")
    for row in ours["figures"]:
        if row["phase"] != "decode":
            continue
        b, tok_s = row["batch"], row["tokens_per_s"]
        roof = b * bandwidth / wbytes if bandwidth else None
        rows.append({"model": label, "batch": b, "ours_tok_s": tok_s, "roofline_tok_s": roof,
                     "hf_tok_s": None, "weight_bytes_per_step": wbytes})
        if b == 1:
            verdicts.append(f"b1 {tok_s:.1f} tok/s, " +
                            (f"{100 * tok_s / roof:.0f}% of the roofline of its "
                             f"{wbytes / 1e9:.2f} GB per step" if roof else
                             "roofline not measured"))
            dense = decode_b1(args.decode_dir, label.split("-")[0])
            if dense:
                verdicts.append(f"{tok_s / dense:.2f}x the bf16 file's b1 ({dense:.1f} tok/s)")
    lines.append(f"decode {label}: " + "; ".join(verdicts))
    return any("FAIL" in v for v in verdicts)


def unfused_b1(decode_dir, preset):
    """Batch-1 greedy tokens/s of the NEXUS_CUDA_FUSE_NORM=0 run, or None when it did not run."""
    try:
        with open(os.path.join(decode_dir, f"decode-{preset}-unfused.json")) as f:
            figures = json.load(f)["figures"]
    except (OSError, ValueError, KeyError):
        return None
    return next((r["tokens_per_s"] for r in figures
                 if r["phase"] == "decode" and r["batch"] == 1), None)


def table_text(rows, bandwidth):
    f = lambda v: f"{v:.1f}" if v else "-"  # noqa: E731
    bw = f"{bandwidth / 1e9:.0f} GB/s" if bandwidth else "not measured"
    text = (f"\ndecode tokens/s (roofline: batch x bandwidth {bw} / weight bytes per step; "
            f"targets: b1 >= {ROOFLINE_TARGET:.0%} of roofline for 4b/8b, >= {HF_TARGET:g}x "
            "transformers)\n")
    text += f"{'model':<11} {'batch':>5} {'ours':>9} {'roofline':>9} {'%roof':>6} " \
            f"{'transf.':>9} {'x tf':>6}\n"
    for r in rows:
        pct = f"{100 * r['ours_tok_s'] / r['roofline_tok_s']:.0f}%" if r["roofline_tok_s"] else "-"
        x = f"{r['ours_tok_s'] / r['hf_tok_s']:.1f}x" if r["hf_tok_s"] else "-"
        text += (f"{r['model']:<11} {r['batch']:>5} {f(r['ours_tok_s']):>9} "
                 f"{f(r['roofline_tok_s']):>9} {pct:>6} {f(r['hf_tok_s']):>9} {x:>6}\n")
    return text


def print_table(rows, bandwidth):
    print(table_text(rows, bandwidth), end="", flush=True)


if __name__ == "__main__":
    sys.exit(main())
