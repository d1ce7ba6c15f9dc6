#!/usr/bin/python3
"""quant_pair.py — batch-1 decode, ours against llama.cpp (or another build of ours), in the
same seconds.

This VM's memory bandwidth swings by a third from one minute to the next, and batch-1 decode
is bound by it, so figures taken a minute apart compare the minutes as much as the engines
(bench/run_quant.sh's rounds load each engine afresh for every figure). Here both engines
hold the same GGUF file loaded side by side (`bench/decode --serve`, `bench/llama_bench.mjs
--serve`) and take turns: each round a burst of greedy decode from each engine, which goes
first alternating round by round. A burst
is a fresh sequence's untimed 16-token prompt, then --tokens timed steps, picks included. The
engine waiting for its turn sits idle: its CPU time during the other's burst is measured and
printed (ideally 0), as are llama.cpp's major page faults (its weights are the file's page
cache, mapped; a fault during a burst would mean they were evicted).

The physical bound, the streaming-read bandwidth (bench/bandwidth.h, 1 GiB), is measured in
our process at the start and the end of each session, never between bursts: measured there
every round, it gave the process that ran it a steady edge, 6-15% per session, in a run of
one build against itself (2026-12-06, bench/RESULTS.md), and none once it was moved out.

Where a process's weights land in physical memory (and, in a VM, how the host backs that
memory) holds for the process's life and can move its speed by several percent whichever
engine it is: two identical builds side by side differ that way. So the rounds are spread
over --sessions, each loading both engines afresh (which loads first alternates), and the
table gives each session's median ratio beside the overall one.

    bench/quant_pair.py [--sessions 3] [--rounds 7] [--tokens 16] [--threads 2] [--out DIR]
                        [--baseline-build DIR] [--hugepages off|on]
                        [FILE.gguf ... | OURS=FILE.gguf ...]

No file: the ten of bench/run_quant.sh (qwen3-{0.6b,4b}-{f16,bf16,q8_0,q4_0,q4_k_m}.gguf in
$QUANT_DIR). OURS=FILE.gguf: ours runs OURS (a model folder, another file), llama.cpp the
GGUF. --baseline-build DIR: the baseline is DIR/bench/decode (another build of ours, e.g. a
worktree at an older commit) instead of llama.cpp, to measure a change the same way. Env:
BUILD (build), BENCH_DIR (var/bench), QUANT_DIR ($BENCH_DIR/gguf), NODE (node).

Prints the machine, the command and a markdown table: per file the medians of the bursts'
tokens/s, the ratio of the medians (ours / llama.cpp: above 1, ours is faster), the median and
range of the per-round ratios, each session's median ratio, the read bandwidth and the bound
it gives (weight bytes per
step / bandwidth), and each engine's median as a fraction of that bound. Every burst is kept
as JSON in --out (default $BENCH_DIR/quant-pair/<date>).
"""
import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TYPES = ("f16", "bf16", "q8_0", "q4_0", "q4_k_m")
READY_SECONDS = 900  # a 4B F16 file from a cold disk, both engines
BURST_SECONDS = 600


class Engine:
    """One serving process: commands in, JSON lines out; stderr to the run's log."""

    def __init__(self, name, argv, log):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, cwd=ROOT)
        self.pending = b""

    def read(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no answer in {timeout} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"{self.name}: exited (status {self.proc.wait()}), see the log")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        try:
            doc = json.loads(line)
        except ValueError:
            raise RuntimeError(f"{self.name}: not a JSON line: {line[:200]!r}")
        if "error" in doc:
            raise RuntimeError(f"{self.name}: {doc['error']}")
        return doc

    def ask(self, command):
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read(BURST_SECONDS)

    def cpu_seconds(self):
        """User + system time of every thread so far (/proc/PID/stat, in clock ticks)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def machine_header(command):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 2**20
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        head, dirty = "?", ""
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"machine: {cpu}, {os.cpu_count()} cpus, {mem:.0f} GiB RAM, Linux {platform.release()}")
    print(f"build: {head}{' (uncommitted changes)' if dirty else ''}")
    print(f"command: {command}")


def run_session(ours_path, gguf, args, log, session, rounds):
    """Both engines loaded on one file, then args.rounds rounds of bursts (appended to
    rounds). Which engine loads first alternates from session to session."""
    build = os.environ.get("BUILD", "build")
    node = os.environ.get("NODE", "node")
    common = ["--threads", str(args.threads), "--tokens", str(args.tokens)]
    if args.baseline_build:
        base_argv = [os.path.join(args.baseline_build, "bench", "decode"), gguf, "--device",
                     "cpu", "--batches", "1", "--serve"]
    else:
        base_argv = [node, os.path.join(HERE, "llama_bench.mjs"), gguf, "--batches", "1",
                     "--serve"]
    argvs = {"ours": [os.path.join(build, "bench", "decode"), ours_path, "--device", "cpu",
                      "--batches", "1", "--hugepages", args.hugepages, "--serve"] + common,
             "base": base_argv + common}
    names = {"ours": "ours", "base": base_name(args)}
    engines, ready = {}, {}
    load_order = ("ours", "base") if session % 2 == 0 else ("base", "ours")
    try:
        for side in load_order:
            engines[side] = Engine(names[side], argvs[side], log)
            ready[side] = engines[side].read(READY_SECONDS)
        bandwidth = [engines["ours"].ask("bandwidth")["bytes_per_s"]]
        for _ in range(args.rounds):
            r = len(rounds)
            order = ("ours", "base") if r % 2 == 0 else ("base", "ours")
            doc = {"round": r + 1, "session": session + 1, "first": order[0]}
            for side in order:
                other = engines["base" if side == "ours" else "ours"]
                idle0 = other.cpu_seconds()
                burst = engines[side].ask(f"decode {args.tokens}")
                burst["other_cpu_seconds"] = other.cpu_seconds() - idle0
                doc[side] = burst
            rounds.append(doc)
            print(f"  session {session + 1} round {r + 1}: ours "
                  f"{doc['ours']['tokens_per_s']:.2f}, {names['base']} "
                  f"{doc['base']['tokens_per_s']:.2f} tok/s", file=sys.stderr)
        bandwidth.append(engines["ours"].ask("bandwidth")["bytes_per_s"])
        return {"session": session + 1, "loaded_first": load_order[0], "ours_ready": ready["ours"],
                "base_ready": ready["base"], "bandwidth": bandwidth}
    finally:
        for e in engines.values():
            e.close()


def run_pair(ours_path, gguf, args, log):
    """Every session on one file, one after the other; every round's bursts, in order."""
    rounds = []
    sessions = [run_session(ours_path, gguf, args, log, s, rounds) for s in range(args.sessions)]
    return {"ours_model": os.path.abspath(ours_path), "gguf": os.path.abspath(gguf),
            "baseline": base_name(args), "ours_ready": sessions[0]["ours_ready"],
            "base_ready": sessions[0]["base_ready"], "sessions": sessions, "rounds": rounds}


def summary(result):
    rounds = result["rounds"]
    ours = [r["ours"]["tokens_per_s"] for r in rounds]
    base = [r["base"]["tokens_per_s"] for r in rounds]
    paired = [o / b for o, b in zip(ours, base)]
    per_session = [statistics.median(p for p, r in zip(paired, rounds) if r["session"] == s["session"])
                   for s in result["sessions"]]
    bw = statistics.median(b for s in result["sessions"] for b in s["bandwidth"])
    wbytes = result["ours_ready"]["weight_bytes_per_step"]
    bound = bw / wbytes
    return {
        "model": os.path.basename(result["gguf"]),
        "type": result["base_ready"].get("description", "-"),
        "ours": statistics.median(ours), "base": statistics.median(base),
        "paired": statistics.median(paired), "paired_min": min(paired), "paired_max": max(paired),
        "ours_wins": sum(p > 1 for p in paired), "rounds": len(rounds),
        "per_session": per_session,
        "bandwidth": bw, "weight_bytes": wbytes, "bound": bound,
        "idle_cpu": max(max(r["ours"]["other_cpu_seconds"], r["base"]["other_cpu_seconds"])
                        for r in rounds),
        "base_faults": sum(r["base"]["major_faults"] for r in rounds),
        "ours_faults": sum(r["ours"]["major_faults"] for r in rounds),
    }


def table(rows, base):
    print(f"| model | type | decode b1 ours | {base} | ratio of medians | per-round ratio: "
          f"median (min-max) | per session | rounds ours faster | mem GB/s | weights/step | "
          f"bound tok/s | ours / bound | {base} / bound |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for s in rows:
        print(f"| {s['model']} | {s['type']} | {s['ours']:.2f} | {s['base']:.2f} | "
              f"{s['ours'] / s['base']:.2f} | {s['paired']:.2f} ({s['paired_min']:.2f}-"
              f"{s['paired_max']:.2f}) | {' '.join(f'{x:.2f}' for x in s['per_session'])} | "
              f"{s['ours_wins']}/{s['rounds']} | "
              f"{s['bandwidth'] / 1e9:.1f} | {s['weight_bytes'] / 2**20:.0f} MiB | "
              f"{s['bound']:.1f} | {s['ours'] / s['bound']:.2f} | {s['base'] / s['bound']:.2f} |")
    print()
    print("Idle side's CPU time during the other's burst, at most: "
          f"{max(s['idle_cpu'] for s in rows):.2f} s. Major page faults during bursts: "
          f"{base} {sum(s['base_faults'] for s in rows)}, "
          f"ours {sum(s['ours_faults'] for s in rows)}.")


def base_name(args):
    return f"baseline {args.baseline_build}" if args.baseline_build else "llama.cpp"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", metavar="FILE.gguf | OURS=FILE.gguf")
    ap.add_argument("--sessions", type=int, default=3,
                    help="times both engines are loaded afresh (the one loaded first alternates)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds of bursts per session")
    ap.add_argument("--tokens", type=int, default=16, help="timed decode steps per burst")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--baseline-build", default=None, metavar="DIR",
                    help="the baseline is DIR/bench/decode, not llama.cpp")
    ap.add_argument("--hugepages", choices=("off", "on"), default="off",
                    help="ours' weights in 2 MiB pages once loaded (bench/decode --hugepages; "
                         "off, as nexusd by default)")
    args = ap.parse_args()
    if min(args.sessions, args.rounds, args.tokens, args.threads) < 1:
        ap.error("--sessions, --rounds, --tokens and --threads want whole numbers >= 1")
    if args.baseline_build and not os.access(os.path.join(args.baseline_build, "bench", "decode"),
                                             os.X_OK):
        ap.error(f"--baseline-build {args.baseline_build}: no bench/decode built there")
    bench_dir = os.environ.get("BENCH_DIR", os.path.join("var", "bench"))
    pairs = []
    if args.files:
        for f in args.files:
            ours, _, gguf = f.partition("=") if "=" in f else (f, "", f)
            pairs.append((ours, gguf))
    else:
        qdir = os.environ.get("QUANT_DIR") or os.path.join(bench_dir, "gguf")
        for preset in ("0.6b", "4b"):
            for t in TYPES:
                f = os.path.join(qdir, f"qwen3-{preset}-{t}.gguf")
                if os.path.isfile(f):
                    pairs.append((f, f))
                else:
                    print(f"quant_pair: missing {f} (make it with nexusctl model quantize)")
    for ours, gguf in pairs:
        if not os.path.exists(ours):
            sys.exit(f"quant_pair: {ours}: no such file or folder")
        if not os.path.isfile(gguf):
            sys.exit(f"quant_pair: {gguf}: no such file")
    if not pairs:
        sys.exit("quant_pair: no model to run")
    out = args.out or os.path.join(bench_dir, "quant-pair",
                                   time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    os.makedirs(out, exist_ok=True)
    machine_header("bench/quant_pair.py " + " ".join(sys.argv[1:]))
    print(f"settings: {args.sessions} sessions x {args.rounds} rounds, bursts of {args.tokens} "
          f"greedy batch-1 steps, "
          f"{args.threads} threads each, "
          f"ours' pages {'2 MiB' if args.hugepages == 'on' else '4 KiB'}, "
          f"against {base_name(args)}; JSON and log in {out}")
    rows = []
    with open(os.path.join(out, "run.log"), "ab") as log:
        for i, (ours, gguf) in enumerate(pairs):
            print(f"{os.path.basename(gguf)}:", file=sys.stderr)
            try:
                result = run_pair(ours, gguf, args, log)
            except (RuntimeError, OSError) as e:
                print(f"quant_pair: {gguf}: {e}")
                continue
            with open(os.path.join(out, f"m{i}.json"), "w") as f:
                json.dump(result, f, indent=1)
            rows.append(summary(result))
    if not rows:
        sys.exit("quant_pair: no file ran to the end (see run.log)")
    table(rows, base_name(args))
    return 0 if len(rows) == len(pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
