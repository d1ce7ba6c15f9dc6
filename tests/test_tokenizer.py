"""test_tokenizer.py — the tokenizer, streaming detokenizer and chat templates against the
committed reference fixtures (tests/fixtures/tokenizer, written by
tests/tools/gen_tokenizer_fixtures.sh from the JavaScript reference): every corpus case with
Qwen3's and Llama 3's real tokenizers and the synthesized tiny qwen2/llama ones, chat
renderings from each model's own template, `nexusctl tokenize` and its errors."""
import gzip
import json
import os
import shutil
import subprocess
import tempfile
import unicodedata

import pytest

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")
TOOL = os.path.join(BUILD, "tests", "tool_tokenize")
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tokenizer")
TOKENIZERS = ["qwen3", "llama3", "qwen2_tiny", "llama_tiny"]
NFC = {"qwen3": True, "llama3": False, "qwen2_tiny": True, "llama_tiny": False}


def load_json(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


CORPUS = load_json("corpus.json")


@pytest.fixture(scope="module")
def models():
    """Model directories: the gzipped real tokenizers unpacked into a temporary directory."""
    tmp = tempfile.mkdtemp(prefix="nx-tok-test-")
    dirs = {}
    for name in TOKENIZERS:
        src = os.path.join(FIXTURES, name)
        if os.path.exists(os.path.join(src, "tokenizer.json")):
            dirs[name] = src
            continue
        dst = os.path.join(tmp, name)
        os.makedirs(dst)
        with gzip.open(os.path.join(src, "tokenizer.json.gz"), "rb") as f_in, \
                open(os.path.join(dst, "tokenizer.json"), "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)
        shutil.copy(os.path.join(src, "tokenizer_config.json"), dst)
        dirs[name] = dst
    yield dirs
    shutil.rmtree(tmp, ignore_errors=True)


def run_tool(*args):
    r = subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def tokenize(*args, **kw):
    return subprocess.run([NEXUSCTL, "tokenize", *args], capture_output=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def encoded(models):
    return {name: run_tool("encode", models[name], os.path.join(FIXTURES, "corpus.json"))
            for name in TOKENIZERS}


@pytest.mark.parametrize("name", TOKENIZERS)
def test_corpus_matches_reference(name, encoded):
    expected = load_json(f"{name}_expected.json")["cases"]
    got = encoded[name]
    assert len(expected) == len(CORPUS) == len(got)
    bad = [f"case {i} {text!r}:\n  expected {exp}\n  actual   {res.get('ids', res.get('error'))}"
           for i, (text, exp, res) in enumerate(zip(CORPUS, expected, got))
           if res.get("ids") != exp]
    assert not bad, f"{len(bad)} of {len(CORPUS)} cases differ:\n" + "\n".join(bad[:10])


@pytest.mark.parametrize("name", TOKENIZERS)
def test_decode_and_stream_reconstruct_text(name, encoded):
    for text, res in zip(CORPUS, encoded[name]):
        want = unicodedata.normalize("NFC", text) if NFC[name] else text
        assert res["decoded"] == want, text
        # each piece is whole characters (the tool rejects invalid UTF-8 pieces)
        assert "error" not in res, (text, res)
        assert "".join(res["pieces"]) + res["flushed"] == want, text
        assert res["flushed"] == ""


@pytest.mark.parametrize("name", ["qwen3", "llama3"])
def test_stream_holds_partial_characters(name, encoded):
    """Emoji and CJK split across byte tokens: some pushes must emit nothing (a partial
    character held back) and a later one the whole character."""
    held = []
    for text in ["😀😃😄", "👨‍👩‍👧‍👦 family ZWJ", "𠀀𠀁 CJK ext B", "ภาษาไทยไม่มีช่องว่าง"]:
        res = encoded[name][CORPUS.index(text)]
        assert len(res["ids"]) == len(res["pieces"])
        assert "".join(res["pieces"]) == text
        if "" in res["pieces"]:
            held.append(text)
    assert "𠀀𠀁 CJK ext B" in held and len(held) >= 2, held


def test_chat_matches_templates(models):
    cases = load_json("chat_expected.json")["cases"]
    assert {c["tokenizer"] for c in cases} == set(TOKENIZERS)
    for name in TOKENIZERS:
        mine = [c for c in cases if c["tokenizer"] == name]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(mine, f)
        try:
            got = run_tool("chat", models[name], f.name)
        finally:
            os.unlink(f.name)
        assert len(got) == len(mine)
        for c, g in zip(mine, got):
            if name == "llama3" and not c["add_generation_prompt"]:
                continue  # this Llama 3.0 template adds the assistant header unconditionally
            assert g.get("text") == c["text"], (name, c, g)
            assert g["ids"] == c["ids"], (name, c["text"])


def test_stop_ids(models):
    assert run_tool("stop", models["qwen3"])[0] == {"kind": "chatml", "ids": [151645, 151643]}
    # Llama 3.0's vocabulary has no <|eom_id|> (3.1 added it as 128008)
    assert run_tool("stop", models["llama3"])[0] == {"kind": "llama3", "ids": [128009, 128001]}
    assert run_tool("stop", models["qwen2_tiny"])[0] == {"kind": "chatml", "ids": [658, 656]}


def test_cli_tokenize(models):
    r = tokenize(models["qwen3"], "Hello world", text=True)
    assert r.returncode == 0, r.stderr
    expected = load_json("qwen3_expected.json")["cases"][CORPUS.index("Hello world")]
    assert json.loads(r.stdout) == expected and r.stdout.count("\n") == 1
    r = tokenize(models["qwen3"], "", text=True)
    assert (r.returncode, r.stdout) == (0, "[]\n")
    chat = next(c for c in load_json("chat_expected.json")["cases"]
                if c["tokenizer"] == "qwen3" and c["thinking"] == 0 and len(c["messages"]) == 2)
    r = tokenize(models["qwen3"], chat["messages"][1]["content"], "--chat", "--no-think",
                 "--system", chat["messages"][0]["content"], text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == chat["ids"]


def test_cli_invalid_utf8(models):
    r = tokenize(models["qwen3"].encode(), b"ab\xffc")
    assert r.returncode == 1 and b"byte offset 2" in r.stderr, r.stderr
    r = tokenize(models["qwen3"].encode(), b"abc\xe4\xbd")
    assert r.returncode == 1 and b"truncated" in r.stderr and b"offset 3" in r.stderr


@pytest.mark.parametrize("args,message", [
    ([], "usage"),
    (["DIR"], "usage"),
    (["DIR", "text", "--bogus"], "--bogus"),
    (["DIR", "text", "--no-think"], "--chat"),
    (["DIR", "text", "--chat", "--system"], "--system"),
    (["DIR", "a", "b"], "unexpected"),
])
def test_cli_usage_errors(args, message, models):
    r = tokenize(*[models["qwen2_tiny"] if a == "DIR" else a for a in args], text=True)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and r.stderr.count("\n") == 1


def write_tokenizer(tmp, mutate):
    with open(os.path.join(FIXTURES, "qwen2_tiny", "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    mutate(tok)
    with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f)


def set_path(tok, keys, value):
    for k in keys[:-1]:
        tok = tok[k]
    if value is KeyError:
        del tok[keys[-1]]
    else:
        tok[keys[-1]] = value


@pytest.mark.parametrize("keys,value,message", [
    (["model", "type"], "WordPiece", "model.type 'WordPiece' is not supported"),
    (["model", "vocab"], KeyError, "model.vocab is missing"),
    (["model", "merges"], KeyError, "model.merges is missing"),
    (["model", "merges", 0], "Ġ nosuchtoken", "model.merges[0]"),
    (["model", "merges", 1], "nospace", "model.merges[1] is neither"),
    (["model", "merges", 2], ["a"], "model.merges[2] is neither"),
    (["model", "byte_fallback"], True, "byte_fallback"),
    (["normalizer"], {"type": "NFKC"}, "normalizer type 'NFKC'"),
    (["pre_tokenizer"], {"type": "Metaspace"}, "pre_tokenizer type 'Metaspace'"),
    (["pre_tokenizer"], None, "pre_tokenizer is missing"),
    (["pre_tokenizer", "pretokenizers", 0, "behavior"], "Removed", "behavior 'Removed'"),
    (["pre_tokenizer", "pretokenizers", 0, "pattern", "Regex"], "(unclosed",
     "pattern does not compile"),
    (["decoder"], {"type": "WordPiece"}, "decoder type 'WordPiece'"),
    (["added_tokens", 0, "id"], "x", "added_tokens[0]"),
    (["model", "vocab", "a"], -3, "model.vocab['a']"),
])
def test_bad_tokenizer_json(keys, value, message):
    tmp = tempfile.mkdtemp(prefix="nx-tok-bad-")
    try:
        write_tokenizer(tmp, lambda tok: set_path(tok, keys, value))
        r = tokenize(tmp, "hello", text=True)
        assert r.returncode == 1, r.stderr
        assert message in r.stderr and "tokenizer.json" in r.stderr, r.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_missing_and_malformed_files():
    tmp = tempfile.mkdtemp(prefix="nx-tok-bad-")
    try:
        r = tokenize(tmp, "hello", text=True)
        assert r.returncode == 1 and "tokenizer.json': no such file" in r.stderr, r.stderr
        with open(os.path.join(tmp, "tokenizer.json"), "w") as f:
            f.write('{"model": {"vocab": {}, ')
        r = tokenize(tmp, "hello", text=True)
        assert r.returncode == 1 and "tokenizer.json' line 1" in r.stderr, r.stderr
        write_tokenizer(tmp, lambda tok: None)
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            f.write("[1, 2")
        r = tokenize(tmp, "hello", text=True)
        assert r.returncode == 1 and "tokenizer_config.json' line" in r.stderr, r.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
