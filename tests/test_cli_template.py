"""--template overrides the chat template that tokenizer_config.json selects, for both
`nexusctl tokenize` and `nexusctl run` (the same rendering and ids)."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")


def ctl(*args):
    return subprocess.run([NEXUSCTL, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def model():
    d = tempfile.mkdtemp(prefix="nx-template-")
    out = os.path.join(d, "qwen3")
    r = ctl("model", "synth", "--arch", "qwen3", "--preset", "tiny", "--out", out)
    assert r.returncode == 0, r.stderr
    yield out
    shutil.rmtree(d, ignore_errors=True)


def ids(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_auto_is_the_models_template(model):
    assert ids(ctl("tokenize", model, "hi", "--chat")) == ids(
        ctl("tokenize", model, "hi", "--template", "chatml"))


def test_override_changes_the_rendering(model):
    chatml = ids(ctl("tokenize", model, "hi", "--template", "chatml"))
    llama3 = ids(ctl("tokenize", model, "hi", "--template", "llama3"))
    raw = ids(ctl("tokenize", model, "hi", "--template", "raw"))
    assert raw == ids(ctl("tokenize", model, "hi"))
    assert len({tuple(chatml), tuple(llama3), tuple(raw)}) == 3


def test_run_uses_the_same_prompt(model):
    want = ids(ctl("tokenize", model, "hi", "--template", "llama3"))
    r = ctl("run", model, "hi", "--template", "llama3", "--max-tokens", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["timings"]["prompt_tokens"] == len(want)


@pytest.mark.parametrize("cmd", [["tokenize", "M", "hi"], ["run", "M", "hi"]])
def test_bad_template_is_a_usage_error(model, cmd):
    args = [model if a == "M" else a for a in cmd] + ["--template", "jinja"]
    r = ctl(*args)
    assert r.returncode == 2 and "--template" in r.stderr
