#!/usr/bin/env python3
"""load_user.py — the loader as a user times it (`make bench-loader-user`).

bench/loader times nx_loader_load inside one process whose pool was made before the clock
started. A user times the whole command. This script does, in one run, alternating, median of
--repeat:

  cold   `nexusctl model load DIR` (the whole process: start, pool, load, exit) with the files
         dropped from the page cache, beside the disk's limit as the shell sees it: 16 `dd
         iflag=direct bs=32M` readers over the file at once, and `cat FILE >/dev/null` (cold)
  warm   the same with the files in the page cache, beside `cat` and 2 buffered `dd bs=16M`
         readers (both into a reused buffer: an optimistic limit)
  start  `nexusd` with a 16 GiB CPU pool, from exec to its first answered ping
  swap   a real nexusd serving an agent bound to the checkpoint: a task's first token when the
         model is on disk (cold, host tier off), in the host tier, and resident

Cold: every file is fsynced and dropped with posix_fadvise(DONTNEED) and, when --drop-all is
given and /proc/sys/vm/drop_caches is writable, `1` is written there too; `fincore` then says
how much stayed (printed). The checkpoint is the qwen3 0.6b preset (bf16, 1.19 GB) unless
--model says otherwise; --foreign rewrites it with a compact header, as Hugging Face writes
them, so that the data section does not start on a 4 KiB boundary.

  bench/load_user.py [--model DIR] [--foreign] [--repeat 3] [--json FILE] [--skip-daemon]
                     [--loader-args "--threads 16 --chunk-mib 32"]
"""
import argparse
import json
import os
import shlex
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(ROOT, "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")
NEXUSD = os.path.join(BUILD, "nexusd")
MIB = 1 << 20
DD_READERS, DD_BLOCK = 16, 32 * MIB
TARGET = 0.90
SWAP_TARGET = 1.3


def log(*a):
    print(*a, flush=True)


def model_files(model_dir):
    return sorted(os.path.join(model_dir, f) for f in os.listdir(model_dir)
                  if f.endswith(".safetensors"))


def drop(paths, drop_all):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if drop_all and os.access("/proc/sys/vm/drop_caches", os.W_OK):
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")


def resident_bytes(paths):
    total = 0
    for p in paths:
        r = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", p],
                           capture_output=True, text=True)
        total += int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout.split() else 0
    return total


def warm(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(64 * MIB):
                pass


def timed(cmds):
    """Start every command at once, wait for all; seconds from first start to last exit."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p, c in zip(procs, cmds):
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"{shlex.join(c)} failed: {err.decode(errors='replace')}")
    return time.perf_counter() - t0


def dd_cmds(paths, readers, block, direct):
    cmds = []
    for p in paths:
        blocks = (os.path.getsize(p) + block - 1) // block
        n = min(readers, blocks)
        for i in range(n):
            first, last = blocks * i // n, blocks * (i + 1) // n
            c = ["dd", f"if={p}", "of=/dev/null", f"bs={block}", f"skip={first}",
                 f"count={last - first}", "status=none"]
            if direct:
                c.append("iflag=direct")
            cmds.append(c)
    return cmds


def cat_cmd(paths):
    return [["sh", "-c", "cat " + " ".join(shlex.quote(p) for p in paths) + " >/dev/null"]]


def loader_cmd(model, extra):
    return [[NEXUSCTL, "model", "load", model, "--device", "cpu", *shlex.split(extra)]]


def make_foreign(src, dst):
    """A copy of src whose safetensors header is compact (no 4 KiB padding, no metadata), so
    the data section starts where a Hugging Face file's does: on an 8-byte boundary."""
    if os.path.isdir(dst) and model_files(dst):
        return dst
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if not name.endswith(".safetensors"):
            with open(s, "rb") as fi, open(d, "wb") as fo:
                fo.write(fi.read())
            continue
        with open(s, "rb") as fi:
            n = struct.unpack("<Q", fi.read(8))[0]
            header = json.loads(fi.read(n))
            header.pop("__metadata__", None)
            text = json.dumps(header, separators=(",", ":")).encode()
            text += b" " * ((8 - (8 + len(text)) % 8) % 8)
            if (8 + len(text)) % 4096 == 0:
                text += b" " * 8
            with open(d + ".tmp", "wb") as fo:
                fo.write(struct.pack("<Q", len(text)) + text)
                fo.flush()
                left = os.path.getsize(s) - 8 - n
                while left > 0:
                    got = os.copy_file_range(fi.fileno(), fo.fileno(), left)
                    if got <= 0:
                        raise RuntimeError(f"copy of {s} stopped with {left} bytes left")
                    left -= got
                os.fsync(fo.fileno())
            os.rename(d + ".tmp", d)
    return dst


def synth(preset, out):
    if os.path.isdir(out) and model_files(out):
        return out
    r = subprocess.run([NEXUSCTL, "model", "synth", "--arch", "qwen3", "--preset", preset,
                        "--dtype", "bf16", "--out", out], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return out


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_file_ways(args, model, files, results):
    """cold and warm: ours beside dd and cat, alternating (the order rotates each repeat)."""
    cold = {"nexusctl model load": loader_cmd(model, args.loader_args),
            f"dd x{DD_READERS} O_DIRECT {DD_BLOCK // MIB} MiB": dd_cmds(files, DD_READERS,
                                                                       DD_BLOCK, True),
            "cat": cat_cmd(files)}
    warm_ways = {"nexusctl model load": loader_cmd(model, args.loader_args),
                 "dd x2 buffered 16 MiB": dd_cmds(files, 2, 16 * MIB, False),
                 "cat": cat_cmd(files)}
    names = list(cold)
    stayed = []
    for rep in range(args.repeat):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            drop(files, args.drop_all)
            stayed.append(resident_bytes(files))
            results["cold"].setdefault(name, []).append(timed(cold[name]))
    warm(files)
    wnames = list(warm_ways)
    for rep in range(args.repeat):
        order = wnames[rep % len(wnames):] + wnames[:rep % len(wnames)]
        for name in order:
            results["warm"].setdefault(name, []).append(timed(warm_ways[name]))
    results["cold_resident_bytes_max"] = max(stayed) if stayed else 0


def run_startup(args, results):
    import daemon_util as du
    d = du.Daemon([], conf={"pool": args.start_pool, "host_cache": 0, "device": "cpu"},
                  models={})
    try:
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            d.start()
            results["start"].append(time.perf_counter() - t0)
            d.stop()
    finally:
        d.close()


def first_token(client, agent):
    """Seconds from sending a task to its first token (or its result when none streams)."""
    t0 = time.perf_counter()
    rid = client.send({"op": "task", "agent": agent, "input": "Hi"})
    first = None
    while True:
        r = client.recv(120)
        if r.get("id") != rid:
            continue
        if r["op"] == "token" and first is None:
            first = time.perf_counter() - t0
        elif r["op"] not in ("accepted", "token"):
            if r["op"] != "result":
                raise RuntimeError(f"task failed: {r}")
            return first if first is not None else time.perf_counter() - t0


def run_swap(args, model, files, results):
    """A task's first token with the model on disk (host tier off), in the host tier and
    resident; each disk run is beside the dd limit for the same bytes."""
    import daemon_util as du
    size = sum(os.path.getsize(p) for p in files)
    pool = f"{(size * 2) // MIB + 512}MiB"
    agents = [du.agent("u", "m", generation={"max_tokens": 1, "temperature": 0})]
    for tier, host_cache in (("disk", 0), ("host", f"{size // MIB + 256}MiB")):
        with du.running(agents, conf={"pool": pool, "host_cache": host_cache, "device": "cpu",
                                      "context": 256, "max_batch": 1},
                        models={"m": model}) as d:
            with d.client() as c:
                first_token(c, "u")  # loads it once: the engine's own start-up is not timed
                for _ in range(args.repeat):
                    r = c.call({"op": "evict", "model": "m"}, timeout=120)
                    assert r["op"] == "ok", r
                    if tier == "disk":
                        drop(files, args.drop_all)
                        results["swap"].setdefault("dd limit", []).append(
                            timed(dd_cmds(files, DD_READERS, DD_BLOCK, True)))
                        drop(files, args.drop_all)
                    results["swap"].setdefault(tier, []).append(first_token(c, "u"))
                    if tier == "host":
                        results["swap"].setdefault("resident", []).append(first_token(c, "u"))


def report(args, model, files, results):
    size = sum(os.path.getsize(p) for p in files)
    rows = []
    log(f"\n{model}: {size / 1e9:.3f} GB in {len(files)} file(s); median of {args.repeat}; "
        f"load average after: {loadavg()}")
    if results["cold"]:
        cold = {k: median(v) for k, v in results["cold"].items()}
        limit = min(v for k, v in cold.items() if k != "nexusctl model load")
        ours = cold["nexusctl model load"]
        log(f"cold (page cache dropped; at most {results['cold_resident_bytes_max']} bytes stayed)")
        for k, v in cold.items():
            log(f"  {k:34s} {v:7.3f} s  {size / v / 1e9:5.2f} GB/s   runs "
                + " ".join(f"{x:.3f}" for x in results["cold"][k]))
        rows.append(("cold nexusctl model load (whole process) / faster of dd and cat",
                     limit / ours, TARGET))
        wm = {k: median(v) for k, v in results["warm"].items()}
        wlimit = min(v for k, v in wm.items() if k != "nexusctl model load")
        log("warm (files in the page cache)")
        for k, v in wm.items():
            log(f"  {k:34s} {v:7.3f} s  {size / v / 1e9:5.2f} GB/s   runs "
                + " ".join(f"{x:.3f}" for x in results["warm"][k]))
        rows.append(("warm nexusctl model load (whole process) / faster of cat and dd",
                     wlimit / wm["nexusctl model load"], TARGET))
    if results["start"]:
        s = median(results["start"])
        log(f"start-up: nexusd with a {args.start_pool} CPU pool, exec to first ping: {s:.3f} s"
            "   runs " + " ".join(f"{x:.3f}" for x in results["start"]))
        rows.append((f"nexusd start-up, {args.start_pool} pool: 0.5 s / seconds", 0.5 / s, 1.0))
    if results["swap"]:
        sw = {k: median(v) for k, v in results["swap"].items()}
        log("daemon: task to first token (max_tokens 1)")
        for k, v in sw.items():
            log(f"  {k:34s} {v:7.3f} s   runs " + " ".join(f"{x:.3f}" for x in results["swap"][k]))
        if "disk" in sw and "dd limit" in sw:
            rows.append(("swap-in from disk to first token: 1.3 x dd limit / seconds",
                         SWAP_TARGET * sw["dd limit"] / sw["disk"], 1.0))
    log("verdict")
    for name, value, target in rows:
        log(f"  {name:70s} {value:6.3f}  (>= {target:.2f}: {'met' if value >= target else 'NOT met'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": model, "bytes": size, "repeat": args.repeat, "results": results,
                       "ratios": {n: v for n, v, _ in rows}}, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--bench-dir", default=os.path.join(ROOT, "var", "bench"))
    ap.add_argument("--foreign", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loader-args", default="")
    ap.add_argument("--drop-all", action="store_true",
                    help="also write 1 to /proc/sys/vm/drop_caches (the whole machine's cache)")
    ap.add_argument("--start-pool", default="16GiB")
    ap.add_argument("--skip-daemon", action="store_true")
    ap.add_argument("--skip-files", action="store_true")
    ap.add_argument("--skip-swap", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    # absolute: the daemon's models folder links to the checkpoint from a temporary home
    args.bench_dir = os.path.abspath(args.bench_dir)
    if args.model:
        args.model = os.path.abspath(args.model)
    model = args.model or synth("0.6b", os.path.join(args.bench_dir, "qwen3-0.6b-bf16"))
    if args.foreign:
        model = make_foreign(model, model.rstrip("/") + "-foreign")
    files = model_files(model)
    log(f"load_user: {model}, {len(files)} file(s), load average {loadavg()}, "
        f"{os.cpu_count()} cpus, build {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip()}")
    results = {"cold": {}, "warm": {}, "start": [], "swap": {}}
    if not args.skip_files:
        run_file_ways(args, model, files, results)
    if not args.skip_daemon:
        run_startup(args, results)
        if not args.skip_swap:
            run_swap(args, model, files, results)
    report(args, model, files, results)


if __name__ == "__main__":
    main()
