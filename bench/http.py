"""http.py — what the HTTP front adds over the ZeroMQ protocol for the same task, side by side in
one run against one real nexusd (tiny synthesized model, loopback, the CPU backend):

1. latency: N tasks one after another (max_tokens 1, so the model's share is small and the
   paths' cost shows), client side from send to the final answer: ZeroMQ (a DEALER, `task`
   -> `result`) and HTTP (POST /v1/chat/completions on a keep-alive connection, whole answer).
   p50 and p99 of each and the difference (the HTTP path's added latency).
2. throughput: 32 requests in flight for a fixed number of tasks: ZeroMQ (one DEALER, 32
   outstanding) and HTTP (32 threads, a keep-alive connection each). Requests per second.

Not a timed test: figures depend on the machine (bench/RESULTS.md records them with it).

  NEXUS_BUILD=build /usr/bin/python3 bench/http.py [--n 500] [--tasks 2000] [--inflight 32]
"""
import os
import sys

# This file is named http.py: its own folder must not shadow the standard library's http.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import daemon_util as du  # noqa: E402


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def body(i):
    return json.dumps({"model": "bench", "max_tokens": 1,
                       "messages": [{"role": "user", "content": f"hello {i}"}]})


def zmq_latency(d, n):
    out = []
    with d.client() as c:
        for i in range(n):
            t0 = time.perf_counter()
            _, _, r = c.task("bench", f"hello {i}", params={"max_tokens": 1})
            out.append(time.perf_counter() - t0)
            assert r["op"] == "result", r
    return out


def http_latency(port, n):
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body(i),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        out.append(time.perf_counter() - t0)
        assert resp.status == 200, data
    conn.close()
    return out


def zmq_throughput(d, tasks, inflight):
    with d.client() as c:
        t0 = time.perf_counter()
        sent = done = 0
        while done < tasks:
            while sent < tasks and sent - done < inflight:
                c.send({"op": "task", "agent": "bench", "input": f"hello {sent}",
                        "params": {"max_tokens": 1}})
                sent += 1
            r = c.recv(30)
            if r["op"] in ("result", "error"):
                assert r["op"] == "result", r
                done += 1
        return tasks / (time.perf_counter() - t0)


def http_throughput(port, tasks, inflight):
    left = [tasks]
    lock = threading.Lock()
    errors = []

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
                i = left[0]
            conn.request("POST", "/v1/chat/completions", body(i),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                errors.append(data)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    return tasks / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="sequential tasks per path")
    ap.add_argument("--tasks", type=int, default=2000, help="tasks per path at --inflight")
    ap.add_argument("--inflight", type=int, default=32)
    args = ap.parse_args()
    port = du.free_port()
    agent = du.agent("bench", "tq", generation={"max_tokens": 1}, limits={"queue": 1024})
    d = du.Daemon([agent], conf={"max_batch": 32, "http": {"listen": f"127.0.0.1:{port}",
                                                           "max_connections": 256}})
    try:
        d.start()
        zmq_latency(d, 20)  # warm-up: the model loads, caches fill
        http_latency(port, 20)
        zl, hl = zmq_latency(d, args.n), http_latency(port, args.n)
        zr = zmq_throughput(d, args.tasks, args.inflight)
        hr = http_throughput(port, args.tasks, args.inflight)
        ms = lambda v: f"{v * 1000:.3f} ms"  # noqa: E731
        print(f"latency, {args.n} sequential tasks (max_tokens 1), client side:")
        print(f"  {'path':8} {'p50':>12} {'p99':>12}")
        print(f"  {'ZeroMQ':8} {ms(pct(zl, 50)):>12} {ms(pct(zl, 99)):>12}")
        print(f"  {'HTTP':8} {ms(pct(hl, 50)):>12} {ms(pct(hl, 99)):>12}")
        print(f"  {'added':8} {ms(pct(hl, 50) - pct(zl, 50)):>12} {ms(pct(hl, 99) - pct(zl, 99)):>12}")
        print(f"throughput, {args.tasks} tasks with {args.inflight} in flight:")
        print(f"  ZeroMQ {zr:8.0f} requests/s")
        print(f"  HTTP   {hr:8.0f} requests/s  ({hr / zr:.2f}x)")
        assert d.stop() == 0, d.read_log()
    finally:
        d.close()


if __name__ == "__main__":
    main()
