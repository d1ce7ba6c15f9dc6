"""test_conf_schema.py — the JSON Schemas (schemas/agent.schema.json, schemas/nexus.schema.json)
and the C loaders (nexus/conf*.c, run through build/tests/tool_conf) must give the same verdict on
every example in tests/fixtures/conf/{good,bad}/{agent,nexus}/. Each bad example's first line
says what is wrong and where: `# expect: FIELD line N: ...` (FIELD `-` when the error names no
field, such as a YAML syntax error); the C error must name that line and field.
Rules that span files (unknown `next`, missing model folders, duplicate names, CURVE off
loopback) are not JSON Schema's and are tested in tests/test_conf.c."""
import glob
import json
import math
import os
import re
import subprocess

import jsonschema
import pytest
import yaml

ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BUILD = os.environ.get("NEXUS_BUILD", os.path.join(ROOT, "build"))
TOOL = os.path.join(BUILD, "tests", "tool_conf")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "conf")
KINDS = ["agent", "nexus"]
EXPECT = re.compile(r"^# expect: (\S+) line (\d+): (.+)$")


def schema(kind):
    with open(os.path.join(ROOT, "schemas", f"{kind}.schema.json")) as f:
        return json.load(f)


def fixtures(verdict, kind):
    files = sorted(glob.glob(os.path.join(FIXTURES, verdict, kind, "*.yaml")))
    return [pytest.param(kind, path, id=f"{kind}/{os.path.basename(path)}") for path in files]


def schema_errors(kind, path):
    """The schema's complaints about the file as PyYAML reads it ([] when it is valid)."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as e:
        return [f"YAML: {e}"]
    validator = jsonschema.Draft202012Validator(schema(kind))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def tool(kind, path):
    return subprocess.run([TOOL, kind, path], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("kind", KINDS)
def test_schemas_are_valid_json_schema(kind):
    jsonschema.Draft202012Validator.check_schema(schema(kind))


def test_enough_examples():
    for kind, least in (("agent", 12), ("nexus", 8)):
        assert len(fixtures("bad", kind)) >= least
        assert len(fixtures("good", kind)) >= 3


@pytest.mark.parametrize("kind,path", fixtures("good", "agent") + fixtures("good", "nexus"))
def test_good_examples_pass_both(kind, path):
    assert schema_errors(kind, path) == []
    r = tool(kind, path)
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)


@pytest.mark.parametrize("kind,path", fixtures("bad", "agent") + fixtures("bad", "nexus"))
def test_bad_examples_fail_both(kind, path):
    with open(path) as f:
        m = EXPECT.match(f.readline().rstrip("\n"))
    assert m, f"{path}: the first line must be '# expect: FIELD line N: what is wrong'"
    field, line = m.group(1), int(m.group(2))
    assert schema_errors(kind, path) != [], "the schema accepts a file the C loader must reject"
    r = tool(kind, path)
    assert r.returncode == 1, f"tool_conf accepted it: {r.stdout}"
    msg = r.stderr.strip()
    assert msg.startswith("EFORMAT: "), msg
    assert f"{path}:{line}:" in msg, f"the error does not name line {line}: {msg}"
    if field != "-":
        assert f"field '{field}'" in msg, f"the error does not name field {field}: {msg}"
    assert "\n" not in msg


def test_good_agent_values_match_what_yaml_says():
    """The C loader reads the same values PyYAML does (types resolved the YAML 1.1 way)."""
    for param in fixtures("good", "agent"):
        _, path = param.values
        with open(path) as f:
            doc = yaml.safe_load(f)
        out = json.loads(tool("agent", path).stdout)
        assert out["name"] == doc["name"] and out["model"] == doc["model"]
        assert out["description"] == doc.get("description", "")
        assert out["system_prompt"] == doc.get("system_prompt")
        assert out["chat_template"] == doc.get("chat_template", "auto")
        gen = doc.get("generation", {})
        for key in ("temperature", "top_p", "min_p", "repetition_penalty"):
            if key in gen:
                assert math.isclose(out["generation"][key], gen[key], rel_tol=1e-6), key
        if "seed" in gen:
            assert int(out["generation"]["seed"]) == gen["seed"]  # a string: it may pass 2**63
        for key in ("max_tokens", "top_k", "stop"):
            if key in gen:
                assert out["generation"][key] == gen[key], key
        if "thinking" in gen:
            assert out["generation"]["thinking"] == int(gen["thinking"])
        res = doc.get("residency", {})
        assert out["residency"]["pin"] == res.get("pin", False)
        assert out["residency"]["priority"] == res.get("priority", 0)
        mem = doc.get("memory", "none")
        mem_type = mem if isinstance(mem, str) else mem["type"]
        assert out["memory"]["type"] == mem_type
        if isinstance(mem, dict) and "turns" in mem:
            assert out["memory"]["turns"] == mem["turns"]
        assert out["next"] == doc.get("next")
        assert out["limits"]["queue"] == doc.get("limits", {}).get("queue", 64)
        assert len(out["hash"]) == 16 and int(out["hash"], 16) >= 0


def test_durations_sizes_and_defaults():
    full = json.loads(tool("agent", os.path.join(FIXTURES, "good", "agent", "full.yaml")).stdout)
    assert full["residency"]["keep_alive_s"] == 3600
    assert full["limits"]["timeout_ms"] == 7 * 86400 * 1000
    assert full["generation"]["seed"] == str(2**64 - 1)
    minimal = json.loads(tool("agent", os.path.join(FIXTURES, "good", "agent", "minimal.yaml")).stdout)
    assert minimal["generation"]["thinking"] == -1
    assert minimal["memory"] == {"type": "none", "turns": 20}
    assert minimal["limits"] == {"queue": 64, "timeout_ms": 300000}
    assert minimal["model_path"] is None  # a bare model name on its own: no models folder
    by_path = json.loads(tool("agent", os.path.join(FIXTURES, "good", "agent", "model_path.yaml")).stdout)
    assert by_path["model_path"] == os.path.join(FIXTURES, "models", "tiny")
    assert by_path["limits"]["timeout_ms"] == 90 * 60 * 1000
    sizes = json.loads(tool("nexus", os.path.join(FIXTURES, "good", "nexus", "sizes.yaml")).stdout)
    assert sizes["pool_bytes"] == 0 and math.isclose(sizes["pool_fraction"], 0.125)
    assert sizes["host_cache_bytes"] == 1_500_000_000
    assert sizes["max_message_bytes"] == 4 << 20
    defaults = json.loads(tool("nexus", os.path.join(FIXTURES, "good", "nexus", "defaults.yaml")).stdout)
    here = os.path.join(FIXTURES, "good", "nexus")
    assert defaults["home"] == os.path.join(here, "var")
    assert defaults["models_dir"] == os.path.join(here, "var", "models")
    assert defaults["agents_dir"] == os.path.join(FIXTURES, "empty_agents")
    assert defaults["listen"] == "tcp://127.0.0.1:5555"
    assert defaults["events"] == "tcp://127.0.0.1:5556"
    assert defaults["device"] == "auto" and math.isclose(defaults["pool_fraction"], 0.8)
    assert (defaults["host_cache_bytes"], defaults["max_message_bytes"]) == (0, 1 << 20)
    assert (defaults["max_batch"], defaults["context"], defaults["agents"]) == (16, 2048, [])


def test_shipped_configs_match_the_schemas():
    assert schema_errors("nexus", os.path.join(ROOT, "configs", "nexus.yaml")) == []
    agents = sorted(glob.glob(os.path.join(ROOT, "configs", "agents", "*.yaml")))
    assert len(agents) >= 3
    for path in agents:
        assert schema_errors("agent", path) == []
        r = tool("agent", path)
        assert r.returncode == 0, r.stderr


def test_http_values_and_default_off():
    http = json.loads(tool("nexus", os.path.join(FIXTURES, "good", "nexus", "http.yaml")).stdout)
    assert http["http"] == {"host": "0.0.0.0", "port": 8080,
                            "api_keys": ["sk-nexus-test-key-0123456789"],
                            "idle_timeout_s": 10, "max_connections": 8}
    defaults = json.loads(tool("nexus", os.path.join(FIXTURES, "good", "nexus", "defaults.yaml")).stdout)
    assert defaults["http"] is None  # off unless the key is there
