"""test_daemon_edges.py — edge cases a demanding client hits, against one real nexusd: error
messages that name long non-ASCII input (cut to fit, never mid-character), and a request's raw
bytes echoed in a message. Every reply must decode as msgpack with UTF-8 strings (a strict
client, msgpack raw=False, refuses anything else)."""
import msgpack
import pytest

import daemon_util as du


@pytest.fixture(scope="module")
def daemon():
    with du.running([du.agent("echo", "tq")]) as d:
        yield d


def strict_reply(client):
    """The next reply, decoded strictly: a str that is not UTF-8 raises here."""
    frames = client.sock.recv_multipart()
    return msgpack.unpackb(frames[-1], raw=False)


LONG = "a" + "é" * 80  # 161 bytes: any byte cut at an even length splits a character


@pytest.mark.parametrize("request_,code", [
    ({"op": "task", "agent": LONG, "input": "x"}, "unknown_agent"),
    ({"op": "task", "agent": "echo", "input": "x", "route": [LONG]}, "unknown_agent"),
    ({"op": "history", "session": LONG}, "not_found"),
    ({"op": "load", "model": LONG}, "unknown_model"),
    ({"op": LONG}, "unknown_op"),
    ({"op": "task", "agent": "echo", "input": "x", "params": {LONG: 1}}, "bad_request"),
])
def test_error_naming_long_unicode_is_valid_utf8(daemon, request_, code):
    with daemon.client() as c:
        c.send(request_)
        r = strict_reply(c)
        assert r["op"] == "error" and r["code"] == code, r
        assert c.call({"op": "ping"})["op"] == "pong"


def test_error_echoing_raw_bytes_is_valid_utf8(daemon):
    # a params key that is not UTF-8 (keys are not text-checked before they are named)
    frame = msgpack.packb({"op": "task", "id": 3, "agent": "echo", "input": "x",
                           "params": {b"\xff\xfe": 1}}, use_bin_type=False)
    with daemon.client() as c:
        c.send_raw(frame)
        r = strict_reply(c)
        assert r["op"] == "error" and r["code"] == "bad_request" and r["id"] == 3, r
