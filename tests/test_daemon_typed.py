"""test_daemon_typed.py — typed agents over ZeroMQ against one real nexusd (tiny random models,
temperature 1, so only the grammar can make the answers valid): an agent's output_schema from
its YAML, a task's own `schema` / `response_format` / `grammar`, the refusals (a schema the
compiler refuses, a bad grammar, an input that breaks input_schema) as bad_request naming the
keyword and JSON pointer, and the daemon serving on after each. Answers are checked with
python3-jsonschema, and `value` against the text."""
import json
import re

import jsonschema
import pytest

import daemon_util as du

SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "tag": {"enum": ["red", "green", "blue"]},
    },
    "required": ["ok", "n", "tag"],
}
TASK_SCHEMA = {
    "type": "array",
    "items": {"type": "integer", "minimum": -5, "maximum": 5},
    "minItems": 1,
    "maxItems": 3,
}
INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "q": {"type": "string", "maxLength": 20},
        "k": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["q"],
}
HOT = {"temperature": 1.0, "max_tokens": 48}

AGENTS = [
    du.agent("typed", "tq", output_schema=SCHEMA, output_strict=True, generation=HOT),
    du.agent("typed_llama", "tl", output_schema=SCHEMA, output_strict=True, generation=HOT),
    du.agent("free", "tq", generation=HOT),
    du.agent("takes", "tq", input_schema=INPUT_SCHEMA, generation={"max_tokens": 4}),
    # a typed pipeline: producer's answers are always valid input for consumer ...
    du.agent("producer", "tq", next="consumer", generation=HOT, output_strict=True,
             output_schema={"type": "object", "properties": {"q": {"type": "string",
                                                                   "maxLength": 6}},
                            "required": ["q"]}),
    du.agent("consumer", "tl", input_schema=INPUT_SCHEMA, output_schema=TASK_SCHEMA,
             generation=HOT),
    # ... and never for this one, whose input needs "k" (a `next` so typed would stop
    # start-up, test_daemon_check.py; a request's route is refused when it comes)
    du.agent("mismatch", "tq", generation=HOT, output_strict=True,
             output_schema={"type": "object", "properties": {"q": {"const": "hi"}},
                            "required": ["q"]}),
    du.agent("needs_k", "tq", input_schema={**INPUT_SCHEMA, "required": ["q", "k"]}),
    # a typed stage whose max_tokens cannot hold its answer, before a stage that needs it
    du.agent("short", "tq", next="consumer", output_strict=True,
             generation={"temperature": 1.0, "max_tokens": 2},
             output_schema={"type": "object", "properties": {"q": {"type": "string",
                                                                   "minLength": 8, "maxLength": 12}},
                            "required": ["q"]}),
]
DIGEST = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def daemon():
    with du.running(AGENTS, conf={"pool": "256MiB"}) as d:  # room for tl on cuda (emu-test)
        yield d


def check_typed(result, schema):
    assert result["op"] == "result", result
    assert DIGEST.match(result["schema_digest"]), result
    if result["stop_reason"] == "length":
        assert "value" not in result
        return False
    value = json.loads(result["output"].strip())
    jsonschema.Draft202012Validator(schema).validate(value)
    assert result["value"] == value
    return True


def test_typed_agent_answers_valid_json_every_seed(daemon):
    with daemon.client() as c:
        requests = [{"agent": agent, "input": f"give me data {seed}",
                     "params": {"seed": seed}}
                    for seed in range(12) for agent in ("typed", "typed_llama")]
        results = c.batch(requests)
    complete = [check_typed(r, SCHEMA) for r in results]
    assert sum(complete) >= len(results) - 2, results  # 48 tokens hold this schema
    assert len({r["schema_digest"] for r in results}) == 1
    # strict: nothing beyond the listed properties
    assert all(set(r["value"]) == {"ok", "n", "tag"} for r in results if "value" in r)


def test_task_schema_overrides_and_response_format(daemon):
    rf = {"type": "json_schema",
          "json_schema": {"name": "pair", "schema": TASK_SCHEMA, "strict": True}}
    with daemon.client() as c:
        requests = ([{"agent": "free", "input": "numbers", "schema": TASK_SCHEMA,
                      "params": {"seed": s}} for s in range(6)] +
                    [{"agent": "typed", "input": "numbers", "response_format": rf,
                      "params": {"seed": s}} for s in range(6)])
        results = c.batch(requests)
        for r in results:
            assert check_typed(r, TASK_SCHEMA), r
            assert isinstance(r["value"], list)
        # the same schema is the same digest, whichever way it came; strict is part of it
        assert len({r["schema_digest"] for r in results[:6]}) == 1
        assert results[0]["schema_digest"] != results[6]["schema_digest"]
        _, _, plain = c.task("free", "no schema", params={"seed": 1})
        assert plain["op"] == "result" and "schema_digest" not in plain and "value" not in plain


def test_grammar_and_json_object(daemon):
    gbnf = 'root ::= "yes" | "no" | "maybe " [0-9]'
    with daemon.client() as c:
        results = c.batch([{"agent": "free", "input": "answer", "grammar": gbnf,
                            "params": {"seed": s}} for s in range(6)] +
                          [{"agent": "free", "input": "obj",
                            "response_format": {"type": "json_object"},
                            "params": {"seed": s, "max_tokens": 64}} for s in range(4)])
    for r in results[:6]:
        assert r["op"] == "result", r
        assert re.fullmatch(r"yes|no|maybe [0-9]", r["output"]), r["output"]
        assert "value" not in r and DIGEST.match(r["schema_digest"])
    for r in results[6:]:
        assert r["op"] == "result", r
        if r["stop_reason"] != "length":
            assert isinstance(r["value"], dict) and json.loads(r["output"]) == r["value"]


def test_refused_schemas_name_keyword_and_pointer(daemon):
    bad = {"type": "object", "properties": {"a": {"patternProperties": {"^x": {}}}}}
    with daemon.client() as c:
        _, _, r = c.task("free", "x", schema=bad)
        assert r["op"] == "error" and r["code"] == "bad_request", r
        assert "field 'schema'" in r["message"], r
        assert "unsupported keyword 'patternProperties' at /properties/a" in r["message"], r
        _, _, r = c.task("free", "x", response_format={
            "type": "json_schema", "json_schema": {"name": "n", "schema": {"minimum": "zero"}}})
        assert r["op"] == "error" and r["code"] == "bad_request", r
        assert "minimum" in r["message"], r
        _, _, r = c.task("free", "x", grammar='root ::= "a"\nitem ::= [a-z')
        assert r["op"] == "error" and r["code"] == "bad_request", r
        assert "field 'grammar'" in r["message"] and re.search(r"\d+:\d+", r["message"]), r
        _, _, r = c.task("free", "x", grammar="root ::= x", schema={"type": "string"})
        assert r["code"] == "bad_request" and "exclude each other" in r["message"], r
        _, _, r = c.task("free", "x", response_format={"type": "xml"})
        assert r["code"] == "bad_request" and "response_format.type" in r["message"], r
        # and it keeps serving
        assert c.call({"op": "ping"})["op"] == "pong"
        _, _, ok = c.task("free", "x", schema={"type": "boolean"})
        assert ok["op"] == "result" and ok["value"] in (True, False), ok


def test_input_schema(daemon):
    with daemon.client() as c:
        _, _, r = c.task("takes", "not json")
        assert r["code"] == "bad_request" and "field 'input'" in r["message"], r
        assert "not JSON" in r["message"], r
        _, _, r = c.task("takes", json.dumps({"k": [1, "two"], "q": "hi"}))
        assert r["code"] == "bad_request", r
        assert "/k/1" in r["message"], r
        _, _, r = c.task("takes", json.dumps({"k": [1]}))
        assert r["code"] == "bad_request" and "required" in r["message"], r
        _, _, r = c.task("takes", json.dumps({"q": "x" * 21}))
        assert r["code"] == "bad_request" and "/q" in r["message"], r
        # members in any order, nested values
        _, _, r = c.task("takes", json.dumps({"k": [3, -4], "q": "fine"}))
        assert r["op"] == "result", r
        _, _, r = c.task("takes", '{"q": "spaced"  ,  "k": [ ] }')
        assert r["op"] == "result", r


def test_typed_pipeline(daemon):
    with daemon.client() as c:
        results = c.batch([{"agent": "producer", "input": "go", "params": {"seed": s}}
                           for s in range(4)])
        for r in results:
            assert r["agent"] == "consumer", r
            assert check_typed(r, TASK_SCHEMA), r  # the last stage's schema
        # a route whose types cannot fit is refused when it comes, naming the entry and why
        r = c.call({"op": "task", "agent": "mismatch", "input": "go", "route": ["needs_k"]})
        assert r["op"] == "error" and r["code"] == "bad_request", r
        assert "route[0] 'needs_k'" in r["message"] and "may omit 'k'" in r["message"], r
        r = c.call({"op": "task", "agent": "free", "input": "go", "route": ["needs_k"]})
        assert r["op"] == "error" and r["code"] == "bad_request", r
        assert "'free' answers free text" in r["message"], r
        # a fitting route runs
        results = c.batch([{"agent": "producer", "input": "go", "route": ["consumer"],
                            "params": {"seed": 9}}])
        assert results[0]["agent"] == "consumer" and check_typed(results[0], TASK_SCHEMA)


def test_streamed_typed_answer(daemon):
    """Streaming a constrained answer: the pieces make the output, and the result carries the
    value and digest as without streaming."""
    with daemon.client() as c:
        _, tokens, r = c.task("typed", "stream it", stream=True, params={"seed": 5})
        _, _, same = c.task("typed", "stream it", params={"seed": 5})
    assert check_typed(r, SCHEMA), r
    assert "".join(t["text"] for t in tokens) == r["output"]
    assert r["output"] == same["output"] and r["value"] == same["value"]


def test_typed_stage_cut_by_max_tokens_stops_the_pipeline(daemon):
    """A typed stage cut by max_tokens has no complete answer to hand on: the pipeline ends
    there with `incomplete`, naming the agent and its token limit (not a JSON parse error from
    the next stage), and that stage's row says so."""
    with daemon.client() as c:
        _, _, r = c.task("short", "go")
        assert r["op"] == "error" and r["code"] == "incomplete", r
        assert "agent 'short'" in r["message"] and "after 2 tokens" in r["message"], r
        assert "'consumer'" in r["message"] and "max_tokens" in r["message"], r
        rows = c.call({"op": "tasks", "limit": 5})["tasks"]
        assert any(row["agent"] == "short" and row["status"] == "failed" and
                   row["error_code"] == "incomplete" for row in rows), rows
        assert not any(row["agent"] == "consumer" and row["task"] > r["task"] for row in rows)


def test_nexusctl_send_with_a_schema(daemon, tmp_path):
    """`nexusctl send AGENT TEXT --json-schema FILE` (and --json-object, --grammar FILE) asks
    for a constrained answer from any agent; a refused schema names the keyword and pointer,
    an unreadable file names the file, and two constraints at once are a usage error."""
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(TASK_SCHEMA))
    for seed in range(3):
        r = daemon.ctl("send", "free", "go", "--json-schema", str(path), "--json")
        assert r.returncode == 0, r.stderr
        check_typed(json.loads(r.stdout), TASK_SCHEMA)
    r = daemon.ctl("send", "free", "go", "--json-object", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    if out["stop_reason"] != "length":
        assert isinstance(json.loads(out["output"]), dict), out
    gbnf = tmp_path / "yes.gbnf"
    gbnf.write_text('root ::= "yes" | "no"\n')
    r = daemon.ctl("send", "free", "go", "--grammar", str(gbnf), "--no-stream")
    assert r.returncode == 0 and r.stdout.strip() in ("yes", "no"), (r.stdout, r.stderr)
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "object", "patternProperties": {"^x": {}}}')
    r = daemon.ctl("send", "free", "go", "--json-schema", str(bad))
    assert r.returncode != 0 and "patternProperties" in r.stderr, r.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": ')
    r = daemon.ctl("send", "free", "go", "--json-schema", str(broken))
    assert r.returncode == 2 and f"{broken}:1:" in r.stderr, r.stderr
    r = daemon.ctl("send", "free", "go", "--json-schema", str(path), "--json-object")
    assert r.returncode == 2 and "only one of" in r.stderr, r.stderr
