"""test_daemon_errors.py — every bad input of schemas/protocol.md's error table against one real
nexusd: garbage bytes, not a map, non-string keys, an unknown or missing op, missing and
mistyped fields, an unknown agent or route entry, an unknown model, a frame over
max_message_bytes, a multi-frame message, a full queue (busy), bad params. Each is answered
with its stable code (echoing the request's id when there was one) and the daemon keeps
serving: a ping and a real task still work after each."""
import msgpack
import pytest
import zmq

import daemon_util as du

MAX_MESSAGE = 64 * 1024


@pytest.fixture(scope="module")
def daemon():
    agents = [du.agent("echo", "tq"),
              du.agent("narrow", "tq", generation={"max_tokens": 400}, limits={"queue": 1})]
    with du.running(agents, conf={"max_message_bytes": "64KiB", "context": 1024}) as d:
        yield d


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c
        # after every bad input: the daemon still answers and still runs tasks
        assert c.call({"op": "ping"})["op"] == "pong"
        _, _, result = c.task("echo", "still here")
        assert result["op"] == "result", result


def error_of(client, frame, timeout=10):
    client.send_raw(frame)
    reply = client.recv(timeout)
    assert reply["op"] == "error", reply
    assert isinstance(reply["message"], str) and reply["message"]
    return reply


@pytest.mark.parametrize("frame", [b"\xc1\xc1garbage", b"", b"\x92\x01\x02", b"\xa5hello",
                                   msgpack.packb({1: "op"}), b"\x81\xa2op"])
def test_not_one_msgpack_map(client, frame):
    assert error_of(client, frame)["code"] == "bad_msgpack"


def test_unknown_and_missing_op(client):
    r = error_of(client, msgpack.packb({"op": "fly", "id": 7}))
    assert r["code"] == "unknown_op" and r["id"] == 7
    r = error_of(client, msgpack.packb({"id": "x"}))
    assert r["code"] == "unknown_op" and r["id"] == "x"


@pytest.mark.parametrize("request_", [
    {"op": "task", "input": "no agent"},
    {"op": "task", "agent": "echo"},
    {"op": "task", "agent": 5, "input": "x"},
    {"op": "task", "agent": "echo", "input": "x", "stream": "yes"},
    {"op": "task", "agent": "echo", "input": "x", "params": {"max_tokens": -1}},
    {"op": "task", "agent": "echo", "input": "x", "params": {"temperature": "hot"}},
    {"op": "task", "agent": "echo", "input": "x", "route": "other"},
    {"op": "cancel"},
    {"op": "history"},
    {"op": "load"},
    {"op": "tasks", "limit": 5000},
])
def test_bad_request_names_the_field(client, request_):
    r = error_of(client, msgpack.packb({**request_, "id": 41}))
    assert r["code"] == "bad_request" and r["id"] == 41


def test_unknown_agent_and_route_entry(client):
    r = client.call({"op": "task", "agent": "nobody", "input": "x"})
    assert r["op"] == "error" and r["code"] == "unknown_agent" and "nobody" in r["message"]
    r = client.call({"op": "task", "agent": "echo", "input": "x", "route": ["echo", "ghost"]})
    assert r["code"] == "unknown_agent" and "ghost" in r["message"]


def test_unknown_model(client):
    r = client.call({"op": "load", "model": "no-such-model"})
    assert r["op"] == "error" and r["code"] == "unknown_model"


def test_too_large(client):
    big = msgpack.packb({"op": "task", "agent": "echo", "input": "x" * (MAX_MESSAGE + 10),
                         "id": 9})
    r = error_of(client, big)
    assert r["code"] == "too_large"


def test_multi_frame_message(client):
    client.sock.send_multipart([msgpack.packb({"op": "ping"}), msgpack.packb({"op": "ping"})])
    r = client.recv(10)
    assert r["op"] == "error" and r["code"] == "bad_msgpack"


def test_full_queue_is_busy(client):
    # queue 1: a burst of tasks for the same agent, read by the router in one go, finds the
    # first still queued or running (400 tokens), so later ones are refused busy
    ids = [client.send({"op": "task", "agent": "narrow", "input": f"burst {i}"})
           for i in range(12)]
    final = {}
    while len(final) < len(ids):
        r = client.recv(60)
        if r["op"] in ("result", "error"):
            final[r["id"]] = r
    codes = [final[i]["op"] if final[i]["op"] == "result" else final[i]["code"] for i in ids]
    assert codes[0] == "result"
    assert "busy" in codes, codes
    assert set(codes) <= {"result", "busy"}, codes
    busy = next(final[i] for i in ids if final[i].get("code") == "busy")
    assert "narrow" in busy["message"] and "task" not in busy


def test_req_socket_gets_errors_too(daemon):
    with daemon.client(kind=zmq.REQ) as c:
        c.send_raw(b"\xff\xfe")
        r = c.recv(10)
        assert r["op"] == "error" and r["code"] == "bad_msgpack"
        assert c.call({"op": "ping"})["op"] == "pong"
