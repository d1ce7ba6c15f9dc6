#!/usr/bin/env python3
"""Where a whole-process load's time goes, beside its baselines in one run (bench/RESULTS.md,
"The I/O shape per file system"): `nexusctl model load` cold and warm, one O_DIRECT `dd` and
`cat` over the same files, each child's wall time, user and system CPU and minor faults
(getrusage); then the first touch of fresh anonymous memory, 4 KiB pages against
MADV_HUGEPAGE, by MADV_POPULATE_WRITE, alternating.

usage: bench/first_touch.py MODEL_DIR [--rounds 3] [--mib 1200] [--touch-rounds 7]
"""
import argparse
import glob
import mmap
import os
import resource
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MADV_POPULATE_WRITE = 23  # Linux 5.14; not in Python 3.11's mmap module


def drop(files):
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def child(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt


def touch(mib, huge):
    """Seconds to populate `mib` MiB of fresh anonymous memory, and to give it back."""
    m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE if huge else mmap.MADV_NOHUGEPAGE)
    t0 = time.perf_counter()
    m.madvise(MADV_POPULATE_WRITE)
    t1 = time.perf_counter()
    m.close()
    return t1 - t0, time.perf_counter() - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mib", type=int, default=1200)
    ap.add_argument("--touch-rounds", type=int, default=7)
    args = ap.parse_args()
    build = os.environ.get("NEXUS_BUILD", os.path.join(ROOT, "build"))
    files = sorted(glob.glob(os.path.join(args.model, "*.safetensors")) +
                   glob.glob(os.path.join(args.model, "*.gguf")))
    if not files:
        raise SystemExit(f"first_touch: no .safetensors or .gguf file in {args.model}")
    size = sum(os.path.getsize(f) for f in files)
    load = [os.path.join(build, "nexusctl"), "model", "load", args.model, "--device", "cpu"]
    ways = [("model load, cold", load, True),
            ("dd bs=32M iflag=direct, cold", ["dd", "if=" + files[0], "of=/dev/null", "bs=32M",
                                              "iflag=direct"], True),
            ("cat, cold", ["cat", *files], True),
            ("model load, warm", load, False),
            ("cat, warm", ["cat", *files], False)]
    print(f"first_touch: {args.model}, {size / 1e9:.3f} GB in {len(files)} file(s); "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'process':32s} {'wall s':>7s} {'user s':>7s} {'sys s':>7s} {'minor faults':>13s}")
    for _ in range(args.rounds):
        for name, cmd, cold in ways:
            if cold:
                drop(files)
            else:
                subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
            wall, user, sys_, flt = child(cmd)
            print(f"{name:32s} {wall:7.3f} {user:7.3f} {sys_:7.3f} {flt:13d}")
    print(f"\nfirst touch of {args.mib} MiB of anonymous memory (MADV_POPULATE_WRITE), alternating:")
    rows = {False: [], True: []}
    for _ in range(args.touch_rounds):
        for huge in (False, True):
            rows[huge].append(touch(args.mib, huge))
    for huge, runs in rows.items():
        label = "MADV_HUGEPAGE" if huge else "4 KiB pages"
        print(f"  {label:14s} populate " + " ".join(f"{p:.3f}" for p, _ in runs) +
              "  free " + " ".join(f"{f:.3f}" for _, f in runs))


if __name__ == "__main__":
    main()
