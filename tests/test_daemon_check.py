"""test_daemon_check.py — `nexusd --check` and start-up on hostile or broken configurations,
run as real processes with a timeout, so a hang is a failure rather than a stuck suite:

- a FIFO (or any non-regular file) named like an agent file is refused at once, naming the
  file and saying it is not a regular file, by --check and by start-up;
- an agent file of 100,000 nested flow lists is refused at once (nesting is capped before
  libyaml builds a document), naming FILE:LINE:COL;
- --check opens every agent's model (headers and config, no weights): a model folder whose
  checkpoint is broken is reported by name;
- --check sizes the pool against this machine: more bytes than the machine has is an error
  naming both figures;
- --check refuses a home that cannot be written (a file, or a folder under a file).
"""
import os
import subprocess
import time

import daemon_util as du

PROMPT_S = 10  # "at once": far below the 18 s the nested file took, and no hang


def run_nexusd(*args, timeout=PROMPT_S):
    t0 = time.monotonic()
    r = subprocess.run([du.NEXUSD, *args], capture_output=True, text=True, timeout=timeout)
    return r, time.monotonic() - t0


def test_fifo_in_the_agents_folder_is_refused_promptly():
    d = du.Daemon([du.agent("echo", "tq")])
    try:
        fifo = os.path.join(d.home, "agents", "pipe.yaml")
        os.mkfifo(fifo)
        for args in (("--check",), ()):  # --check, then start-up
            r, _ = run_nexusd("--config", d.config, *args)
            assert r.returncode == 1, r.stdout + r.stderr
            assert fifo in r.stderr and "not a regular file" in r.stderr, r.stderr
            assert "FIFO" in r.stderr, r.stderr
    finally:
        d.close()


def test_deeply_nested_agent_file_is_refused_promptly():
    d = du.Daemon([du.agent("echo", "tq")])
    try:
        path = os.path.join(d.home, "agents", "deep.yaml")
        levels = 100_000
        with open(path, "w") as f:
            f.write("name: deep\nmodel: tq\ndescription: " + "[" * levels + "]" * levels + "\n")
        r, seconds = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 1, r.stdout
        assert f"{path}:3:" in r.stderr and "nested more than 64 levels" in r.stderr, r.stderr
        assert seconds < 5, seconds
    finally:
        d.close()


def test_check_opens_the_models():
    d = du.Daemon([du.agent("echo", "tq"), du.agent("broken", "bad")],
                  models={**du.tiny_models()})
    try:
        bad = os.path.join(d.home, "models", "bad")
        os.makedirs(bad)
        with open(os.path.join(bad, "model.safetensors"), "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
        r, _ = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 1, r.stdout
        assert "agent 'broken'" in r.stderr and "model.safetensors" in r.stderr, r.stderr
        os.remove(os.path.join(d.home, "agents", "broken.yaml"))
        r, _ = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    finally:
        d.close()


def test_check_sizes_the_pool_against_this_machine():
    d = du.Daemon([du.agent("echo", "tq")], conf={"pool": "900TiB"})
    try:
        r, _ = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 1, r.stdout
        assert "pool" in r.stderr and str(900 << 40) in r.stderr, r.stderr
        assert d.config in r.stderr, r.stderr
    finally:
        d.close()
    d = du.Daemon([du.agent("echo", "tq")], conf={"pool": "80%"})
    try:
        r, _ = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 0, r.stderr  # a fraction of what is free always fits
        assert "pool" in r.stdout, r.stdout  # and the verdict says what it comes to
    finally:
        d.close()


def test_check_refuses_a_home_that_cannot_be_written():
    d = du.Daemon([du.agent("echo", "tq")])
    try:
        a_file = os.path.join(d.home, "a-file")
        with open(a_file, "w") as f:
            f.write("not a folder\n")
        for home in (a_file, os.path.join(a_file, "var")):
            with open(d.config) as f:
                text = f.read().replace(f'home: "{d.home}"', f'home: "{home}"')
            with open(d.config, "w") as f:
                f.write(text)
            r, _ = run_nexusd("--config", d.config, "--check")
            assert r.returncode == 1, r.stdout
            assert "home" in r.stderr and home in r.stderr, r.stderr
            with open(d.config) as f:
                text = f.read().replace(f'home: "{home}"', f'home: "{d.home}"')
            with open(d.config, "w") as f:
                f.write(text)
        r, _ = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 0, r.stderr
    finally:
        d.close()


def test_check_and_start_refuse_a_schema_the_compiler_refuses():
    """An agent's output_schema is compiled by --check and at start: a keyword the compiler
    cannot enforce stops both at FILE:LINE:COL with the keyword and its JSON pointer."""
    schema = {"type": "object", "properties": {"a": {"type": "object",
                                                     "patternProperties": {"^x": {}}}}}
    d = du.Daemon([du.agent("typed", "tq", output_schema=schema)])
    try:
        path = os.path.join(d.home, "agents", "typed.yaml")
        for args in (("--check",), ()):
            r, _ = run_nexusd("--config", d.config, *args)
            assert r.returncode == 1, r.stdout + r.stderr
            assert f"{path}:" in r.stderr and "field 'output_schema'" in r.stderr, r.stderr
            assert "unsupported keyword 'patternProperties' at /properties/a" in r.stderr, \
                r.stderr
        with open(path, "w") as f:
            f.write(du.to_yaml(du.agent("typed", "tq", input_schema="in.json")) + "\n")
        with open(os.path.join(d.home, "agents", "in.json"), "w") as f:
            f.write('{"type": "object", "properties": {"q": {"type": "string"}}}')
        r, _ = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    finally:
        d.close()


def test_check_and_start_refuse_a_pipeline_whose_types_do_not_fit():
    """A `next` stage's input_schema must accept every answer the stage before can give (its
    output_schema; free text never fits): --check and start-up refuse the pipeline at the
    `next` key, naming both agents and why; a fitting pipeline passes."""
    needs = {"type": "object", "properties": {"q": {"type": "string"}, "k": {"type": "integer"}},
             "required": ["q", "k"]}
    gives = {"type": "object", "properties": {"q": {"const": "hi"}}, "required": ["q"]}
    cases = [
        (du.agent("stage1", "tq", next="stage2", output_schema=gives, output_strict=True),
         "may omit 'k'"),
        (du.agent("stage1", "tq", next="stage2"), "free text"),
    ]
    for first, why in cases:
        d = du.Daemon([first, du.agent("stage2", "tq", input_schema=needs)])
        try:
            path = os.path.join(d.home, "agents", "stage1.yaml")
            for args in (("--check",), ()):
                r, _ = run_nexusd("--config", d.config, *args)
                assert r.returncode == 1, r.stdout + r.stderr
                assert f"{path}:" in r.stderr and "field 'next'" in r.stderr, r.stderr
                assert "'stage2'" in r.stderr and why in r.stderr, r.stderr
        finally:
            d.close()
    fits = {**gives, "properties": {"q": {"const": "hi"}, "k": {"const": 3}},
            "required": ["q", "k"]}
    d = du.Daemon([du.agent("stage1", "tq", next="stage2", output_schema=fits,
                            output_strict=True),
                   du.agent("stage2", "tq", input_schema=needs)])
    try:
        r, _ = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    finally:
        d.close()
