"""test_daemon_tasks.py — tasks through one real nexusd (shared by the module, loopback, temp
home, tiny models): a round trip on DEALER and on REQ, streaming, a pipeline of two agents (the
agent's `next` and a request's `route`), 40 concurrent tasks on DEALER sockets, session memory
and `history`, `tasks`, cancel, PUB task events, and the same through nexusctl."""
import json
import threading

import msgpack
import pytest
import zmq

import daemon_util as du

AGENTS = [
    du.agent("echo", "tq", description="greedy, 8 tokens"),
    du.agent("other", "tl"),
    du.agent("drafter", "tq", next="editor"),
    du.agent("editor", "tl", chat_template="llama3"),
    du.agent("mem", "tq", memory={"type": "session", "turns": 5}),
    du.agent("long", "tq", generation={"max_tokens": 3000}, limits={"queue": 4}),
    du.agent("wide", "tq", limits={"queue": 100}),
]


@pytest.fixture(scope="module")
def daemon():
    with du.running(AGENTS, conf={"context": 4096}) as d:
        yield d


def check_result(result, agent):
    assert result["op"] == "result", result
    assert result["agent"] == agent
    assert isinstance(result["output"], str) and result["output"]
    assert result["usage"]["completion_tokens"] > 0
    assert set(result["timings"]) == {"queue_ms", "swap_ms", "ttft_ms", "total_ms"}


def test_round_trip_dealer(daemon):
    with daemon.client() as c:
        accepted, tokens, result = c.task("echo", "hello there")
        assert accepted["op"] == "accepted" and isinstance(accepted["task"], int)
        assert tokens == []  # no stream asked
        assert result["task"] == accepted["task"]
        check_result(result, "echo")
        # greedy and seeded: the same input gives the same output
        _, _, again = c.task("echo", "hello there")
        assert again["output"] == result["output"]


def test_round_trip_req_socket(daemon):
    with daemon.client(kind=zmq.REQ) as c:
        assert c.call({"op": "ping", "id": "p1"}) == {"op": "pong", "id": "p1",
                                                        "version": "0.1"}
        rid = c.send({"op": "task", "agent": "echo", "input": "hi", "id": "req-1"})
        assert c.recv()["op"] == "accepted"  # REQ: one reply per request, so only accepted
    assert rid == "req-1"


def test_streaming_tokens_make_the_output(daemon):
    with daemon.client() as c:
        accepted, tokens, result = c.task("echo", "stream me", stream=True)
        check_result(result, "echo")
        assert tokens and all(t["task"] == accepted["task"] for t in tokens)
        assert "".join(t["text"] for t in tokens) == result["output"]


def test_pipeline_through_next(daemon):
    with daemon.client() as c:
        accepted, tokens, result = c.task("drafter", "write a note", stream=True)
        check_result(result, "editor")  # the last stage answers
        assert result["task"] == accepted["task"]
        assert "".join(t["text"] for t in tokens) == result["output"]  # last stage streams
        rows = c.call({"op": "tasks", "limit": 50})["tasks"]
        by_id = {r["task"]: r for r in rows}
        first = by_id[accepted["task"]]
        assert first["agent"] == "drafter" and first["status"] == "done"
        second = [r for r in rows if r["parent"] == accepted["task"]]
        assert len(second) == 1 and second[0]["agent"] == "editor"
        assert second[0]["input"] == first["output"]  # the draft went to the editor
        assert second[0]["output"] == result["output"]


def test_pipeline_through_route(daemon):
    with daemon.client() as c:
        _, _, result = c.task("echo", "route me", route=["other", "echo"])
        check_result(result, "echo")
        rows = c.call({"op": "tasks", "limit": 10})["tasks"]
        assert [r["agent"] for r in rows[:3]] == ["echo", "other", "echo"]


def test_forty_concurrent_tasks(daemon):
    results, errors = {}, []

    def worker(n):
        try:
            with daemon.client() as c:
                ids = [c.send({"op": "task", "agent": "wide", "input": f"task {n}.{k}"})
                       for k in range(5)]
                pending = set(ids)
                while pending:
                    r = c.recv(timeout=120)
                    if r["op"] in ("result", "error"):
                        results[(n, r["id"])] = r
                        pending.discard(r["id"])
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert len(results) == 40
    assert all(r["op"] == "result" for r in results.values()), results
    assert len({r["task"] for r in results.values()}) == 40


def test_session_memory_and_history(daemon):
    with daemon.client() as c:
        _, _, r1 = c.task("mem", "my name is Ada", session="s-ada")
        _, _, r2 = c.task("mem", "what is my name?", session="s-ada")
        check_result(r2, "mem")
        # the second prompt carried the first turn: more prompt tokens than its own text
        assert r2["usage"]["prompt_tokens"] > r1["usage"]["prompt_tokens"]
        h = c.call({"op": "history", "session": "s-ada"})
        assert h["op"] == "history" and h["session"] == "s-ada"
        msgs = h["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
        assert msgs[0]["content"] == "my name is Ada" and msgs[1]["content"] == r1["output"]
        assert msgs[3]["content"] == r2["output"] and msgs[3]["agent"] == "mem"
        missing = c.call({"op": "history", "session": "no-such-session"})
        assert missing["op"] == "error" and missing["code"] == "not_found"


def test_tasks_listing_filters_and_limits(daemon):
    with daemon.client() as c:
        c.task("other", "one")
        c.task("other", "two")
        rows = c.call({"op": "tasks", "agent": "other", "limit": 2})["tasks"]
        assert len(rows) == 2 and all(r["agent"] == "other" for r in rows)
        assert rows[0]["task"] > rows[1]["task"]  # newest first
        assert rows[0]["status"] == "done" and rows[0]["usage"]["completion_tokens"] > 0


def test_cancel_a_running_task(daemon):
    with daemon.client() as c:
        rid = c.send({"op": "task", "agent": "long", "input": "go on", "stream": True})
        accepted = c.recv()
        assert accepted["op"] == "accepted"
        while c.recv()["op"] != "token":  # it is running
            pass
        cancel = c.call({"op": "cancel", "task": accepted["task"]})
        assert cancel == {"op": "canceled", "id": cancel["id"], "task": accepted["task"]}
        while True:
            r = c.recv(timeout=60)
            if r["id"] == rid and r["op"] not in ("token",):
                break
        assert r["op"] == "error" and r["code"] == "canceled" and r["task"] == accepted["task"]
        rows = c.call({"op": "tasks", "agent": "long", "limit": 1})["tasks"]
        assert rows[0]["status"] == "canceled"
        unknown = c.call({"op": "cancel", "task": 999999})
        assert unknown["op"] == "error" and unknown["code"] == "not_found"


def test_task_events_on_pub(daemon):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"task")
    sub.connect(daemon.events)
    try:
        with daemon.client() as c:
            # a slow joiner misses the first events: send tasks until one is seen
            seen = {}
            for _ in range(50):
                _, _, result = c.task("echo", "events")
                while sub.poll(200):
                    topic, body = sub.recv_multipart()
                    ev = msgpack.unpackb(body, raw=False)
                    seen.setdefault(ev["task"], []).append(ev["status"])
                if result["task"] in seen:
                    break
        assert seen[result["task"]] == ["accepted", "running", "done"]
    finally:
        sub.close(0)


def test_nexusctl_send_tasks_history_agents(daemon):
    r = daemon.ctl("send", "mem", "Hello", "--session", "ctl-s")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    r = daemon.ctl("history", "ctl-s", "--json")
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)
    assert [m["role"] for m in h["messages"]] == ["user", "assistant"]
    assert h["messages"][0]["content"] == "Hello"
    r = daemon.ctl("tasks", "--agent", "mem", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tasks"][0]["agent"] == "mem"
    r = daemon.ctl("agents", "--json")
    assert r.returncode == 0, r.stderr
    names = [a["name"] for a in json.loads(r.stdout)["agents"]]
    assert names == sorted(a["name"] for a in AGENTS)
