"""test_forward.py — the engine's forward pass against the numpy reference (ref_forward.py) on
tiny models of every variant: synthesized qwen3 (tied, head_dim != hidden/heads, q/k norm),
qwen2 (q/k/v biases), llama (untied, llama3 rope scaling) in f32, bf16 and f16, plus variants
written here: untied qwen3, llama with attention_bias (q/k/v/o biases), mistral without
head_dim and without GQA (kv heads == heads). Also batching: several sequences stepped
together (joining, chunked prefill, leaving) against each run alone."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import ref_forward as ref  # noqa: E402

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")
TOOL = os.path.join(BUILD, "tests", "tool_logits")

PROMPT = [656, 17, 300, 45, 120, 9, 600, 33, 250, 4, 77, 512]
GREEDY = 16
TOLERANCE = {"f32": 1e-4, "bf16": 1e-3, "f16": 1e-3}


@pytest.fixture(scope="module")
def models():
    root = tempfile.mkdtemp(prefix="nx-forward-test-")
    made = {}

    def get(name):
        if name not in made:
            made[name] = make_model(root, name, get)
        return made[name]

    yield get
    shutil.rmtree(root, ignore_errors=True)


def synth(root, arch, dtype):
    out = os.path.join(root, f"{arch}-{dtype}")
    r = subprocess.run([NEXUSCTL, "model", "synth", "--arch", arch, "--preset", "tiny",
                        "--dtype", dtype, "--out", out, "--seed", "7"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return out


def rewrite(src, dst, cfg_edit, tensor_edit):
    """A copy of model src with config.json and the tensors (f32) edited."""
    os.makedirs(dst)
    for name in os.listdir(src):
        if not name.endswith(".safetensors") and name != "config.json":
            shutil.copy(os.path.join(src, name), dst)
    cfg = ref.load_config(src)
    cfg_edit(cfg)
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)
    tensors = {k: v.astype(np.float32) for k, v in ref.load_weights(src).items()}
    tensor_edit(cfg, tensors, np.random.default_rng(11))
    ref.save_safetensors(os.path.join(dst, "model.safetensors"), tensors)
    return dst


def untie(cfg, t, rng):
    t["lm_head.weight"] = rng.normal(0, 0.05, t["model.embed_tokens.weight"].shape)


def add_biases(cfg, t, rng):
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            rows = t[p + name + ".weight"].shape[0]
            t[p + name + ".bias"] = rng.normal(0, 0.2, rows)


def no_gqa(cfg, t, rng):
    """kv heads == heads; k/v projections regrown, weights larger so greedy is not trivial."""
    heads, hd = cfg["num_attention_heads"], cfg["hidden_size"] // cfg["num_attention_heads"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        for name in ("k_proj", "v_proj"):
            t[p + name + ".weight"] = rng.normal(0, 0.15, (heads * hd, cfg["hidden_size"]))
        t[p + "q_proj.weight"] = t[p + "q_proj.weight"] * 8


def make_model(root, name, get):
    if name.count("-") == 1:
        arch, dtype = name.split("-")
        return synth(root, arch, dtype)
    dst = os.path.join(root, name)
    if name == "qwen3-untied-f32":
        return rewrite(get("qwen3-f32"), dst, lambda c: c.update(tie_word_embeddings=False),
                       untie)
    if name == "llama-bias-f32":
        return rewrite(get("llama-f32"), dst, lambda c: c.update(attention_bias=True),
                       add_biases)
    if name == "mistral-mha-f32":
        def edit(c):
            c.update(model_type="mistral", architectures=["MistralForCausalLM"],
                     num_key_value_heads=c["num_attention_heads"], rope_scaling=None,
                     rope_theta=10000.0, sliding_window=None)
            del c["head_dim"]  # hidden / heads
        return rewrite(get("llama-f32"), dst, edit, no_gqa)
    if name == "llama-tf5-f32":
        def edit(c):  # the same model as transformers 5 writes its config
            params = dict(c.pop("rope_scaling"), rope_theta=c.pop("rope_theta"))
            c["rope_parameters"] = params
        return rewrite(get("llama-f32"), dst, edit, lambda cfg, t, rng: None)
    raise AssertionError(name)


def run_tool(model, *args):
    r = subprocess.run([TOOL, model, *args], capture_output=True, text=True, timeout=120)
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


def engine_logits(model, ids, greedy, tmpdir, *extra):
    out = os.path.join(tmpdir, "logits.bin")
    r, res = run_tool(model, "--ids", ",".join(map(str, ids)), "--greedy", str(greedy),
                      "--out", out, *extra)
    assert r.returncode == 0, r.stderr
    rows = np.fromfile(out, dtype="<f4").reshape(res["rows"], res["vocab"])
    return rows, res


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


VARIANTS = ["qwen3-f32", "qwen2-f32", "llama-f32", "qwen3-untied-f32", "llama-bias-f32",
            "mistral-mha-f32", "llama-tf5-f32", "qwen3-bf16", "qwen2-bf16", "llama-bf16", "qwen3-f16",
            "qwen2-f16", "llama-f16"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_and_greedy_match_reference(models, variant, tmp_path):
    """Every position's logits (prompt and decode rows) within tolerance of the reference,
    and the 16 greedy tokens are the reference's: the reference's argmax at each row from the
    prompt's last on is the engine's token, so its own greedy loop would pick the same ones."""
    model = models(variant)
    got, res = engine_logits(model, PROMPT, GREEDY, str(tmp_path))
    assert res["backend"] == "cpu"
    tokens = res["greedy"]
    assert len(tokens) == GREEDY and got.shape[0] == len(PROMPT) + GREEDY - 1
    want = ref.forward(ref.load_config(model), ref.load_weights(model), PROMPT + tokens[:-1])
    assert rel_err(got, want) <= TOLERANCE[variant.split("-")[-1]], variant
    assert [int(t) for t in want[len(PROMPT) - 1:].argmax(axis=1)] == tokens


def test_reference_greedy_loop_agrees(models, tmp_path):
    """The reference's own greedy loop (re-running the prefix) gives the engine's tokens."""
    model = models("llama-f32")
    _, res = engine_logits(model, PROMPT[:5], 8, str(tmp_path))
    w, cfg = ref.load_weights(model), ref.load_config(model)
    assert ref.greedy(cfg, w, PROMPT[:5], 8) == res["greedy"]


def test_transformers5_rope_parameters_read_the_same(models, tmp_path):
    """rope_theta and the llama3 scaling under rope_parameters (transformers 5) give exactly
    the logits of the same model described the transformers 4 way."""
    old, _ = engine_logits(models("llama-f32"), PROMPT, 1, str(tmp_path))
    new, _ = engine_logits(models("llama-tf5-f32"), PROMPT, 1, str(tmp_path))
    assert np.array_equal(old, new)
    cfg = json.load(open(os.path.join(models("llama-tf5-f32"), "config.json")))
    assert "rope_theta" not in cfg and cfg["rope_parameters"]["rope_type"] == "llama3"


def test_variants_really_differ(models, tmp_path):
    """The hand-made variants change the numbers (so their tests test something)."""
    base, _ = engine_logits(models("llama-f32"), PROMPT, 1, str(tmp_path))
    biased, _ = engine_logits(models("llama-bias-f32"), PROMPT, 1, str(tmp_path))
    assert rel_err(biased, base) > 1e-2
    tied, _ = engine_logits(models("qwen3-f32"), PROMPT, 1, str(tmp_path))
    untied, _ = engine_logits(models("qwen3-untied-f32"), PROMPT, 1, str(tmp_path))
    assert rel_err(untied, tied) > 1e-1


@pytest.mark.parametrize("variant", ["qwen3-f32", "qwen2-bf16", "llama-f32", "mistral-mha-f32"])
def test_batched_steps_match_solo_runs(models, variant):
    """Four prompts of different lengths: joining one per step, two prefilling in two chunks,
    decoding together, leaving when done. Same tokens and (near) same logits as each alone,
    and the reference agrees with every batched continuation."""
    model = models(variant)
    prompts = [PROMPT, PROMPT[3:5], PROMPT[:9], [5]]
    args = []
    for p in prompts:
        args += ["--ids", ",".join(map(str, p))]
    r, res = run_tool(model, *args, "--greedy", "10", "--batch-check")
    assert r.returncode == 0, r.stderr + r.stdout
    check = res["batch_check"]
    assert check["tokens_match"] and check["max_rel_diff"] <= 1e-5
    assert check["sequences"] == 4 and check["greedy"][0] == res["greedy"]
    cfg, w = ref.load_config(model), ref.load_weights(model)
    for p, tokens in zip(prompts, check["greedy"]):
        want = ref.forward(cfg, w, p + tokens[:-1])
        assert [int(t) for t in want[len(p) - 1:].argmax(axis=1)] == tokens


def test_thread_count_does_not_change_logits(models, tmp_path):
    one, _ = engine_logits(models("qwen3-bf16"), PROMPT, 4, str(tmp_path), "--threads", "1")
    three, _ = engine_logits(models("qwen3-bf16"), PROMPT, 4, str(tmp_path), "--threads", "3")
    assert np.array_equal(one, three)


@pytest.mark.parametrize("variant", ["qwen3-bf16", "llama-f16"])
def test_plain_kernels_match_reference(models, variant, tmp_path):
    """The portable matmul (no AVX2) agrees with the reference too."""
    model = models(variant)
    out = os.path.join(str(tmp_path), "plain.bin")
    r = subprocess.run([TOOL, model, "--ids", ",".join(map(str, PROMPT)), "--out", out],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, NEXUS_CPU_KERNELS="plain"))
    assert r.returncode == 0, r.stderr
    got = np.fromfile(out, dtype="<f4").reshape(len(PROMPT), -1)
    want = ref.forward(ref.load_config(model), ref.load_weights(model), PROMPT)
    assert rel_err(got, want) <= TOLERANCE["f16"]


def test_tool_reports_engine_errors(models):
    r, _ = run_tool(models("qwen2-f32"), "--ids", "1,999999")
    assert r.returncode != 0 and "outside the vocabulary" in r.stderr


def test_unsupported_rope_type_is_named(models, tmp_path):
    dst = str(tmp_path / "yarn")
    rewrite(models("llama-f32"), dst,
            lambda c: c.update(rope_scaling=None, rope_parameters={"rope_type": "yarn",
                                                                    "rope_theta": 1e4}),
            lambda cfg, t, rng: None)
    r, _ = run_tool(dst, "--ids", "1,2")
    assert r.returncode != 0
    assert "rope_parameters.rope_type 'yarn' is not supported" in r.stderr
