"""test_daemon_check.py — `nexusd --check` and start-up on hostile or broken configurations,
run as real processes with a timeout, so a hang is a failure rather than a stuck suite:

- a FIFO (or any non-regular file) named like an agent file is refused at once, naming the
  file and saying it is not a regular file, by --check and by start-up;
- an agent file of 100,000 nested flow lists is refused at once (nesting is capped before
  libyaml builds a document), naming FILE:LINE:COL.
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

