"""test_daemon_owner.py — only the client that submitted a task may cancel it. Task ids are
sequential, so without this any client could cancel anyone's work. Two real DEALER clients on
one nexusd: the stranger's cancel is answered not_found exactly as an unknown id is (the id
tells nothing) and the task runs on; the owner's cancel works. With CURVE the owner is the
client's public key: the same key on a NEW connection (a new routing identity) may cancel, a
different allowed key may not."""
import os
import shutil
import tempfile

import pytest
import zmq
import zmq.auth

import daemon_util as du

LONG = du.agent("long", "tq", generation={"max_tokens": 3000}, limits={"queue": 8})


def start_running(client):
    """Send a streamed long task; read until its first token. Returns (request id, task)."""
    rid = client.send({"op": "task", "agent": "long", "input": "go on and on", "stream": True})
    task = None
    while True:
        r = client.recv(60)
        assert r["id"] == rid and r["op"] in ("accepted", "token"), r
        if r["op"] == "accepted":
            task = r["task"]
        else:
            return rid, task


def final_of(client, rid, timeout=120):
    while True:
        r = client.recv(timeout)
        if r.get("id") == rid and r["op"] not in ("token", "accepted"):
            return r


def as_unknown(reply, task):
    """The answer a stranger gets: not_found, worded as for an id nobody has."""
    return (reply["op"] == "error" and reply["code"] == "not_found"
            and reply["message"] == f"task {task} is not queued or running" and "task" not in reply)


@pytest.fixture(scope="module")
def daemon():
    with du.running([LONG], conf={"context": 4096}) as d:
        yield d


def test_a_stranger_cannot_cancel_and_learns_nothing(daemon):
    with daemon.client() as owner, daemon.client() as stranger:
        rid, task = start_running(owner)
        unknown = stranger.call({"op": "cancel", "task": task + 1000})
        assert as_unknown(unknown, task + 1000), unknown
        refused = stranger.call({"op": "cancel", "task": task})
        assert as_unknown(refused, task), refused  # before the fix: "canceled"
        # the task runs on: the owner still gets tokens, and its row is still running
        r = owner.recv(30)
        assert r["id"] == rid and r["op"] == "token", r
        row = owner.call({"op": "tasks", "agent": "long", "limit": 1})["tasks"][0]
        assert row["task"] == task and row["status"] == "running", row
        # the owner may
        r = owner.call({"op": "cancel", "task": task})
        assert r["op"] == "canceled" and r["task"] == task, r
        end = final_of(owner, rid)
        assert end["op"] == "error" and end["code"] == "canceled", end


def test_a_req_socket_owns_its_tasks_too(daemon):
    """REQ's envelope has a delimiter frame: the owner is still its identity."""
    with daemon.client(kind=zmq.REQ) as req, daemon.client() as stranger:
        req.send({"op": "task", "agent": "long", "input": "req task"})
        accepted = req.recv(30)
        assert accepted["op"] == "accepted", accepted
        task = accepted["task"]
        assert as_unknown(stranger.call({"op": "cancel", "task": task}), task)
        r = req.call({"op": "cancel", "task": task})
        assert r["op"] == "canceled" and r["task"] == task, r


def test_curve_owner_is_the_public_key():
    home = tempfile.mkdtemp(prefix="nx-owner-")
    keys, mine, clients = (os.path.join(home, n) for n in ("keys", "mine", "clients"))
    for p in (keys, mine, clients):
        os.makedirs(p)
    zmq.auth.create_certificates(keys, "server")
    zmq.auth.create_certificates(mine, "alice")
    zmq.auth.create_certificates(mine, "bob")
    for name in ("alice", "bob"):
        shutil.copy(os.path.join(mine, f"{name}.key"), clients)
    d = du.Daemon([LONG], home=home, conf={
        "context": 4096,
        "curve": {"secret_key": os.path.join(keys, "server.key_secret"), "clients": clients}})
    server_public, _ = zmq.auth.load_certificate(os.path.join(keys, "server.key"))

    def connect(name):
        c = du.Client(d.endpoint, curve=(
            *zmq.auth.load_certificate(os.path.join(mine, f"{name}.key_secret")), server_public))
        opened.append(c)
        du.wait_for(lambda: try_ping(c), timeout=30)
        return c

    opened = []
    try:
        d.start_no_ping()
        alice = connect("alice")
        bob = connect("bob")
        rid, task = start_running(alice)
        assert as_unknown(bob.call({"op": "cancel", "task": task}), task)
        # alice again, on a new connection: another routing identity, the same key
        alice_again = connect("alice")
        r = alice_again.call({"op": "cancel", "task": task})
        assert r["op"] == "canceled" and r["task"] == task, r
        end = final_of(alice, rid)
        assert end["op"] == "error" and end["code"] == "canceled", end
    finally:
        for c in opened:
            c.close()
        d.stop()
        d.close()


def try_ping(client):
    try:
        return client.call({"op": "ping"}, timeout=0.5)
    except (TimeoutError, zmq.Again):
        return None
