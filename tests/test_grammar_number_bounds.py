"""Decimal number bounds in the JSON Schema compiler against Python's decimal module.

Random bounds, written in the forms JSON text uses (0.1, -12.50, 1E-3, 2.5e+1, 100), each under
minimum/exclusiveMinimum/maximum/exclusiveMaximum (and in lower+upper pairs) on number and
integer; instances near each bound (the bound itself, with trailing zeros, one unit of its last
digit either side, a tiny step either side, negated) and random ones are fed byte by byte to a
matcher (build/tests/tool_grammar) and must be accepted exactly when Decimal says the value is
inside (integers: and written without a fraction part; 5.0 is an integer in JSON Schema, but the
grammar writes integers as integers, so "5.0" is rejected under "type": "integer"). Bounded
numbers are written without an exponent, so instances with one must be rejected.
"""
import json
import os
import random
import subprocess
from decimal import Decimal

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
TOOL = os.path.join(BUILD, "tests", "tool_grammar")
KEYS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


def random_bound(rng):
    """(JSON text, exact Decimal) of a bound of at most 15 significant digits."""
    ip = rng.choice([0, 0, 1, 7, 42, 99, 100, 12345, rng.randrange(10 ** rng.randrange(1, 9))])
    frac = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 6)))
    sign = rng.choice(["", "-"])
    text = f"{sign}{ip}" + (f".{frac}" if frac else "")
    form = rng.randrange(4)
    if form == 1 and frac:  # exponent form of the same value
        digits = f"{ip}{frac}".lstrip("0") or "0"
        text = f"{sign}{digits}E-{len(frac)}"
    elif form == 2:
        text = f"{sign}{ip}.{frac}0" if frac else f"{sign}{ip}.0"
    return text, Decimal(text)


def plain(d):
    """A Decimal in JSON's plain number form, no exponent."""
    s = format(d, "f")
    return "0" if s in ("-0",) else s


def near(d, rng):
    s = plain(abs(d))
    frac = s.split(".")[1] if "." in s else ""
    unit = Decimal(1).scaleb(-len(frac))
    out = set()
    for v in (abs(d), abs(d) + unit, abs(d) - unit, abs(d) + Decimal("1e-12"),
              abs(d) - Decimal("1e-12"), abs(d).to_integral_value(), abs(d) + 1, abs(d) - 1):
        if v >= 0:
            for t in (plain(v), plain(v) + ("0" if "." in plain(v) else ".00")):
                out.add(t)
                out.add("-" + t)
    for _ in range(6):
        v = Decimal(rng.randrange(-10 ** 6, 10 ** 6)).scaleb(-rng.randrange(0, 5))
        out.add(plain(v))
    out.update(["0", "-0", "0.0", "-0.000", "1e1", "-2.5E-1"])
    return sorted(out)


def inside(x, key, m):
    return {"minimum": x >= m, "exclusiveMinimum": x > m, "maximum": x <= m,
            "exclusiveMaximum": x < m}[key]


def check_verdicts(cases):
    """Feed every case (schema text, instances, want) to the matcher tool; each instance's
    verdict must equal want(Decimal(text), text). Returns (instances checked, accepted)."""
    lines = ['{"schema":%s,"draft":"2020-12","instances":%s}' % (s, json.dumps(i))
             for s, i, _ in cases]
    proc = subprocess.run([TOOL], input="\n".join(lines) + "\n", capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(replies) == len(cases)
    checked = accepted = 0
    wrong = []
    for (schema, insts, want), reply in zip(cases, replies):
        assert reply["ok"], (schema, reply.get("error"))
        for text, verdict in zip(insts, reply["verdicts"]):
            expected = want(Decimal(text), text)
            checked += 1
            accepted += verdict
            if verdict != expected:
                wrong.append((schema, text, expected))
    assert not wrong, wrong[:10]
    return checked, accepted


def test_decimal_bounds_against_decimal_module():
    rng = random.Random(17)
    cases = []
    for _ in range(400):
        typ = rng.choice(["number", "number", "integer"])
        n = rng.choice([1, 1, 2])
        bounds = []
        if n == 1:
            bounds.append((rng.choice(KEYS), *random_bound(rng)))
        else:
            (a, da), (b, db) = sorted([random_bound(rng), random_bound(rng)], key=lambda p: p[1])
            bounds.append((rng.choice(KEYS[:2]), a, da))
            bounds.append((rng.choice(KEYS[2:]), b, db))
        schema = '{"type":"%s",%s}' % (typ, ",".join(f'"{k}":{t}' for k, t, _ in bounds))
        insts = sorted({i for _, _, d in bounds for i in near(d, rng)})

        def want(x, text, typ=typ, bounds=bounds):
            return ("e" not in text.lower() and (typ == "number" or "." not in text)
                    and all(inside(x, k, d) for k, _, d in bounds))
        cases.append((schema, insts, want))
    checked, accepted = check_verdicts(cases)
    # the grid reaches both sides of the bounds
    assert checked > 10000 and 0.2 * checked < accepted < 0.8 * checked


MULTIPLES = ["2", "3", "7", "10", "12", "1.5", "0.01", "0.25", "0.5", "1e-3", "0.3", "2.5E1", "1"]


def test_multiple_of_against_decimal_module():
    """multipleOf (integer and decimal), alone and under bounds, on number and integer."""
    rng = random.Random(23)
    cases = []
    for i in range(300):
        typ = rng.choice(["number", "integer", None])
        mult = MULTIPLES[i % len(MULTIPLES)]
        bounds = []
        if rng.random() < 0.5:
            (a, da), (b, db) = sorted([random_bound(rng), random_bound(rng)], key=lambda p: p[1])
            bounds = [(rng.choice(KEYS[:2]), a, da), (rng.choice(KEYS[2:]), b, db)]
        parts = ([f'"type":"{typ}"'] if typ else []) + [f'"multipleOf":{mult}'] + \
                [f'"{k}":{t}' for k, t, _ in bounds]
        schema = "{" + ",".join(parts) + "}"
        m = Decimal(mult)
        insts = set()
        for d in [d for _, _, d in bounds] + [Decimal(0)]:
            insts.update(near(d, rng))
        for _ in range(40):  # multiples of m and near misses
            k = rng.randrange(-500, 500)
            for v in (m * k, m * k + Decimal("0.001"), m * k - 1, m * k + m / 2):
                insts.add(plain(v))
                insts.add(plain(v) + ("0" if "." in plain(v) else ".0"))

        def want(x, text, typ=typ, m=m, bounds=bounds):
            return ("e" not in text.lower() and x % m == 0
                    and (typ != "integer" or "." not in text)
                    and all(inside(x, k, d) for k, _, d in bounds))
        cases.append((schema, sorted(insts), want))
    checked, accepted = check_verdicts(cases)
    assert checked > 10000 and 0.1 * checked < accepted < 0.9 * checked
