"""test_run.py — 'nexusctl run' end to end on tiny synthesized models (qwen3, qwen2, llama):
greedy determinism, seeded sampling, --max-tokens, --prompt-ids against the tokenizer, --chat,
stop strings (in --json and in the streamed text), and the errors: bad values and unknown
options exit 2 naming the option, a prompt longer than the context and a missing model exit 1."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")
ARCHS = ["qwen3", "qwen2", "llama"]
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def models():
    root = tempfile.mkdtemp(prefix="nx-run-test-")
    paths = {}
    for arch in ARCHS:
        path = os.path.join(root, arch)
        r = subprocess.run([NEXUSCTL, "model", "synth", "--arch", arch, "--preset", "tiny",
                            "--out", path, "--seed", "11"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        paths[arch] = path
    yield paths
    shutil.rmtree(root, ignore_errors=True)


def run(*args, timeout=120):
    return subprocess.run([NEXUSCTL, "run", *args], capture_output=True, text=True,
                          timeout=timeout)


def run_json(model, *args):
    r = run(model, *args, "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # stdout holds exactly one object
    assert set(out) == {"ids", "text", "timings", "stop_reason"}
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_is_deterministic(models, arch):
    a = run_json(models[arch], PROMPT, "--max-tokens", "24")
    b = run_json(models[arch], PROMPT, "--max-tokens", "24")
    assert a["ids"] == b["ids"] and a["text"] == b["text"]
    assert a["ids"], "greedy produced nothing"
    t = a["timings"]
    assert set(t) == {"load_s", "prefill_s", "decode_s", "prefill_tok_s", "decode_tok_s",
                      "prompt_tokens", "generated_tokens"}
    assert t["generated_tokens"] == len(a["ids"]) and t["prompt_tokens"] > 0
    assert a["stop_reason"] in ("length", "eos")


@pytest.mark.parametrize("arch", ARCHS)
def test_seed_makes_sampling_reproducible(models, arch):
    args = [PROMPT, "--temperature", "1", "--max-tokens", "48"]
    a = run_json(models[arch], *args, "--seed", "1")
    b = run_json(models[arch], *args, "--seed", "1")
    c = run_json(models[arch], *args, "--seed", "2")
    assert a["ids"] == b["ids"]
    assert a["ids"] != c["ids"]


def test_max_tokens_is_honoured(models):
    for n in (1, 5, 13):
        out = run_json(models["qwen3"], PROMPT, "--max-tokens", str(n), "--temperature", "1",
                       "--seed", "5")
        assert len(out["ids"]) <= n
        if out["stop_reason"] == "length":
            assert len(out["ids"]) == n


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_ids_equal_tokenized_text(models, arch):
    tok = subprocess.run([NEXUSCTL, "tokenize", models[arch], PROMPT], capture_output=True,
                         text=True, timeout=60)
    assert tok.returncode == 0, tok.stderr
    ids = json.loads(tok.stdout)
    by_text = run_json(models[arch], PROMPT, "--max-tokens", "16")
    by_ids = run_json(models[arch], "--prompt-ids", ",".join(map(str, ids)),
                      "--max-tokens", "16")
    assert by_ids["timings"]["prompt_tokens"] == len(ids)
    assert by_ids["ids"] == by_text["ids"]


@pytest.mark.parametrize("arch", ARCHS)
def test_chat(models, arch):
    plain = run_json(models[arch], PROMPT, "--max-tokens", "8")
    chat = run_json(models[arch], PROMPT, "--chat", "--system", "Be brief.", "--max-tokens",
                    "8")
    assert chat["timings"]["prompt_tokens"] > plain["timings"]["prompt_tokens"] + 4
    if arch == "qwen3":
        think = run_json(models[arch], PROMPT, "--chat", "--max-tokens", "8")
        no_think = run_json(models[arch], PROMPT, "--chat", "--no-think", "--max-tokens", "8")
        assert no_think["timings"]["prompt_tokens"] > think["timings"]["prompt_tokens"]


def pick_stop(text):
    """A stop string from the middle of a greedy text: 3 characters without U+FFFD."""
    for start in range(4, len(text) - 3):
        cand = text[start:start + 3]
        if "\ufffd" not in cand and cand.strip():
            return cand
    return None


@pytest.mark.parametrize("arch", ARCHS)
def test_stop_string_cuts_the_text(models, arch):
    full = run_json(models[arch], PROMPT, "--max-tokens", "40")
    stop = pick_stop(full["text"])
    assert stop, "greedy text too short for a stop string: %r" % full["text"]
    cut = run_json(models[arch], PROMPT, "--max-tokens", "40", "--stop", stop, "--stop", "zzzq")
    assert cut["stop_reason"] == "stop"
    assert cut["text"] == full["text"][:full["text"].find(stop)]
    assert cut["ids"] == full["ids"][:len(cut["ids"])]
    # The streamed text (stdout, then one newline) is the same text, never a partial stop.
    r = run(models[arch], PROMPT, "--max-tokens", "40", "--stop", stop, "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == cut["text"] + "\n"
    assert "decode" in r.stderr and "stop: stop" in r.stderr


def test_streamed_text_equals_json_text(models):
    out = run_json(models["llama"], PROMPT, "--max-tokens", "30", "--temperature", "0.8",
                   "--seed", "9")
    r = run(models["llama"], PROMPT, "--max-tokens", "30", "--temperature", "0.8", "--seed",
            "9")
    assert r.returncode == 0, r.stderr
    assert r.stdout == out["text"] + "\n"


@pytest.mark.parametrize("args,option", [
    (["--temperature", "-1"], "--temperature"),
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"),
    (["--min-p", "1"], "--min-p"),
    (["--repetition-penalty", "0"], "--repetition-penalty"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--top-k", "x"], "--top-k"),
    (["--stop", ""], "--stop"),
    (["--prompt-ids", "1,,2"], "--prompt-ids"),
    (["--bogus"], "--bogus"),
])
def test_bad_values_exit_2_naming_the_option(models, args, option):
    prompt = [] if option == "--prompt-ids" else [PROMPT]
    r = run(models["qwen3"], *prompt, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert option in r.stderr
    assert r.stdout == ""


def test_bad_values_are_checked_before_loading():
    r = run("/nonexistent/model", PROMPT, "--temperature", "-1")
    assert r.returncode == 2 and "--temperature" in r.stderr


def test_prompt_longer_than_context_exits_1(models):
    r = run(models["qwen2"], PROMPT + " jumps over the lazy dog", "--context", "4")
    assert r.returncode == 1
    assert "context of 4" in r.stderr and "tokens" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # a log line at most, then the message


def test_missing_model_dir_exits_1():
    r = run("/nonexistent/model-dir", PROMPT)
    assert r.returncode == 1
    assert "/nonexistent/model-dir" in r.stderr
    assert r.stdout == ""
