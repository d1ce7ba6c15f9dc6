"""test_daemon_tools.py — tool calls over ZeroMQ against one real nexusd: a tiny random Qwen3
model with the real Qwen3 tokenizer (tests/fixtures/tokenizer/qwen3: its template writes
<tool_call>, so the family is hermes), temperature 1, so only the tools' grammar makes the calls
valid. Each tool_choice (auto, none, required, a named function) and parallel_tool_calls
true/false: calls parse, name one of the tools, and their arguments validate under
python3-jsonschema (and ajv where node and .tools/ajv are installed); streamed events
reassemble to the result's calls; a tool-result turn (no new input) renders and answers; a
refused tool schema, tools on a model with no tool format and a tool_choice naming no tool are
bad_request."""
import json
import re
import os
import shutil
import subprocess
import warnings

import jsonschema
import pytest

import daemon_util as du

HERE = os.path.dirname(os.path.abspath(__file__))
AJV_TOOL = os.path.join(HERE, "tools", "ajv_validate.mjs")

WEATHER = {"type": "object",
           "properties": {"city": {"enum": ["Paris", "Oslo", "Lima"]},
                          "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ADD = {"type": "object",
       "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9},
                      "b": {"type": "integer", "minimum": 0, "maximum": 9}},
       "required": ["a", "b"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather",
                                      "parameters": WEATHER, "strict": True}},
    {"type": "function", "function": {"name": "add", "description": "Adds two digits",
                                      "parameters": ADD}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
HOT = {"temperature": 1.0, "max_tokens": 120, "thinking": False}


@pytest.fixture(scope="module")
def daemon():
    models = {**du.tiny_models(), "tt": du.tool_model()}
    agents = [du.agent("caller", "tt", chat_template="auto", generation=HOT),
              du.agent("plain", "tq", generation=HOT),  # a raw template: no tool format
              # agents as tools: boss may call helper and typed_in (both take JSON: a random
              # model never ends the unbounded string of the default {input: string})
              du.agent("boss", "tt", chat_template="auto", generation=HOT,
                       tools=["helper", "typed_in"], limits={"tool_steps": 2}),
              du.agent("helper", "tq", description="Answers a question",
                       input_schema={"type": "object", "properties": {"input": {
                           "type": "string", "maxLength": 6}}, "required": ["input"],
                           "additionalProperties": False},
                       generation={"max_tokens": 4}),
              du.agent("typed_in", "tq", description="Takes a city",
                       input_schema={"type": "object", "properties": {"city": {
                           "enum": ["Oslo", "Lima"]}}, "required": ["city"],
                           "additionalProperties": False},
                       generation={"max_tokens": 4})]
    with du.running(agents, conf={"pool": "256MiB", "context": 1024}, models=models) as d:
        yield d


def run(c, fields, timeout=120):
    """Send one task; (events in order, final reply)."""
    rid = c.send({"op": "task", **fields})
    events = []
    while True:
        r = c.recv(timeout)
        if r.get("id") != rid:
            continue
        if r["op"] in ("result", "error"):
            return events, r
        events.append(r)


def ajv_check(pairs):
    """ajv's verdict on (schema, arguments text) pairs; skipped (with a warning) without node
    or ajv."""
    if not pairs or not shutil.which("node"):
        return
    lines = "".join(json.dumps({"schema": s, "instance": json.loads(t)}) + "\n"
                    for s, t in pairs)
    proc = subprocess.run(["node", AJV_TOOL], input=lines, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode == 3:
        warnings.warn(f"ajv: skipped: {proc.stderr.strip()}")
        return
    assert proc.returncode == 0, proc.stderr
    for line, pair in zip(proc.stdout.splitlines(), pairs):
        assert json.loads(line) == {"valid": True}, (line, pair)


def check_calls(result, names=None):
    """The result's calls are well formed and valid; returns them (possibly [])."""
    assert result["op"] == "result", result
    calls = result.get("tool_calls", [])
    cut = result["stop_reason"] == "length"
    assert result["finish_reason"] == ("length" if cut else "tool_calls" if calls else
                                       "stop"), result
    pairs = []
    for k, call in enumerate(calls):
        assert call["type"] == "function" and call["id"].startswith("call_"), call
        name = call["function"]["name"]
        assert name in (names or SCHEMAS), call
        if cut and k == len(calls) - 1:
            continue  # max_tokens may have cut the last call's arguments
        jsonschema.Draft202012Validator(SCHEMAS[name]).validate(
            json.loads(call["function"]["arguments"]))
        pairs.append((SCHEMAS[name], call["function"]["arguments"]))
    assert "<tool_call>" not in result["output"], result
    return calls, pairs


def task(seed, choice=None, parallel=None, **extra):
    t = {"agent": "caller", "input": f"what is the weather, or 2+3? ({seed})",
         "tools": TOOLS, "params": {"seed": seed}, **extra}
    if choice is not None:
        t["tool_choice"] = choice
    if parallel is not None:
        t["parallel_tool_calls"] = parallel
    return t


NAMED = {"type": "function", "function": {"name": "add"}}


@pytest.mark.parametrize("parallel", [True, False])
def test_each_tool_choice(daemon, parallel):
    choices = [None, "auto", "none", "required", NAMED]
    with daemon.client() as c:
        requests = [task(s, ch, parallel) for ch in choices for s in range(4)]
        results = c.batch(requests, timeout=180)
    pairs = []
    for i, r in enumerate(results):
        choice = choices[i // 4]
        calls, p = check_calls(r, ["add"] if choice == NAMED else None)
        pairs += p
        if choice == "none":
            assert calls == [] and r["finish_reason"] != "tool_calls", r
        if choice in ("required", NAMED):
            assert calls or r["stop_reason"] == "length", r
            assert calls, r  # 120 tokens hold a call of these tools
        if choice == NAMED:
            assert all(c["function"]["name"] == "add" for c in calls), r
        if not parallel:
            assert len(calls) <= 1, r
            if choice in ("required", NAMED):
                assert len(calls) == 1, r
        ids = [c["id"] for c in calls]
        assert len(set(ids)) == len(ids)
    ajv_check(pairs)


def test_streamed_events_reassemble_to_the_result(daemon):
    with daemon.client() as c:
        for seed in range(4):
            events, result = run(c, task(seed, "required", True, stream=True))
            calls, _ = check_calls(result)
            assert calls
            content, built = "", {}
            for e in events:
                if e["op"] == "token":
                    content += e["text"]
                elif e["op"] == "tool_call":
                    if "call_id" in e:
                        assert e["index"] not in built
                        built[e["index"]] = {"id": e["call_id"], "type": "function",
                                             "function": {"name": e["name"],
                                                          "arguments": e["arguments"]}}
                    else:
                        built[e["index"]]["function"]["arguments"] += e["arguments"]
            assert content == result["output"]
            assert [built[i] for i in sorted(built)][:len(calls)] == calls


def test_tool_result_turn_answers(daemon):
    history = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather",
                          "arguments": json.dumps({"city": "Paris", "unit": "c"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
         "content": "21 degrees, sunny"},
    ]
    with daemon.client() as c:
        events, r = run(c, {"agent": "caller", "history": history, "tools": TOOLS,
                            "tool_choice": "none", "params": {"seed": 3, "max_tokens": 16}})
        assert r["op"] == "result", r
        assert r["finish_reason"] in ("stop", "length") and "tool_calls" not in r
        # the prompt held the call and its result: more tokens than without them
        _, _, bare = c.task("caller", "weather in Paris?", tools=TOOLS, tool_choice="none",
                            params={"seed": 3, "max_tokens": 16})
        assert r["usage"]["prompt_tokens"] > bare["usage"]["prompt_tokens"] + 10
        # no input and no trailing tool turn: refused
        _, bad = run(c, {"agent": "caller", "history": history[:2]})
        assert bad["op"] == "error" and bad["code"] == "bad_request"
        assert "input" in bad["message"]


def test_refusals(daemon):
    bad_tools = [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {
            "x": {"type": "object", "patternProperties": {"a": {}}}}}}}]
    with daemon.client() as c:
        _, r = run(c, {"agent": "caller", "input": "x", "tools": bad_tools})
        assert r["op"] == "error" and r["code"] == "bad_request", r
        assert "tools[0].function.parameters" in r["message"], r
        assert "patternProperties" in r["message"] and "/properties/x" in r["message"], r
        _, r = run(c, {"agent": "plain", "input": "x", "tools": TOOLS})
        assert r["op"] == "error" and r["code"] == "bad_request", r
        assert "tool" in r["message"] and "format" in r["message"], r
        _, r = run(c, {"agent": "caller", "input": "x", "tools": TOOLS,
                       "tool_choice": {"type": "function", "function": {"name": "nope"}}})
        assert r["op"] == "error" and r["code"] == "bad_request", r
        assert "nope" in r["message"], r
        _, r = run(c, {"agent": "caller", "input": "x", "tools": TOOLS,
                       "schema": {"type": "object"}})
        assert r["op"] == "error" and r["code"] == "bad_request", r
        _, r = run(c, {"agent": "caller", "input": "x", "tool_choice": "auto"})
        assert r["op"] == "error" and r["code"] == "bad_request", r
        assert "tool_choice" in r["message"], r
        # and it serves on
        calls, _ = check_calls(run(c, task(1, "required"))[1])
        assert calls


def test_agents_as_tools(daemon):
    """boss lists helper and typed_in under tools: a required first round calls them; each call
    runs as a child task (its row's parent is boss's row) on the call's arguments (typed_in's
    JSON, helper's "input"), their answers go back as tool turns and boss answers, in the one
    task the client sees; limits.tool_steps 2 caps the rounds (the last one cannot call)."""
    with daemon.client() as c:
        for seed in range(3):
            events, r = run(c, {"agent": "boss", "input": "ask your helpers", "stream": True,
                                "tool_choice": "required", "params": {"seed": seed}})
            assert r["op"] == "result", r
            assert 1 <= r["tool_rounds"] <= 2, r
            assert r["finish_reason"] in ("stop", "length") and "tool_calls" not in r, r
            streamed = [e for e in events if e["op"] == "tool_call" and "call_id" in e]
            assert streamed and all(e["agent"] is True for e in streamed), events
            assert {e["name"] for e in streamed} <= {"helper", "typed_in"}
            rows = c.call({"op": "tasks", "limit": 100})["tasks"]
            children = [row for row in rows if row.get("parent") == r["task"]]
            assert len(children) == len(streamed), (children, streamed)
            for row in children:
                assert row["agent"] in ("helper", "typed_in") and row["status"] == "done", row
                if row["agent"] == "typed_in":
                    assert json.loads(row["input"])["city"] in ("Oslo", "Lima"), row
                else:
                    assert len(json.loads(row["input"])["input"]) <= 6, row
            # the stream's content is the final answer's
            tokens = [e for e in events if e["op"] == "token"]
            content = "".join(e["text"] for e in tokens)
            assert content == r["output"]
            # usage counts every round: each call took at least 3 tokens (its opener, its
            # JSON, its closer), beside the final answer's pieces
            calls = [e for e in streamed if e["name"]]
            assert r["usage"]["completion_tokens"] >= len(tokens) + 3 * len(calls), (r, len(tokens))


def test_check_refuses_bad_tools_entries():
    cases = [(["nobody"], "no agent has that name"), (["a1"], "cannot call itself"),
             (["a2"], "loop back")]
    for tools, why in cases:
        d = du.Daemon([du.agent("a1", "tq", tools=tools), du.agent("a2", "tq", tools=["a1"])])
        try:
            r = subprocess.run([du.NEXUSD, "--config", d.config, "--check"],
                               capture_output=True, text=True, timeout=30)
            path = os.path.join(d.home, "agents", "a1.yaml")
            assert r.returncode == 1, r.stdout + r.stderr
            assert re.search(re.escape(path) + r":\d+:\d+: field 'tools\[0\]'", r.stderr), \
                r.stderr
            assert why in r.stderr, r.stderr
        finally:
            d.close()
