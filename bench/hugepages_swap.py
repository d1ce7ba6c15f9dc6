"""hugepages_swap.py — what collapsing a model's weights into 2 MiB pages after a swap costs
and gives a task, through a real nexusd on the CPU: NEXUS_HUGEPAGES=off against on, the two
alternating daemon by daemon (order swapped each round).

One nexusd per (round, setting), configured as bench/gpu_swap.py does (one agent, greedy,
max_tokens N, a pool and host cache that hold the model), device cpu, NEXUS_LOG=debug (the
loader logs when a collapse is done). In each daemon: a first task loads the model (warm page
cache), `nexusctl evict`, then
  swap:    a task that swaps the model back in: its collapse starts when the load ends and runs
           beside this task's prefill and decode (ttft = accept to first token, the swap
           included; decode = (tokens - 1) / (total - ttft));
  next:    a task sent right after it (the collapse may still be running);
  settled: a task sent once the loader has logged the collapse done (off: after the same wait).
Prints each figure's median per setting and on/off ratios; a ratio above 1 on ttft or total
means the collapse made the task slower, above 1 on decode that it made it faster.

  python3 bench/hugepages_swap.py --model FILE.gguf|DIR [--bin build] [--tokens 48]
      [--rounds 3] [--work /tmp/nexus-hugepages] [--json F]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_swap import Daemon, log, model_name, task, weight_bytes  # noqa: E402

DONE = "in 2 MiB pages"  # residency.c's debug line when a collapse ends


def collapse_seconds(d, seen):
    """The seconds of collapses logged after the first `seen` ones, and how many are logged."""
    lines = [ln for ln in d.read_log().splitlines() if DONE in ln]
    secs = []
    for ln in lines[seen:]:
        try:
            secs.append(float(ln.rsplit("in ", 1)[1].split(" s")[0]))
        except (IndexError, ValueError):
            pass
    return secs, len(lines)


def one_daemon(args, setting, rnd):
    args.work = os.path.join(args.base_work, f"r{rnd}-{setting}")
    d = Daemon(args, [("m", args.model)], env={"NEXUS_HUGEPAGES": setting, "NEXUS_LOG": "debug"})
    out = {"setting": setting, "round": rnd}
    try:
        d.start(120)
        task(d, "m", 600)  # the first load, from the page cache
        t = time.monotonic()
        while setting == "on" and collapse_seconds(d, 0)[1] < 1 and time.monotonic() - t < 120:
            time.sleep(0.2)  # the first load's collapse, so it does not run into the swap
        _, seen = collapse_seconds(d, 0)
        d.ctl("evict", model_name("m", args.model), "--json")
        out["swap"] = task(d, "m", 600)
        out["next"] = task(d, "m", 600)
        t = time.monotonic()
        while collapse_seconds(d, seen)[1] <= seen and time.monotonic() - t < 120:
            if setting == "off" and time.monotonic() - t > args.off_wait:
                break
            time.sleep(0.2)
        out["collapse_s"] = collapse_seconds(d, seen)[0]
        out["settled"] = task(d, "m", 600)
    finally:
        d.stop()
    for k in ("swap", "next", "settled"):
        r = out[k]
        r["decode_tps"] = (r["tokens"] - 1) / (r["total_s"] - r["ttft_s"]) \
            if r["tokens"] > 1 and r["total_s"] > r["ttft_s"] else None
    log(f"   round {rnd} {setting:3s}: " + "; ".join(
        f"{k} ttft {out[k]['ttft_s']:.3f}s total {out[k]['total_s']:.2f}s decode "
        f"{out[k]['decode_tps'] or 0:.2f} tok/s" for k in ("swap", "next", "settled"))
        + f"; collapse {out['collapse_s']}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a .gguf file or a model folder")
    ap.add_argument("--bin", default="build")
    ap.add_argument("--tokens", type=int, default=48, dest="max_tokens")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/nexus-hugepages", dest="base_work")
    ap.add_argument("--off-wait", type=float, default=5.0,
                    help="seconds the off daemon waits before its settled task")
    ap.add_argument("--json")
    args = ap.parse_args()
    args.device = "cpu"
    log(f"model {args.model} ({weight_bytes(args.model) / 2**30:.2f} GiB), "
        f"{args.max_tokens} tokens a task, {args.rounds} rounds, nexusd from {args.bin}")
    runs = []
    for rnd in range(1, args.rounds + 1):
        for setting in (("off", "on") if rnd % 2 else ("on", "off")):
            runs.append(one_daemon(args, setting, rnd))

    def med(setting, task_kind, key):
        xs = [r[task_kind][key] for r in runs if r["setting"] == setting
              and r[task_kind].get(key) is not None]
        return statistics.median(xs) if xs else None

    print(f"\nmedians of {args.rounds} rounds (on / off: above 1 on ttft or total is slower "
          "with the collapse, above 1 on decode is faster)\n")
    print("| task | figure | off | on | on / off |")
    print("|---|---|--:|--:|--:|")
    for kind in ("swap", "next", "settled"):
        for key, unit in (("ttft_s", "ttft s"), ("total_s", "total s"),
                          ("decode_tps", "decode tok/s")):
            a, b = med("off", kind, key), med("on", kind, key)
            ratio = f"{b / a:.2f}" if a and b else "-"
            print(f"| {kind} | {unit} | {a or 0:.3f} | {b or 0:.3f} | {ratio} |")
    swaps = [r["swap"]["swap_s"] for r in runs]
    print(f"\nswap_ms of the swap tasks: {', '.join(f'{s * 1e3:.0f}' for s in swaps)}")
    print("collapse seconds (on): " + ", ".join(
        str(r["collapse_s"]) for r in runs if r["setting"] == "on"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "tokens": args.max_tokens, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
