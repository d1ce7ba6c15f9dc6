"""test_daemon_wire.py — the wire under pressure, against a real nexusd (tests/daemon_util.py):

- a client that reads nothing while its streamed tasks run, its queue in ZeroMQ filled (a small
  send_hwm, a small RCVHWM and socket buffer on its side), then reads everything: every request
  has its `accepted` and its `result`, in order, and its tokens (merged or not) make the output;
- a client that leaves with replies owed: its tasks run to their end and are stored; the
  daemon drops only what was owed to it and serves on;
- requests far over max_message_bytes (9 MB, 40 MB) are answered `too_large` and the same
  client goes on; past max_message_hard_bytes the connection is closed unanswered, ZeroMQ
  reconnects the client and it goes on (schemas/protocol.md: Message size);
- max_message_hard_bytes below max_message_bytes is a configuration error naming the key.
"""
import collections
import subprocess

import msgpack
import pytest
import zmq

import daemon_util as du

STREAMS = 150  # streamed tasks sent at once by the slow reader
# The id is echoed in every reply, token messages included: a 2 KB id makes each token ~2 KB,
# so the replies outgrow what loopback TCP buffers (a few MB) as well as ZeroMQ's queues.
ID_PAD = 2000
SLOW = [du.agent("story", "tq", generation={"max_tokens": 48}, limits={"queue": 1000})]
SLOW_CONF = {"send_hwm": 8}


def slow_reader(endpoint):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.rcvhwm = 4
    s.rcvbuf = 4096
    s.connect(endpoint)
    return s


def send_streams(sock, tag):
    ids = [f"{tag}{i:04d}-" + "x" * ID_PAD for i in range(STREAMS)]
    for rid in ids:
        sock.send(msgpack.packb({"op": "task", "agent": "story", "input": f"tell story {rid[:8]}",
                                 "stream": True, "id": rid}))
    return ids


def router_status(client):
    return client.call({"op": "status"})["router"]


def stored(client, status=None):
    """The slow reader's tasks in the store (with `status`, only those)."""
    rows = client.call({"op": "tasks", "agent": "story", "limit": 1000})["tasks"]
    return [r for r in rows if status is None or r["status"] == status]


def test_a_slow_reader_gets_every_reply():
    with du.running(SLOW, conf=SLOW_CONF) as d:
        sock = slow_reader(d.endpoint)
        try:
            ids = send_streams(sock, "s")
            most_held = 0
            with d.client() as watcher:
                def all_ended():  # stored done and answered (or dropped, before the fix)
                    nonlocal most_held
                    router = router_status(watcher)
                    most_held = max(most_held, router.get("replies_held", 0))
                    return (router["tasks_in_flight"] == 0 and
                            len(stored(watcher, "done")) == len(ids))
                du.wait_for(all_ended, timeout=180, interval=0.2)
            # every task has ended while the client read nothing; now it reads all
            replies = collections.defaultdict(list)
            finals = 0
            while finals < len(ids) and sock.poll(10000):
                r = msgpack.unpackb(sock.recv(), raw=False)
                replies[r["id"]].append(r)
                finals += r["op"] in ("result", "error")
            missing = [rid[:5] for rid in ids if not replies[rid] or
                       replies[rid][-1]["op"] not in ("result", "error")]
            assert not missing, f"{len(missing)} of {len(ids)} requests got no final reply"
            for rid in ids:
                ops = [r["op"] for r in replies[rid]]
                assert ops[0] == "accepted" and ops[-1] == "result", ops
                assert set(ops[1:-1]) <= {"token"}, ops
                task = replies[rid][0]["task"]
                assert all(r["task"] == task for r in replies[rid])
                text = "".join(r["text"] for r in replies[rid][1:-1])
                assert text == replies[rid][-1]["output"], rid[:5]
            # the daemon held replies, and held few: one merged token entry per stream at a
            # time, besides each task's accepted and result
            assert 0 < most_held <= 3 * len(ids), most_held
        finally:
            sock.close(0)


def test_a_client_that_leaves_loses_only_its_replies():
    with du.running(SLOW, conf=SLOW_CONF) as d:
        sock = slow_reader(d.endpoint)
        send_streams(sock, "g")
        with d.client() as watcher:
            du.wait_for(lambda: len(stored(watcher)) == STREAMS and
                        router_status(watcher)["replies_held"] > 0, timeout=120)
            sock.close(0)  # gone with replies owed
            du.wait_for(lambda: router_status(watcher)["tasks_in_flight"] == 0, timeout=180)
            du.wait_for(lambda: router_status(watcher)["replies_held"] == 0, timeout=30)
            assert router_status(watcher)["replies_dropped"] > 0
            # its tasks ran to their end and are stored as usual
            rows = stored(watcher)
            assert len(rows) == STREAMS
            assert {r["status"] for r in rows} == {"done"}, [r["error"] for r in rows]
            _, tokens, result = watcher.task("story", "still serving", stream=True)
            assert result["op"] == "result" and "".join(t["text"] for t in tokens) == \
                result["output"]


@pytest.fixture(scope="module")
def default_limit():
    """max_message_bytes at its default (1 MiB), max_message_hard_bytes at its own (64 MiB)."""
    with du.running([du.agent("echo", "tq")], conf={"max_message_bytes": "1MiB"}) as d:
        yield d


@pytest.mark.parametrize("megabytes", [9, 40])
def test_large_requests_are_answered_too_large(default_limit, megabytes):
    with default_limit.client() as c:
        frame = msgpack.packb({"op": "task", "agent": "echo", "id": megabytes,
                               "input": "x" * (megabytes * 1000 * 1000)})
        c.send_raw(frame)
        r = c.recv(60)
        assert r["op"] == "error" and r["code"] == "too_large", r
        assert str(len(frame)) in r["message"] and "max_message_bytes" in r["message"]
        # the same client, on the same connection, goes on
        assert c.call({"op": "ping"})["op"] == "pong"
        _, _, result = c.task("echo", "still here")
        assert result["op"] == "result", result


def test_past_the_hard_cap_the_connection_is_closed_unanswered():
    conf = {"max_message_bytes": "64KiB", "max_message_hard_bytes": "1MiB"}
    with du.running([du.agent("echo", "tq")], conf=conf) as d:
        with d.client() as c, d.client() as other:
            c.send_raw(msgpack.packb({"op": "ping", "id": "huge", "pad": "x" * (2 << 20)}))
            with pytest.raises(TimeoutError):
                c.recv(3)  # no answer: ZeroMQ closed the connection on the size prefix
            # ZeroMQ reconnects the same socket by itself; the next request is answered
            assert c.call({"op": "ping", "id": "after"}, timeout=10)["op"] == "pong"
            # just under the hard cap is still answered too_large
            c.send_raw(msgpack.packb({"op": "ping", "id": "big", "pad": "x" * (900 << 10)}))
            r = c.recv(10)
            assert r["op"] == "error" and r["code"] == "too_large", r
            assert other.call({"op": "ping"})["op"] == "pong"


def test_hard_cap_below_the_limit_is_a_config_error():
    d = du.Daemon([du.agent("echo", "tq")],
                  conf={"max_message_bytes": "2MiB", "max_message_hard_bytes": "1MiB"})
    try:
        r = subprocess.run([du.NEXUSD, "--config", d.config, "--check"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        out = r.stdout + r.stderr
        assert "field 'max_message_hard_bytes': expected at least max_message_bytes" in out, out
    finally:
        d.close()
