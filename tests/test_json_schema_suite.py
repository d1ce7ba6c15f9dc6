"""The JSON Schema compiler against the official JSON-Schema-Test-Suite, the required tests
(not optional/): draft 7 from the Debian package json-schema-test-suite (`make deps`; its
2.0.0 stops at draft 7), draft 2020-12 from tests/fixtures/json-schema-test-suite (the
upstream files at a pinned commit, MIT, gzipped into one file).

For every schema the compiler accepts, each instance serialized compactly (json.dumps with
separators (",", ":") and ensure_ascii=False: the form the grammar admits; a float with an
integral value within +-2^53 is written as an integer, 1.0 as "1": the grammar writes integers
without a fraction, and the daemon's input check applies the same normalization, so the suite's
"a float with zero fractional part is an integer" cases still hold) is fed byte by byte
to a matcher (build/tests/tool_grammar, one process for the whole suite): valid instances must
be accepted and invalid ones rejected. Every refused schema must be refused with a message that
names the keyword. The counts are printed; the few disagreements that are inherent in the
grammar's choices are listed in KNOWN with the reason, and the test fails if any other
disagreement appears or a listed one disappears.
"""
import gzip
import json
import os
import re
import subprocess

import pytest

SUITE = "/usr/share/json-schema-test-suite/tests"
BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
TOOL = os.path.join(BUILD, "tests", "tool_grammar")
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "json-schema-test-suite",
                       "draft2020-12.json.gz")
DRAFTS = {"draft2020-12": "2020-12", "draft7": "draft7"}

# (draft dir, file, schema description, test description) -> why the grammar disagrees.
# Formats: 2020-12 makes `format` an annotation unless the format-assertion vocabulary is on;
# the compiler asserts the formats it builds (what generation needs: a "date" field holds a
# date), so the suite's "only an annotation by default" instances are rejected on purpose.
_FORMAT = "format is asserted here (format-assertion semantics); the suite's default is annotation"
KNOWN = {
    ("draft2020-12", "format.json", f"{name} format",
     f"invalid {name} string is only an annotation by default"): _FORMAT
    for name in ("date", "date-time", "email", "ipv4", "time", "uuid")
}
# A custom metaschema without the validation vocabulary turns `minimum` off; the compiler does
# not load metaschemas ($schema names a draft, nothing more), so it enforces the keyword.
KNOWN[("draft2020-12", "vocabulary.json",
       "schema that uses custom metaschema with with no validation vocabulary",
       "no validation: invalid number, but it still validates")] = (
    "metaschema vocabularies are not read; validation keywords always apply")


def as_written(value):
    """Integral floats (within +-2^53) as integers, at any depth: 1.0 -> 1, [0.0] -> [0]."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2 ** 53:
        return int(value)
    if isinstance(value, list):
        return [as_written(v) for v in value]
    if isinstance(value, dict):
        return {k: as_written(v) for k, v in value.items()}
    return value


def compact(value):
    return json.dumps(as_written(value), separators=(",", ":"), ensure_ascii=False)


def load_cases():
    cases = []
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        for name, groups in sorted(json.load(f)["files"].items()):
            for group in groups:
                cases.append(("draft2020-12", "2020-12", name, group))
    for draft_dir, draft in DRAFTS.items():
        if draft_dir == "draft2020-12":
            continue
        folder = os.path.join(SUITE, draft_dir)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                for group in json.load(f):
                    cases.append((draft_dir, draft, name, group))
    return cases


@pytest.mark.skipif(not os.path.isdir(SUITE), reason="json-schema-test-suite is not installed (make deps)")
def test_json_schema_suite():
    cases = load_cases()
    requests = []
    for draft_dir, draft, name, group in cases:
        requests.append(json.dumps({"schema": group["schema"], "draft": draft,
                                    "instances": [compact(t["data"]) for t in group["tests"]]},
                                   ensure_ascii=False))
    proc = subprocess.run([TOOL], input="\n".join(requests) + "\n", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(replies) == len(cases)

    accepted = refused = agree = 0
    valid_ok = invalid_ok = 0
    mismatches = {}
    refusals = {}
    unnamed = []
    for (draft_dir, draft, name, group), reply in zip(cases, replies):
        if not reply["ok"]:
            refused += 1
            msg = reply["error"]
            m = re.search(r"keyword '([^']+)'", msg) or re.search(r"'(\$ref|type|enum|items|"
                                                                  r"allOf|anyOf|oneOf|prefixItems|"
                                                                  r"properties|required|pattern|"
                                                                  r"format)'", msg)
            if not m:
                unnamed.append((draft_dir, name, group["description"], msg))
            else:
                refusals[m.group(1)] = refusals.get(m.group(1), 0) + 1
            continue
        accepted += 1
        for test, verdict in zip(group["tests"], reply["verdicts"]):
            if verdict == test["valid"]:
                agree += 1
                valid_ok += test["valid"]
                invalid_ok += not test["valid"]
            else:
                key = (draft_dir, name, group["description"], test["description"])
                mismatches[key] = (test["valid"], compact(test["data"]))
    total = sum(len(g["tests"]) for _, _, _, g in cases if True)
    checked = agree + len(mismatches)
    print(f"\nJSON-Schema-Test-Suite ({', '.join(DRAFTS)}): {len(cases)} schemas, "
          f"{accepted} compiled, {refused} refused with the keyword named; "
          f"{checked} instances of compiled schemas, {agree} agree "
          f"({valid_ok} valid accepted, {invalid_ok} invalid rejected), "
          f"{len(mismatches)} disagree ({len(KNOWN)} known); {total} instances in all")
    print("refusals by keyword:", dict(sorted(refusals.items(), key=lambda kv: -kv[1])))
    for key, (valid, text) in sorted(mismatches.items()):
        print("MISMATCH", key, "valid" if valid else "invalid", text[:120])
    assert not unnamed, f"refusals that name no keyword: {unnamed[:5]}"
    unexpected = {k: v for k, v in mismatches.items() if k not in KNOWN}
    assert not unexpected, f"{len(unexpected)} unexpected disagreements (listed above)"
    stale = [k for k in KNOWN if k not in mismatches]
    assert not stale, f"listed disagreements that no longer happen: {stale}"
