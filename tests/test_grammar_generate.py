"""Valid whatever the weights, over a varied schema set, checked by two independent validators
(python3-jsonschema and ajv with ajv-formats through tests/tools/ajv_validate.mjs, formats
checked; ajv is skipped with a warning line where node or `make ajv` is missing):
  - random token walks through the grammar's masks (build/tests/tool_grammar's "generate"
    mode on the committed tiny Qwen2 tokenizer);
  - constrained generation with a real engine: a random tiny Qwen3 model synthesized by
    `nexusctl model synth`, its logits on the CPU, picked at temperature 1 by
    nx_sampler_pick_masked under the mask.
Every walk that ends with the end id must be valid JSON of the schema. Walks cut by the token
cap are counted, not validated (a cut answer is `finish_reason: length`, not a claim of
validity).
"""
import json
import os
import shutil
import subprocess
import tempfile
import warnings

import jsonschema

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
TOOL = os.path.join(BUILD, "tests", "tool_grammar")
TOKENIZER = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizer", "qwen2_tiny")

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 150}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "array", "items": {"type": "number", "exclusiveMinimum": -2, "maximum": 1000},
     "minItems": 1, "maxItems": 4},
    {"enum": ["red", "green", {"rgb": [1, 2, 3]}, None, 7]},
    {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"},
                                      "day": {"type": "string", "format": "date"},
                                      "ip": {"type": "string", "format": "ipv4"}},
     "required": ["id", "day"], "additionalProperties": False},
    {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3,5}$"},
    {"anyOf": [{"type": "integer", "minimum": 10}, {"type": "boolean"},
               {"type": "string", "minLength": 2, "maxLength": 3}]},
    {"$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"},
                                           "maxItems": 2}},
        "required": ["v"], "additionalProperties": False}}, "$ref": "#/$defs/node"},
    {"type": "object", "properties": {"kind": {"const": "call"},
                                      "args": {"type": "object", "additionalProperties":
                                               {"type": "integer"}, "maxProperties": None}},
     "required": ["kind"], "additionalProperties": False},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
               {"properties": {"a": {"minimum": 5}, "b": {"type": "null"}}}]},
    {"oneOf": [{"type": "object", "properties": {"t": {"const": "x"}, "n": {"type": "number"}},
                "required": ["t"], "additionalProperties": False},
               {"type": "object", "properties": {"t": {"const": "y"}, "s": {"type": "string"}},
                "required": ["t"], "additionalProperties": False}]},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"},
                                      "email": {"type": "string", "format": "email"}},
     "additionalProperties": False},
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "string", "maxLength": 4}],
     "items": False},
]


AJV_TOOL = os.path.join(os.path.dirname(__file__), "tools", "ajv_validate.mjs")


def ajv_verdicts(pairs):
    """ajv's verdict on each (schema, instance text) pair, in one node process; None (with a
    warning that says why) where node or ajv is not installed."""
    if not shutil.which("node"):
        warnings.warn("ajv: skipped: node is not installed (python3-jsonschema still checked)")
        return None
    lines = "".join(f'{{"schema": {json.dumps(s)}, "instance": {text}}}\n' for s, text in pairs)
    proc = subprocess.run(["node", AJV_TOOL], input=lines, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode == 3:
        warnings.warn(f"ajv: skipped: {proc.stderr.strip()} (python3-jsonschema still checked)")
        return None
    assert proc.returncode == 0, proc.stderr
    verdicts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(verdicts) == len(pairs), proc.stderr
    return verdicts


def clean(schema):
    """Drop the None placeholders (a way to leave a keyword out in the table above)."""
    if isinstance(schema, dict):
        return {k: clean(v) for k, v in schema.items() if v is not None or k == "enum"}
    if isinstance(schema, list):
        return [clean(v) for v in schema]
    return schema


def run_and_validate(source, count, max_tokens):
    requests = [json.dumps({"schema": clean(s), **source, "generate": count,
                            "seed": 1000 + i, "max_tokens": max_tokens})
                for i, s in enumerate(SCHEMAS)]
    proc = subprocess.run([TOOL], input="\n".join(requests) + "\n", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    finished = cut = 0
    pairs = []
    for schema, reply in zip(SCHEMAS, replies):
        schema = clean(schema)
        assert reply["ok"], (schema, reply)
        validator = jsonschema.Draft202012Validator(schema,
                                                    format_checker=jsonschema.FormatChecker())
        for text, done in zip(reply["texts"], reply["finished"]):
            if not done:
                cut += 1
                continue
            finished += 1
            assert text is not None, f"{schema}: a finished walk is not valid UTF-8"
            value = json.loads(text)
            errors = list(validator.iter_errors(value))
            assert not errors, f"{schema}: {text!r}: {errors[0].message}"
            pairs.append((schema, text)) # the text itself: 1e999 is JSON, not a float
    verdicts = ajv_verdicts(pairs)
    for (schema, text), verdict in zip(pairs, verdicts or []):
        assert verdict.get("valid"), f"ajv: {schema}: {text}: {verdict}"
    return finished, cut


def test_random_walks_are_schema_valid():
    finished, cut = run_and_validate({"tokenizer": TOKENIZER}, 40, 400)
    print(f"\n{finished} random walks ended and validated, {cut} cut at 400 tokens, over "
          f"{len(SCHEMAS)} schemas")
    assert finished >= len(SCHEMAS) * 40 // 2


def test_random_model_generations_are_schema_valid():
    with tempfile.TemporaryDirectory(prefix="nx-gram-model-") as tmp:
        model = os.path.join(tmp, "qwen3")
        subprocess.run([os.path.join(BUILD, "nexusctl"), "model", "synth", "--arch", "qwen3",
                        "--preset", "tiny", "--out", model], check=True, capture_output=True,
                       timeout=60)
        finished, cut = run_and_validate({"model": model, "temperature": 1.0}, 20, 300)
    print(f"\n{finished} generations of a random tiny model at temperature 1 ended and "
          f"validated, {cut} cut at 300 tokens, over {len(SCHEMAS)} schemas")
    assert finished >= len(SCHEMAS) * 20 // 2
