"""test_daemon_swap.py — residency through a real nexusd whose pool holds one tiny model (plus
one sequence) at a time: tasks for two agents on two models swap them in and out, `status`
shows the states (resident, host) and load counts change, every change is published on PUB
as a `model` event and recorded, load/evict/pin/unpin answer when done, and `nexusctl status
--json` shows the same tiers.

`make emu-test` also runs it on the CPU emulation of CUDA (NEXUS_TEST_DEVICE=cuda): there a
resident tiny model takes four 32 MiB chunks (weights, the engine's scratch, one KV), so a
160 MiB pool holds one."""
import json

import msgpack
import pytest
import zmq

import daemon_util as du


POOL_MIB = 4 if du.DEVICE == "cpu" else 160


@pytest.fixture(scope="module")
def daemon():
    agents = [du.agent("qa", "tq"), du.agent("la", "tl")]
    with du.running(agents, conf={"pool": f"{POOL_MIB}MiB", "host_cache": "8MiB",
                                "max_batch": 2, "context": 512}) as d:
        yield d


def states(client):
    st = client.call({"op": "status"})
    assert st["pool"]["device"] == du.DEVICE and st["pool"]["total_bytes"] == POOL_MIB << 20
    return {m["name"]: m for m in st["models"]}


def test_tasks_swap_models_and_publish_events(daemon):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"model")
    sub.connect(daemon.events)
    try:
        with daemon.client() as c:
            # the subscription is live once a load shows up: run qa until its events come
            events = []
            for _ in range(40):
                c.call({"op": "evict", "model": "tq"})
                c.task("qa", "warm")
                while sub.poll(200):
                    events.append(msgpack.unpackb(sub.recv_multipart()[1], raw=False))
                if any(e["model"] == "tq" and e["state"] == "resident" for e in events):
                    break
            m = states(c)
            assert m["tq"]["state"] == "resident" and m["tl"]["state"] in ("disk", "host")
            loads_tq = m["tq"]["loads"]
            events.clear()

            _, _, r = c.task("la", "swap to llama")
            assert r["op"] == "result", r
            m = states(c)
            assert m["tl"]["state"] == "resident" and m["tq"]["state"] == "host"
            assert m["tl"]["agents"] == ["la"] and m["tq"]["agents"] == ["qa"]

            _, _, r = c.task("qa", "and back")
            assert r["op"] == "result", r
            m = states(c)
            assert m["tq"]["state"] == "resident" and m["tl"]["state"] == "host"
            assert m["tq"]["loads"] == loads_tq + 1 and m["tq"]["last_swap_ms"] >= 0

            while sub.poll(500):
                events.append(msgpack.unpackb(sub.recv_multipart()[1], raw=False))
    finally:
        sub.close(0)
    seq = [(e["model"], e["state"]) for e in events]
    for step in [("tq", "evicting"), ("tq", "host"), ("tl", "loading"), ("tl", "resident"),
                 ("tl", "evicting"), ("tl", "host"), ("tq", "loading"), ("tq", "resident")]:
        assert step in seq, seq
    assert seq.index(("tl", "loading")) < seq.index(("tl", "resident"))
    assert all(set(e) == {"model", "state", "bytes", "ms", "reason"} for e in events)
    evicted = [e for e in events if e["state"] == "host"]
    assert all(e["reason"] == "pressure" for e in evicted)


def test_commands_answer_when_done(daemon):
    with daemon.client() as c:
        r = c.call({"op": "load", "model": "tl"})
        assert r["op"] == "ok" and r["model"] == "tl" and r["state"] == "resident"
        r = c.call({"op": "evict", "model": "tl"})
        assert r["op"] == "ok" and r["state"] in ("host", "disk")
        assert states(c)["tl"]["state"] == r["state"]
        r = c.call({"op": "pin", "model": "tq"})
        assert r["op"] == "ok"
        assert states(c)["tq"]["pinned"] is True
        r = c.call({"op": "unpin", "model": "tq"})
        assert r["op"] == "ok"
        assert states(c)["tq"]["pinned"] is False
        models = c.call({"op": "models"})
        assert models["op"] == "models" and {m["name"] for m in models["models"]} == {"tq", "tl"}


def test_nexusctl_status_json_shows_tiers(daemon):
    with daemon.client() as c:
        c.task("qa", "first")
    r = daemon.ctl("status", "--json")
    assert r.returncode == 0, r.stderr
    before = {m["name"]: m["state"] for m in json.loads(r.stdout)["models"]}
    with daemon.client() as c:
        c.task("la", "second")
    r = daemon.ctl("status", "--json")
    assert r.returncode == 0, r.stderr
    after = {m["name"]: m["state"] for m in json.loads(r.stdout)["models"]}
    assert before["tq"] == "resident" and after["tq"] in ("host", "disk")
    assert before["tl"] in ("host", "disk") and after["tl"] == "resident"


COLLAPSED = "in 2 MiB pages"  # the loader's debug line when a model's collapse is done


@pytest.mark.skipif(du.DEVICE != "cpu", reason="only a CPU pool has pages to collapse")
@pytest.mark.parametrize("setting", ["on", None])
def test_weights_collapse_after_a_load_when_on(monkeypatch, setting):
    """NEXUS_HUGEPAGES=on: the loader backs a loaded model's weights with 2 MiB pages once
    nothing is decoding (its debug line names the model); by default it never does. Either way
    the model answers, before and after, and is evicted and loaded again cleanly."""
    monkeypatch.setenv("NEXUS_LOG", "debug")
    if setting:
        monkeypatch.setenv("NEXUS_HUGEPAGES", setting)
    else:
        monkeypatch.delenv("NEXUS_HUGEPAGES", raising=False)
    with du.running([du.agent("qa", "tq")], conf={"pool": "64MiB"}) as d, d.client() as c:
        first = c.task("qa", "hello")[2]
        assert first["op"] == "result", first
        if setting == "on":
            du.wait_for(lambda: COLLAPSED in d.read_log(), timeout=30)
            line = [ln for ln in d.read_log().splitlines() if COLLAPSED in ln][0]
            assert "tq" in line, line
        assert c.call({"op": "evict", "model": "tq"})["op"] == "ok"
        again = c.task("qa", "hello")[2]
        assert again["op"] == "result" and again["output"] == first["output"], again
        if setting is None:
            assert COLLAPSED not in d.read_log()
