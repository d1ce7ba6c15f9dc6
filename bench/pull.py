#!/usr/bin/python3
"""bench/pull.py — `nexusctl pull` beside curl on the same files from the same local hub
(`make bench-pull`; bench/RESULTS.md records the figures).

A ~1.2 GB model (qwen3 0.6b shapes, bf16, 2 shards; synthesized once into --dir) is served by
tests/hub_server.py on loopback, its files read once beforehand so the source side is the page
cache. Then, each --reps times, in turn:
  curl-seq  `curl -sS -L -o FILE URL` per file, one after another
  curl-par  one `curl --parallel --parallel-max JOBS -L -o FILE URL ...` for all files
  pull      `nexusctl pull` into an empty models folder
Each target starts absent (files of the previous run are deleted after it, after `sync`; a
target left from an earlier bench is evicted with posix_fadvise(DONTNEED) and deleted), so the
write side is cold. Rates are bytes of the selection / wall seconds of the command. pull does
more than curl: it fsyncs every file and the folders, and checks each file's sha256 (or git
sha1) before renaming it; curl does neither.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from hub_server import start_hub  # noqa: E402


def evict_and_remove(path):
    if not os.path.exists(path):
        return
    for root, _, names in os.walk(path):
        for n in names:
            p = os.path.join(root, n)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    shutil.rmtree(path)


def warm(path):
    for n in os.listdir(path):
        with open(os.path.join(path, n), "rb") as f:
            while f.read(16 << 20):
                pass


def timed(cmd, env=None):
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit("bench/pull.py: %s failed (%d): %s" % (cmd[0], r.returncode, r.stderr[-2000:]))
    return dt, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--dir", default=os.path.join(HERE, "..", "var", "bench", "pull"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=8)
    args = ap.parse_args()
    nexusctl = os.path.join(os.path.abspath(args.build), "nexusctl")
    src = os.path.join(args.dir, "src")
    if not os.path.exists(os.path.join(src, "config.json")):
        shutil.rmtree(src, ignore_errors=True)
        subprocess.run([nexusctl, "model", "synth", "--arch", "qwen3", "--preset", "0.6b",
                        "--dtype", "bf16", "--shards", "2", "--out", src], check=True)
    files = sorted(os.listdir(src))
    total = sum(os.path.getsize(os.path.join(src, n)) for n in files)
    warm(src)
    hub = start_hub(src, "Bench/Qwen3-0.6B")
    base = hub.url + "/Bench/Qwen3-0.6B/resolve/main/"
    out = os.path.join(args.dir, "out")
    evict_and_remove(out)
    curl_version = subprocess.run(["curl", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0]
    rates = {"curl-seq": [], "curl-par": [], "pull": []}
    env = dict(os.environ, HF_ENDPOINT=hub.url)
    env.pop("HF_TOKEN", None)
    try:
        for rep in range(args.reps):
            for kind in rates:
                os.makedirs(out)
                subprocess.run(["sync"])
                if kind == "curl-seq":
                    t0 = time.monotonic()
                    for n in files:
                        timed(["curl", "-sS", "-f", "-L", "-o", os.path.join(out, n), base + n])
                    dt = time.monotonic() - t0
                elif kind == "curl-par":
                    cmd = ["curl", "-sS", "-f", "-L", "--parallel", "--parallel-max",
                           str(args.jobs)]
                    for n in files:
                        cmd += ["-o", os.path.join(out, n), base + n]
                    dt, _ = timed(cmd)
                else:
                    dt, r = timed([nexusctl, "pull", "Bench/Qwen3-0.6B", "--models", out,
                                   "--json", "--jobs", str(args.jobs)], env)
                    done = [json.loads(x) for x in r.stdout.splitlines()][-1]
                    assert done["event"] == "done" and done["bytes_fetched"] == total, done
                got = sum(os.path.getsize(os.path.join(root, n))
                          for root, _, ns in os.walk(out) for n in ns
                          if not os.path.islink(os.path.join(root, n))
                          and os.path.basename(root) != "refs")
                assert got == total, (kind, got, total)
                rates[kind].append(total / dt / 1e6)
                print("rep %d %-8s %7.2f s  %7.1f MB/s" % (rep + 1, kind, dt, total / dt / 1e6),
                      flush=True)
                subprocess.run(["sync"])
                evict_and_remove(out)
    finally:
        hub.stop()
    print("\n%d files, %.3f GB (qwen3 0.6b bf16, 2 shards), loopback hub_server.py, jobs %d, "
          "%d reps; %s" % (len(files), total / 1e9, args.jobs, args.reps, curl_version))
    print("%-9s %10s %10s" % ("", "median", "best"))
    for kind, v in rates.items():
        print("%-9s %7.1f MB/s %7.1f MB/s" % (kind, statistics.median(v), max(v)))
    for ref in ("curl-seq", "curl-par"):
        print("pull / %s: %.2f (median), %.2f (best)" % (
            ref, statistics.median(rates["pull"]) / statistics.median(rates[ref]),
            max(rates["pull"]) / max(rates[ref])))
    print("pull also fsyncs every file and folder and checks every sha256; curl does neither")


if __name__ == "__main__":
    main()
