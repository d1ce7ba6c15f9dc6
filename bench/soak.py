"""soak.py — a bounded soak of a real nexusd on loopback: for a few minutes, requests at a fixed
rate from a fixed set of DEALER clients, a mix of plain tasks on two agents whose models do not
fit the pool together (so they swap in and out), session tasks (memory: session, a handful of
sessions that keep growing), long tasks canceled once accepted, `history`/`tasks`/`status`,
explicit `load`/`evict`, and bad requests (not msgpack, an unknown op, a missing field, an
unknown agent, a message over max_message_bytes).

Every ~10 s it prints the daemon's resident memory (VmRSS), open files (/proc/PID/fd), threads,
and the database's size (nexus.db + -wal + -shm) beside the tasks it has stored. At the end a
verdict against these bounds, measured from the first sample after the warm-up (a third of the
run, at most 60 s: the pool, host cache, SQLite page cache and allocator arenas filled):

  - RSS grows by less than 10% (or 4 MiB, whichever is larger: a few allocator pages);
  - open files: no more than 2 above the warm-up value at any later sample (none leaks);
  - the database file grows by less than 2 KiB per task stored after the warm-up, and the WAL
    stays under 8 MiB (SQLite's automatic checkpoint at 1,000 pages keeps it around 4 MiB);
  - every well-formed request got its final reply, and the daemon exits 0 on SIGTERM.

It exits 1 when a bound is broken.

  NEXUS_BUILD=build /usr/bin/python3 bench/soak.py [--minutes 3] [--rate 20] [--clients 8]
"""
import argparse
import os
import random
import sys
import time

import msgpack
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import daemon_util as du  # noqa: E402

AGENTS = [
    du.agent("qa", "tq"),
    du.agent("la", "tl"),
    du.agent("mem", "tq", memory={"type": "session", "turns": 5}),
    du.agent("long", "tl", generation={"max_tokens": 400}),
]
# Relative weights of each kind of request in the mix.
MIX = [("task_qa", 25), ("task_la", 15), ("session", 15), ("cancel", 10), ("bad", 15),
       ("read", 12), ("residency", 8)]
SESSIONS = 12
WORDS = "the quick brown fox jumps over a lazy dog while seven bright stars watch".split()


def proc_sample(pid, home):
    """{rss_kib, fds, threads, db_bytes, wal_bytes} of the running daemon."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    size = lambda name: os.path.getsize(os.path.join(home, name)) \
        if os.path.exists(os.path.join(home, name)) else 0  # noqa: E731
    out["db_bytes"] = size("nexus.db")
    out["wal_bytes"] = size("nexus.db-wal") + size("nexus.db-shm")
    return out


class Soak:
    def __init__(self, daemon, clients, rng):
        self.d = daemon
        self.rng = rng
        self.clients = [daemon.client() for _ in range(clients)]
        self.poller = zmq.Poller()
        for c in self.clients:
            self.poller.register(c.sock, zmq.POLLIN)
        self.pending = {}        # (client index, id) -> kind, until its final reply
        self.to_cancel = set()   # (client index, id) of long tasks to cancel once accepted
        self.sent = {}           # kind -> requests sent
        self.outcomes = {}       # reply op or error code -> count
        self.tasks_stored = 0    # `accepted` replies: one row each
        self.unmatched = 0       # replies whose id matched nothing pending
        self.no_id = [0] * clients  # per client: requests whose error reply can carry no id
        self.session_turn = [0] * SESSIONS

    def words(self, n):
        return " ".join(self.rng.choice(WORDS) for _ in range(n))

    def send(self, kind, msg, final=True):
        i = self.rng.randrange(len(self.clients))
        rid = self.clients[i].send(msg)
        if final:
            self.pending[(i, rid)] = kind
        self.sent[kind] = self.sent.get(kind, 0) + 1
        return i, rid

    def fire(self):
        kind = self.rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
        r = self.rng.random()
        if kind == "task_qa":
            self.send(kind, {"op": "task", "agent": "qa", "input": self.words(6)})
        elif kind == "task_la":
            self.send(kind, {"op": "task", "agent": "la", "input": self.words(6)})
        elif kind == "session":
            s = self.rng.randrange(SESSIONS)
            self.session_turn[s] += 1
            self.send(kind, {"op": "task", "agent": "mem", "session": f"soak-{s}",
                             "input": f"turn {self.session_turn[s]}: {self.words(10)}"})
        elif kind == "cancel":
            key = self.send(kind, {"op": "task", "agent": "long", "input": self.words(4)})
            self.to_cancel.add(key)
        elif kind == "read":
            if r < 0.4:
                self.send(kind, {"op": "history", "session": f"soak-{self.rng.randrange(SESSIONS)}"})
            elif r < 0.7:
                self.send(kind, {"op": "tasks", "limit": 50})
            else:
                self.send(kind, {"op": "status"})
        elif kind == "residency":
            op = "load" if r < 0.6 else "evict"
            self.send(kind, {"op": op, "model": self.rng.choice(["tq", "tl"])})
        else:
            self.bad(r)

    def bad(self, r):
        if r < 0.2 or r >= 0.8:  # not msgpack, or too large to read: no id to echo
            i = self.rng.randrange(len(self.clients))
            frame = b"\xc1not msgpack" if r < 0.2 else msgpack.packb(
                {"op": "task", "agent": "qa", "input": "x" * (96 * 1024)})
            self.clients[i].send_raw(frame)
            self.sent["bad"] = self.sent.get("bad", 0) + 1
            self.no_id[i] += 1
        elif r < 0.4:
            self.send("bad", {"op": "no_such_op"})
        elif r < 0.6:
            self.send("bad", {"op": "task", "agent": "qa"})  # no input
        else:
            self.send("bad", {"op": "task", "agent": "nobody", "input": "hi"})

    def handle(self, i, reply):
        op = reply.get("op")
        rid = reply.get("id")
        if op == "accepted":
            self.tasks_stored += 1
            if (i, rid) in self.to_cancel:
                self.to_cancel.discard((i, rid))
                self.send("cancel_op", {"op": "cancel", "task": reply["task"]})
            return
        if op == "token":
            return
        key = (i, rid)
        outcome = reply.get("code", op) if op == "error" else op
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if key in self.pending:
            del self.pending[key]
            self.to_cancel.discard(key)
        elif rid is None and self.no_id[i] > 0:
            self.no_id[i] -= 1
        else:
            self.unmatched += 1

    def pump(self, until):
        """Receive replies until the monotonic time `until`."""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            for sock, _ in self.poller.poll(max(1, int(left * 1000))):
                i = next(k for k, c in enumerate(self.clients) if c.sock is sock)
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(i, msgpack.unpackb(frames[-1], raw=False))

    def close(self):
        for c in self.clients:
            c.close()


def fmt_mib(b):
    return f"{b / (1 << 20):.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    duration = args.minutes * 60
    warmup = min(60.0, duration / 3)
    # A pool that holds one tiny model (plus a sequence) at a time: qa and la swap it.
    conf = {"pool": "4MiB", "host_cache": "8MiB", "max_batch": 4, "context": 512,
            "max_message_bytes": "64KiB"}
    d = du.Daemon(AGENTS, conf=conf)
    d.start()
    pid = d.proc.pid
    print(f"soak: nexusd pid {pid}, {args.minutes:g} min at {args.rate:g} requests/s from "
          f"{args.clients} clients, sample every {args.sample:g} s, warm-up {warmup:.0f} s")
    print(f"{'t_s':>6} {'rss_MiB':>8} {'fds':>4} {'thr':>4} {'db_MiB':>7} {'wal_MiB':>8} "
          f"{'tasks':>6} {'sent':>6} {'pending':>7}")
    soak = Soak(d, args.clients, rng)
    samples = []
    exit_code = None
    try:
        start = time.monotonic()
        next_send, next_sample = start, start
        interval = 1.0 / args.rate
        while True:
            now = time.monotonic()
            if now >= next_sample:
                s = proc_sample(pid, d.home)
                s.update(t=now - start, tasks=soak.tasks_stored, sent=sum(soak.sent.values()),
                         pending=len(soak.pending))
                samples.append(s)
                print(f"{s['t']:6.0f} {s['rss_kib'] / 1024:8.1f} {s['fds']:4d} "
                      f"{s['threads']:4d} {fmt_mib(s['db_bytes']):>7} "
                      f"{fmt_mib(s['wal_bytes']):>8} {s['tasks']:6d} {s['sent']:6d} "
                      f"{s['pending']:7d}", flush=True)
                next_sample += args.sample
                if now - start >= duration:
                    break
            if now >= next_send and now - start < duration:
                soak.fire()
                next_send += interval
            soak.pump(min(next_send, next_sample))
        # Drain: every well-formed request must still get its final reply.
        deadline = time.monotonic() + 60
        while (soak.pending or any(soak.no_id)) and time.monotonic() < deadline:
            soak.pump(time.monotonic() + 0.5)
        final = proc_sample(pid, d.home)
        with d.client() as c:
            loads = {m["name"]: m["loads"] for m in c.call({"op": "status"})["models"]}
        exit_code = d.stop()
    finally:
        soak.close()
        d.close()

    warm = next(s for s in samples if s["t"] >= warmup)
    after = [s for s in samples if s["t"] >= warmup]
    last = samples[-1]
    rss_growth = (last["rss_kib"] - warm["rss_kib"]) * 1024
    rss_bound = max(0.10 * warm["rss_kib"] * 1024, 4 << 20)
    fd_max = max(s["fds"] for s in after)
    tasks_after = last["tasks"] - warm["tasks"]
    db_growth = last["db_bytes"] - warm["db_bytes"]
    db_per_task = db_growth / tasks_after if tasks_after else 0.0
    wal_max = max(s["wal_bytes"] for s in samples)
    elapsed = last["t"]
    print(f"sent {sum(soak.sent.values())} requests in {elapsed:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(soak.sent.items())))
    print("final replies: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.outcomes.items())))
    unanswered = len(soak.pending) + sum(soak.no_id)
    print("model loads (swaps in): " + ", ".join(f"{k} {v}" for k, v in sorted(loads.items())))
    print(f"tasks stored {soak.tasks_stored}; unanswered {unanswered}; "
          f"unmatched replies {soak.unmatched}; daemon exit {exit_code}; "
          f"after drain rss {final['rss_kib'] / 1024:.1f} MiB, fds {final['fds']}")
    checks = [
        ("rss", rss_growth < rss_bound,
         f"RSS {warm['rss_kib'] / 1024:.1f} -> {last['rss_kib'] / 1024:.1f} MiB after warm-up "
         f"(+{rss_growth / (1 << 20):.2f} MiB, bound {rss_bound / (1 << 20):.2f} MiB)"),
        ("fds", fd_max <= warm["fds"] + 2,
         f"open files {warm['fds']} at warm-up, at most {fd_max} after (bound {warm['fds'] + 2})"),
        ("db", db_per_task < 2048,
         f"database +{db_growth / 1024:.0f} KiB for {tasks_after} tasks after warm-up "
         f"({db_per_task:.0f} B per task, bound 2048)"),
        ("wal", wal_max < 8 << 20, f"WAL+shm at most {fmt_mib(wal_max)} MiB (bound 8)"),
        ("answers", unanswered == 0 and exit_code == 0,
         f"{unanswered} requests unanswered, daemon exit {exit_code}"),
    ]
    for name, ok, text in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {text}")
    verdict = all(ok for _, ok, _ in checks)
    print(f"soak verdict: {'PASS' if verdict else 'FAIL'} ({elapsed / 60:.1f} min, "
          f"{args.rate:g} requests/s)")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
