"""test_daemon_edges.py — edge cases a demanding client hits, against one real nexusd: error
messages that name long non-ASCII input (cut to fit, never mid-character), and a request's raw
bytes echoed in a message (every reply must decode as msgpack with UTF-8 strings: a strict
client, msgpack raw=False, refuses anything else); a cancel racing the task's end (a
"canceled" answer means the task ends canceled, never with a result)."""
import msgpack
import pytest

import daemon_util as du


@pytest.fixture(scope="module")
def daemon():
    agents = [du.agent("echo", "tq"), du.agent("twelve", "tq", generation={"max_tokens": 12})]
    with du.running(agents) as d:
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


def test_cancel_racing_the_end_is_answered_consistently(daemon):
    """Cancel sent the moment the last token arrives: the task's end is then on its way (or
    being committed). Either the cancel is refused (not_found: it already finished) and the
    task answers its result, or it is acknowledged and the task ends with error canceled;
    never "canceled" followed by a result."""
    with daemon.client() as c:
        _, tokens, result = c.task("twelve", "hello there", stream=True)
        assert result["op"] == "result", result
        last = len(tokens)  # greedy: every run streams the same pieces
        for _ in range(8):
            rid = c.send({"op": "task", "agent": "twelve", "input": "hello there",
                          "stream": True})
            seen, cid, cancel_reply, final, task = 0, None, None, None, None
            while final is None or cancel_reply is None:
                m = c.recv(10)
                if m.get("id") == rid and m["op"] == "accepted":
                    task = m["task"]
                elif m.get("id") == rid and m["op"] == "token":
                    seen += 1
                    if seen == last:
                        cid = c.send({"op": "cancel", "task": task})
                elif m.get("id") == rid:
                    final = m
                elif cid is not None and m.get("id") == cid:
                    cancel_reply = m
            if cancel_reply["op"] == "canceled":
                assert final["op"] == "error" and final["code"] == "canceled", final
            else:
                assert cancel_reply["code"] == "not_found", cancel_reply
                assert final["op"] == "result", final
            tasks = c.call({"op": "tasks", "limit": 1})["tasks"]
            assert tasks[0]["task"] == task
            assert tasks[0]["status"] == ("canceled" if final["op"] == "error" else "done")
