"""gpu_correctness.py — our engine's logits and greedy tokens against transformers' on small
random Qwen3 and Llama models that transformers itself builds and saves (gpu_suite.sh section 2).

For each architecture: a Qwen3ForCausalLM (GQA, head_dim != hidden/heads, tied embeddings) or a
LlamaForCausalLM (GQA, llama3 rope scaling, untied), bfloat16, fixed seed, written with
save_pretrained (safetensors) next to the tokenizer of `nexusctl model synth --preset tiny`
(nexusctl run needs one; the ids are given directly). Then, per device (cuda, cpu):
  * our logits (tests/tool_logits: the prompt, then GREEDY tokens one step at a time) against
    transformers' on the same ids in float32 upcast from the same bf16 weights (TF32 off):
    max|ours - ref| / max|ref| per position, target < 1e-2;
  * greedy: at every step, transformers' argmax on the same prefix equals our next token
    (so the 32-token continuations are identical), reported with the first divergence and the
    reference's top-2 margin there;
  * the CUDA backend's greedy tokens equal the CPU backend's.
transformers' own bf16 forward is measured against the same float32 reference for scale.

tool_logits runs on the CPU pool unless it takes --device (probed); without it the CUDA logits
are not measured and the CUDA greedy tokens come from `nexusctl run --device cuda --json
--prompt-ids`.

  python3 bench/gpu_correctness.py --bin .bundle --work /tmp/x --json out.json
  python3 bench/gpu_correctness.py --bin build --reference numpy --devices cpu   # no torch:
      synthesized tiny models against tests/ref_forward.py (checks this script's plumbing)

Prints one verdict line per architecture and device starting with "correctness"; exit 1 when a
verdict failed or a step broke, 0 when all passed.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-2
PROMPT_LEN = 12


def log(*args):
    print(*args, flush=True)


def child_env():
    """Our binaries get the bundle's libraries (and cuBLAS); Python keeps its own."""
    env = dict(os.environ)
    if os.environ.get("NEXUS_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["NEXUS_LD_LIBRARY_PATH"]
    return env


def run(cmd, timeout, check=True):
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env())
    log(f"   $ {' '.join(cmd)}  -> exit {r.returncode} in {time.monotonic() - t0:.1f}s")
    if check and r.returncode != 0:
        raise RuntimeError(f"{os.path.basename(cmd[0])} exited {r.returncode}: "
                           f"{(r.stderr or r.stdout).strip()[-400:]}")
    return r


# ---- references ----------------------------------------------------------------------------

class HFReference:
    """A random model built and saved by transformers; logits in float32 on the GPU."""

    def __init__(self, device):
        import torch
        import transformers
        self.torch, self.tf, self.device = torch, transformers, device
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.version = "transformers " + transformers.__version__

    def _config(self, arch, vocab):
        tf = self.tf
        common = dict(vocab_size=vocab, hidden_size=256, num_hidden_layers=4,
                      num_key_value_heads=2, rms_norm_eps=1e-6, bos_token_id=None,
                      eos_token_id=None, pad_token_id=None, initializer_range=0.08)
        if arch == "qwen3":
            cls = tf.Qwen3Config
            kw = dict(intermediate_size=768, num_attention_heads=4, head_dim=96,
                      max_position_embeddings=4096, tie_word_embeddings=True)
            rope = {"rope_type": "default", "rope_theta": 1000000.0}
        else:
            cls = tf.LlamaConfig
            kw = dict(intermediate_size=640, num_attention_heads=8,
                      max_position_embeddings=131072, tie_word_embeddings=False)
            rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192}
        import inspect
        if "rope_parameters" in inspect.signature(cls.__init__).parameters:  # transformers 5
            kw["rope_parameters"] = rope
        else:
            kw["rope_theta"] = rope["rope_theta"]
            if rope["rope_type"] != "default":
                kw["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        return cls(**common, **kw)

    def make(self, arch, out, vocab):
        torch = self.torch
        torch.manual_seed(1234 if arch == "qwen3" else 4321)
        cfg = self._config(arch, vocab)
        try:
            model = self.tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        except TypeError:  # transformers 4 names it torch_dtype
            model = self.tf.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
        model.save_pretrained(out)
        self.model_bf16 = model.to(self.device).eval()
        self.model_f32 = None
        log(f"   {self.version}: {type(model).__name__} saved to {out}: "
            f"{sorted(os.listdir(out))}")
        return out

    def logits(self, ids):
        """Rows of float32 logits for ids, upcast from the saved bf16 weights."""
        import copy
        torch = self.torch
        if self.model_f32 is None:
            self.model_f32 = copy.deepcopy(self.model_bf16).float()
        x = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            return self.model_f32(input_ids=x).logits[0].double().cpu().numpy()

    def logits_bf16(self, ids):
        torch = self.torch
        x = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            return self.model_bf16(input_ids=x).logits[0].double().cpu().numpy()


class NumpyReference:
    """No torch: a synthesized tiny model against tests/ref_forward.py (plumbing check)."""

    def __init__(self, nexusctl):
        sys.path.insert(0, os.path.join(HERE, "..", "tests"))
        import ref_forward
        self.ref, self.nexusctl, self.version = ref_forward, nexusctl, "numpy reference"

    def make(self, arch, out, vocab):
        run([self.nexusctl, "model", "synth", "--arch", arch, "--preset", "tiny", "--seed", "5",
             "--out", out], 120)
        self.cfg, self.w = self.ref.load_config(out), self.ref.load_weights(out)
        return out

    def logits(self, ids):
        return self.ref.forward(self.cfg, self.w, list(ids))

    logits_bf16 = None


# ---- ours ----------------------------------------------------------------------------------

def tool_takes_device(tool, model_dir):
    r = run([tool, model_dir, "--ids", "1", "--greedy", "1", "--device", "cpu", "--out",
             os.devnull], 120, check=False)
    return r.returncode == 0


def ours_tool(tool, model_dir, ids, greedy, out, device, with_device):
    cmd = [tool, model_dir, "--ids", ",".join(map(str, ids)), "--greedy", str(greedy),
           "--out", out]
    if with_device:
        cmd += ["--device", device]
    r = run(cmd, 300)
    meta = json.loads(r.stdout)
    logits = np.fromfile(out, dtype="<f4").reshape(meta["rows"], meta["vocab"])
    return logits.astype(np.float64), list(meta["greedy"])


def ours_run(nexusctl, model_dir, ids, greedy, device):
    r = run([nexusctl, "run", model_dir, "--prompt-ids", ",".join(map(str, ids)), "--max-tokens",
             str(greedy), "--device", device, "--json", "--context", "256"], 300)
    return list(json.loads(r.stdout)["ids"])


# ---- comparison ----------------------------------------------------------------------------

def rel_errors(ours, ref):
    """max|a-b| / max|b| per row."""
    return np.abs(ours - ref).max(axis=1) / np.maximum(np.abs(ref).max(axis=1), 1e-30)


def greedy_check(ref_logits, prompt, greedy):
    """Does the reference's argmax after each prefix equal our next token? -> (matches,
    first divergence step or None, the reference's top-2 margin there)."""
    rows = ref_logits[len(prompt) - 1:]
    matches, first, margin = 0, None, None
    for step, tok in enumerate(greedy):
        if step >= len(rows):
            break
        row = rows[step]
        if int(np.argmax(row)) == tok:
            matches += 1
        elif first is None:
            first = step
            top2 = np.sort(row)[-2:]
            margin = float(top2[1] - top2[0])
    return matches, first, margin


def fmt_greedy(n, matches, first, margin):
    if matches == n and first is None:
        return f"greedy {matches}/{n} equal PASS"
    return (f"greedy {matches}/{n} equal FAIL (first difference at step {first}; reference "
            f"top-2 margin there {margin:.3g})")


def check_arch(args, ref, arch, work, summary):
    model_dir = os.path.join(work, f"{arch}-model")
    shutil.rmtree(model_dir, ignore_errors=True)
    tok_dir = os.path.join(work, "tok-template")
    if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        shutil.rmtree(tok_dir, ignore_errors=True)
        run([args.nexusctl, "model", "synth", "--arch", "qwen3", "--preset", "tiny", "--out",
             tok_dir], 120)
    with open(os.path.join(tok_dir, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    with open(os.path.join(tok_dir, "tokenizer.json")) as f:
        tok_size = len(json.load(f)["model"]["vocab"])
    ref.make(arch, model_dir, vocab)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not os.path.exists(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(tok_dir, name), model_dir)
    result = {"arch": arch, "reference": ref.version, "devices": {}}

    rng = np.random.default_rng(7 if arch == "qwen3" else 11)
    prompt = [int(x) for x in rng.integers(0, min(vocab, tok_size), PROMPT_LEN)]
    # transformers 5 writes rope_parameters (rope_theta and the llama3 scaling inside) where
    # transformers 4 wrote rope_theta and rope_scaling; our config reader knows the latter. Say
    # what it makes of the file as written, then add the old keys so the numbers compare.
    with open(os.path.join(model_dir, "config.json")) as f:
        saved = json.load(f)
    rp = saved.get("rope_parameters")
    if isinstance(rp, dict) and ("rope_theta" not in saved or (
            rp.get("rope_type", "default") != "default" and not saved.get("rope_scaling"))):
        r = run([args.tool, model_dir, "--ids", "1", "--greedy", "1", "--out", os.devnull], 120,
                check=False)
        how = ("refused (" + (r.stderr or r.stdout).strip().splitlines()[-1][-200:] + ")"
               if r.returncode != 0 else "accepted, but its rope_parameters are not read")
        note = (f"correctness {arch}: NOTE config.json as {ref.version} wrote it (rope_parameters) "
                f"is {how}; compared with rope_theta/rope_scaling added")
        summary.append(note)
        log(note)
        legacy_config(model_dir)
    r = run([args.tool, model_dir, "--ids", "1", "--greedy", "1", "--out", os.devnull], 120,
            check=False)
    if r.returncode != 0:
        raise RuntimeError(f"tool_logits cannot run the model: {(r.stderr or r.stdout)[-400:]}")
    with_device = tool_takes_device(args.tool, model_dir)
    if not with_device:
        log("   tool_logits takes no --device: CUDA greedy through nexusctl run, no CUDA logits")
    result["tool_has_device"] = with_device

    greedy_ids = {}
    for device in args.devices:
        d = {}
        try:
            if device == "cpu" or with_device:
                ours, greedy = ours_tool(args.tool, model_dir, prompt, args.greedy,
                                         os.path.join(work, f"{arch}-{device}.f32"), device,
                                         with_device)
                ref_logits = ref.logits(prompt + greedy[:-1])
                err = rel_errors(ours, ref_logits)
                d.update(rel_err_max=float(err.max()), rel_err_median=float(np.median(err)),
                         rows=int(len(err)))
                logit_line = (f"logits rel err max {err.max():.2e} median {np.median(err):.2e} "
                              f"over {len(err)} positions (target < {TOLERANCE:g}) "
                              f"{'PASS' if err.max() < TOLERANCE else 'FAIL'}")
            else:
                greedy = ours_run(args.nexusctl, model_dir, prompt, args.greedy, device)
                ref_logits = ref.logits(prompt + greedy[:-1])
                logit_line = "logits not measured (tool_logits has no --device)"
                d["rel_err_max"] = None
            matches, first, margin = greedy_check(ref_logits, prompt, greedy)
            ok_len = len(greedy) == args.greedy
            d.update(greedy=greedy, greedy_matches=matches, first_difference=first,
                     margin=margin)
            greedy_ids[device] = greedy
            line = (f"correctness {arch} {device}: {logit_line}; "
                    f"{fmt_greedy(args.greedy, matches, first, margin)} vs {ref.version}"
                    + ("" if ok_len else f" (only {len(greedy)} tokens came back) FAIL"))
            d["pass"] = ("FAIL" not in line)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError, OSError) as e:
            line = f"correctness {arch} {device}: FAIL ({e})"
            d.update(error=str(e), **{"pass": False})
        summary.append(line)
        log(line)
        result["devices"][device] = d

    if "cuda" in greedy_ids and "cpu" in greedy_ids:
        same = greedy_ids["cuda"] == greedy_ids["cpu"]
        n = sum(a == b for a, b in zip(greedy_ids["cuda"], greedy_ids["cpu"]))
        line = (f"correctness {arch}: cuda greedy = cpu greedy {n}/{args.greedy} "
                f"{'PASS' if same else 'FAIL'}")
        result["cuda_equals_cpu"] = same
        summary.append(line)
        log(line)
    if ref.logits_bf16 and greedy_ids:
        ids = prompt + next(iter(greedy_ids.values()))[:-1]
        err = rel_errors(ref.logits_bf16(ids), ref.logits(ids))
        line = (f"correctness {arch}: (scale) transformers' own bf16 forward vs its float32: "
                f"rel err max {err.max():.2e}")
        result["hf_bf16_rel_err_max"] = float(err.max())
        summary.append(line)
        log(line)
    return result


def legacy_config(model_dir):
    """Add rope_theta and rope_scaling (transformers 4 names) from rope_parameters."""
    path = os.path.join(model_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    shutil.copy(path, os.path.join(model_dir, "config.as-saved.json"))
    rp = cfg.get("rope_parameters") or {}
    cfg.setdefault("rope_theta", rp.get("rope_theta", 10000.0))
    if rp.get("rope_type", "default") != "default" and not cfg.get("rope_scaling"):
        cfg["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=".bundle", help="folder with nexusctl and tests/tool_logits")
    ap.add_argument("--work", default="/tmp/nexus-gpu-correctness")
    ap.add_argument("--json")
    ap.add_argument("--archs", default="qwen3,llama")
    ap.add_argument("--devices", default="cuda,cpu")
    ap.add_argument("--greedy", type=int, default=32)
    ap.add_argument("--reference", choices=("hf", "numpy"), default="hf")
    ap.add_argument("--summary", help="append the verdict lines to this file")
    args = ap.parse_args()
    args.nexusctl = os.path.join(args.bin, "nexusctl")
    args.tool = os.path.join(args.bin, "tests", "tool_logits")
    args.devices = args.devices.split(",")
    for path in (args.nexusctl, args.tool):
        if not os.access(path, os.X_OK):
            log(f"correctness: FAIL ({path} is missing)")
            return 1
    os.makedirs(args.work, exist_ok=True)
    summary, results, broken = [], [], False
    try:
        ref = HFReference("cuda") if args.reference == "hf" else NumpyReference(args.nexusctl)
    except Exception as e:  # torch or transformers missing or broken: say so and stop
        summary.append(f"correctness: FAIL (no reference: {type(e).__name__}: {e})")
        ref, broken = None, True
    for arch in args.archs.split(",") if ref else []:
        log(f"-- {arch}")
        try:
            results.append(check_arch(args, ref, arch, args.work, summary))
        except Exception as e:  # one architecture's breakage must not hide the other's
            summary.append(f"correctness {arch}: FAIL ({type(e).__name__}: {e})")
            log(summary[-1])
            broken = True
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.summary:
        with open(args.summary, "a") as f:
            f.write("".join(s + "\n" for s in summary))
    failed = broken or any("FAIL" in s for s in summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
