"""test_tools_template.py — tool-call prompts rendered by nx_chat_render (agents/chat.c,
through build/tests/tool_tokenize) byte for byte against Qwen3's own chat template
(tests/fixtures/tokenizer/qwen3/tokenizer_config.json, which has the tools branches) rendered
by python3-jinja2 with tojson as transformers defines it (json.dumps, ensure_ascii=False):
the tools list in the system turn, assistant tool_calls, grouped tool results, thinking kept
after the last real query, and json.dumps's number and string forms in tool definitions."""
import gzip
import json
import os
import shutil
import subprocess
import tempfile

import pytest

jinja2 = pytest.importorskip("jinja2")
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
TOOL = os.path.join(BUILD, "tests", "tool_tokenize")
QWEN3 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tokenizer",
                     "qwen3")


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """transformers' tojson filter for chat templates."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def reference(template, case):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    kw = {"messages": case["messages"], "add_generation_prompt": case["add_generation_prompt"]}
    if case.get("tools"):
        kw["tools"] = case["tools"]
    if case["thinking"] == 0:
        kw["enable_thinking"] = False
    return env.from_string(template).render(**kw)


@pytest.fixture(scope="module")
def qwen3():
    tmp = tempfile.mkdtemp(prefix="nx-tools-template-")
    with gzip.open(os.path.join(QWEN3, "tokenizer.json.gz"), "rb") as f_in, \
            open(os.path.join(tmp, "tokenizer.json"), "wb") as f_out:
        shutil.copyfileobj(f_in, f_out)
    shutil.copy(os.path.join(QWEN3, "tokenizer_config.json"), tmp)
    with open(os.path.join(QWEN3, "tokenizer_config.json"), encoding="utf-8") as f:
        template = json.load(f)["chat_template"]
    yield tmp, template
    shutil.rmtree(tmp, ignore_errors=True)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city, \"now\" — in °C\nor °F",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "城市 / ville"},
        "unit": {"enum": ["c", "f"], "default": "c"},
        "days": {"type": "integer", "minimum": 1, "maximum": 1e3},
        "ratio": {"type": "number", "minimum": 0.5, "maximum": 1e-7,
                  "multipleOf": 1e20, "x": 100.0, "y": -0.0001, "z": 123456789.125},
        "tags": {"type": "array", "items": {}, "prefixItems": []},
        "ok": {"type": "boolean", "const": True}, "nothing": None},
        "required": ["city"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}


def call(cid, name, args):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


CASES = [
    # tools, with and without a system message, thinking default and off
    {"tools": [WEATHER, ADD], "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Weather in Paris?"}],
     "add_generation_prompt": True, "thinking": -1},
    {"tools": [ADD], "messages": [{"role": "user", "content": "1+2?"}],
     "add_generation_prompt": True, "thinking": 0},
    # a tool loop: calls, grouped results, the answer; thinking after the last real query
    {"tools": [WEATHER, ADD], "messages": [
        {"role": "user", "content": "Weather in Paris and 1+2?"},
        {"role": "assistant", "content": "", "reasoning_content": "\nTwo calls.\n",
         "tool_calls": [call("call_1", "get_weather", "{\"city\":\"Paris\"}"),
                        call("call_2", "add", "{\"a\": 1, \"b\": 2}")]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_2", "name": "add", "content": "3"},
        {"role": "assistant", "content": "<think>\nDone.\n</think>\n\nIt is 18 C; 1+2=3."},
        {"role": "user", "content": "Thanks. And Rome?"},
        {"role": "assistant", "content": "Let me check.",
         "tool_calls": [call("call_3", "get_weather", "{\"city\":\"Rome\"}")]},
        {"role": "tool", "tool_call_id": "call_3", "content": "{\"temp\": 21}"}],
     "add_generation_prompt": True, "thinking": -1},
    # thinking kept for the turns after the last real query: reasoning_content, and a
    # <think> block inside content
    {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "\n\nChecking.", "reasoning_content": "\nNeed a city.\n\n",
         "tool_calls": [call("c1", "get_weather", "{\"city\":\"Oslo\"}")]},
        {"role": "tool", "content": "-3 C"},
        {"role": "assistant", "content": "<think>\nCold.\n</think>\n\nIt is -3 C.",
         "tool_calls": [call("c2", "get_weather", "{\"city\":\"Bergen\"}")]},
        {"role": "tool", "content": "2 C"}],
     "add_generation_prompt": True, "thinking": -1},
    # the last message is the assistant's (no generation prompt); calls without content
    {"tools": [ADD], "messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": "",
         "tool_calls": [call("c", "add", "{}")]}],
     "add_generation_prompt": False, "thinking": -1},
    # no tools offered, but a history with calls and results
    {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "",
         "tool_calls": [call("c", "add", "{\"a\":1}")]},
        {"role": "tool", "content": "1"},
        {"role": "user", "content": "<tool_response>\nx\n</tool_response>"},
        {"role": "assistant", "content": "ok"}],
     "add_generation_prompt": True, "thinking": -1},
]


def test_qwen3_tool_prompts_match_the_template(qwen3):
    model, template = qwen3
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False,
                                     encoding="utf-8") as f:
        json.dump(CASES, f, ensure_ascii=False)
    try:
        r = subprocess.run([TOOL, "chat", model, f.name], capture_output=True, text=True,
                           timeout=120)
    finally:
        os.unlink(f.name)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(got) == len(CASES)
    for i, (case, g) in enumerate(zip(CASES, got)):
        want = reference(template, case)
        assert g.get("text") == want, (i, g.get("error"))
