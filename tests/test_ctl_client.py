"""nexusctl's daemon commands on their own: no daemon at the endpoint (one sentence, exit 2,
bounded time, for every command), keygen (loadable files, CURVE works with them, no
overwrite), argument errors (exit 2), and the client's side of schemas/protocol.md against a
peer on a real loopback socket that answers from a script: streaming, --json, error replies
(exit 1), stale replies skipped by id. End-to-end tests against nexusd itself live with nexusd.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import msgpack
import pytest
import zmq

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")
NOT_RUNNING = "no nexusd answering at"


def run(*args, env=None, timeout=20):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    full_env.update(env or {})
    return subprocess.run([NEXUSCTL, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="nx-ctl-client-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- no daemon --------------------------------------------------------------------------------

NOT_RUNNING_COMMANDS = [
    ["ping"], ["status"], ["status", "--json"], ["agents"], ["models", "--json"],
    ["send", "writer", "hello"], ["load", "m"], ["evict", "m"], ["pin", "m"], ["unpin", "m"],
    ["tasks", "--limit", "5"], ["history", "s1"], ["status", "--watch", "--count", "3"],
]


def test_not_running_is_one_sentence_and_exit_2():
    """Every daemon command, all at once (each waits out its short ping probe)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([NEXUSCTL, *args, "--endpoint", endpoint], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in NOT_RUNNING_COMMANDS]
    try:
        for args, proc in zip(NOT_RUNNING_COMMANDS, procs):
            out, err = proc.communicate(timeout=10)  # a bound against hanging, not a timing claim
            assert proc.returncode == 2, (args, err)
            assert err.strip() == (f"nexusctl: {NOT_RUNNING} {endpoint} "
                                   "(start one with `make run`)"), args
            assert out == "", args
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_not_running_endpoint_from_environment():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    r = run("ping", env={"NEXUS_ENDPOINT": endpoint})
    assert r.returncode == 2
    assert f"{NOT_RUNNING} {endpoint} " in r.stderr


def test_not_running_ipc(tmp):
    endpoint = f"ipc://{tmp}/nothing.sock"
    r = run("status", "--endpoint", endpoint)
    assert r.returncode == 2
    assert f"{NOT_RUNNING} {endpoint}" in r.stderr


def test_a_peer_that_never_answers_is_not_a_hang():
    """Something accepts the connection but never replies: the ping probe still gives up."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        r = run("status", "--endpoint", f"tcp://127.0.0.1:{port}")
        assert r.returncode == 2
        assert NOT_RUNNING in r.stderr
    finally:
        router.close()
        ctx.term()


# ---- arguments ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["send"], "missing argument"),
    (["send", "writer"], "missing argument"),
    (["send", "a", "b", "c"], "unexpected argument 'c'"),
    (["status", "--bogus"], "unknown option '--bogus'"),
    (["status", "--count", "2"], "--count only applies with --watch"),
    (["status", "--watch", "--count", "0"], "--count: '0'"),
    (["tasks", "--limit", "0"], "--limit: '0'"),
    (["tasks", "--limit", "1001"], "--limit: '1001'"),
    (["tasks", "--limit"], "--limit needs a value"),
    (["send", "a", "b", "--timeout", "-1"], "--timeout"),
    (["agents", "--session", "x"], "unknown option '--session'"),
    (["load"], "missing argument"),
    (["history"], "missing argument"),
    (["ping", "--key", "/nonexistent"], "CURVE needs both"),
    (["keygen"], "missing DIR"),
    (["keygen", "a", "b"], "unexpected argument"),
    (["keygen", "d", "--name", "x/y"], "plain file name"),
])
def test_usage_errors_exit_2(args, needle):
    r = run(*args)
    assert r.returncode == 2, r
    assert needle in r.stderr
    assert "usage: nexusctl" in r.stderr


def test_malformed_endpoint_exit_2():
    r = run("ping", "--endpoint", "not-an-endpoint")
    assert r.returncode == 2
    assert "not-an-endpoint" in r.stderr


# ---- keygen -------------------------------------------------------------------------------------

def read_cert(path):
    """czmq's certificate format (ZPL): the curve section's public-key / secret-key."""
    keys = {}
    for line in open(path):
        line = line.strip()
        for k in ("public-key", "secret-key"):
            if line.startswith(k):
                keys[k] = line.split("=", 1)[1].strip().strip('"')
    return keys


def test_keygen_writes_loadable_pair_and_refuses_overwrite(tmp):
    r = run("keygen", tmp, "--name", "app")
    assert r.returncode == 0, r.stderr
    public = r.stdout.strip()
    assert len(public) == 40  # Z85 of 32 bytes
    pub = read_cert(os.path.join(tmp, "app.key"))
    sec = read_cert(os.path.join(tmp, "app.key_secret"))
    assert pub["public-key"] == public and "secret-key" not in pub
    assert sec["public-key"] == public and len(sec["secret-key"]) == 40
    assert os.stat(os.path.join(tmp, "app.key_secret")).st_mode & 0o077 == 0
    # the secret part really is the public part's secret (libzmq derives one from the other)
    assert zmq.curve_public(sec["secret-key"].encode()).decode() == public

    before = open(os.path.join(tmp, "app.key_secret")).read()
    again = run("keygen", tmp, "--name", "app")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert open(os.path.join(tmp, "app.key_secret")).read() == before


def test_keygen_default_name_and_missing_dir(tmp):
    assert run("keygen", tmp).returncode == 0
    assert os.path.exists(os.path.join(tmp, "client.key"))
    r = run("keygen", os.path.join(tmp, "nope"))
    assert r.returncode == 1
    assert "not a directory" in r.stderr


def test_public_only_certificate_is_refused_as_client_key(tmp):
    run("keygen", tmp, "--name", "server")
    os.remove(os.path.join(tmp, "server.key_secret"))
    run("keygen", tmp, "--name", "other")
    r = run("ping", "--key", os.path.join(tmp, "server.key"),
            "--server-key", os.path.join(tmp, "other.key"))
    assert r.returncode == 2
    assert "holds no secret key" in r.stderr


# ---- the client's side of the protocol, against a scripted peer ---------------------------------

class Peer:
    """A ROUTER on loopback that answers each request with the replies `script(request)`
    returns (a list of maps; "id" is filled in from the request unless given)."""

    def __init__(self, script, curve_secret=None):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve_secret:
            self.sock.curve_server = True
            self.sock.curve_secretkey = curve_secret
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.script = script
        self.requests = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, frame = self.sock.recv_multipart()
            req = msgpack.unpackb(frame, raw=False)
            self.requests.append(req)
            for reply in self.script(req):
                reply.setdefault("id", req.get("id"))
                self.sock.send_multipart([ident, msgpack.packb(reply)])

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        self.ctx.term()


def pong(req):
    return [{"op": "pong", "version": "0.1"}]


@pytest.fixture
def peer_factory():
    peers = []

    def make(script, **kw):
        p = Peer(script, **kw)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


def task_script(req):
    if req["op"] == "ping":
        return pong(req)
    assert req["op"] == "task"
    replies = [{"op": "accepted", "task": 7}]
    if req.get("stream"):
        replies += [{"op": "token", "task": 7, "text": t} for t in ["Hel", "lo, ", "wörld"]]
    replies.append({"op": "result", "task": 7, "output": "Hello, wörld", "agent": req["agent"],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4},
                    "timings": {"queue_ms": 1.0, "swap_ms": 0.0, "ttft_ms": 2.5,
                                "total_ms": 9.0}})
    return replies


def test_send_streams_pieces(peer_factory):
    p = peer_factory(task_script)
    r = run("send", "writer", "say hi", "--session", "s1", "--endpoint", p.endpoint)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hello, wörld\n"
    task = [q for q in p.requests if q["op"] == "task"][0]
    assert task["agent"] == "writer" and task["input"] == "say hi"
    assert task["session"] == "s1" and task["stream"] is True
    assert task["id"] != [q for q in p.requests if q["op"] == "ping"][0]["id"]


def test_send_no_stream_json(peer_factory):
    p = peer_factory(task_script)
    r = run("send", "writer", "x", "--no-stream", "--json", "--endpoint", p.endpoint)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["op"] == "result" and out["output"] == "Hello, wörld"
    assert out["usage"]["completion_tokens"] == 4 and out["timings"]["ttft_ms"] == 2.5
    assert [q for q in p.requests if q["op"] == "task"][0]["stream"] is False


def test_error_reply_exit_1(peer_factory):
    def script(req):
        if req["op"] == "ping":
            return pong(req)
        return [{"op": "error", "code": "unknown_agent", "message": "no agent 'nope'"}]
    p = peer_factory(script)
    for args in (["send", "nope", "hi"], ["load", "m"], ["history", "s"], ["agents", "--json"]):
        r = run(*args, "--endpoint", p.endpoint)
        assert r.returncode == 1, (args, r)
        assert r.stderr.strip() == "nexusctl: unknown_agent: no agent 'nope'"


def test_stale_replies_are_skipped_by_id(peer_factory):
    def script(req):
        if req["op"] == "ping":
            return pong(req)
        return [{"op": "models", "id": 999999, "models": []},  # someone else's
                {"op": "models", "models": [{"name": "m1", "state": "resident",
                                              "bytes": 1200000000, "agents": ["a", "b"]}]}]
    p = peer_factory(script)
    r = run("models", "--json", "--endpoint", p.endpoint)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["models"][0]["name"] == "m1"


STATUS = {"op": "status",
          "pool": {"device": "cpu", "total_bytes": 8000000000, "used_bytes": 2000000000,
                   "free_bytes": 6000000000},
          "host_cache": {"budget_bytes": 0, "used_bytes": 0, "entries": 0},
          "models": [{"name": "qwen3-0.6b", "path": "/m/qwen3-0.6b", "state": "resident",
                      "bytes": 1192000000, "agents": ["writer", "critic"], "pinned": False,
                      "priority": 0, "last_used_ms_ago": 1500.0, "loads": 2,
                      "last_swap_ms": 812.0, "queue": 1, "running": 0}],
          "agents": []}


def test_status_table_and_json(peer_factory):
    p = peer_factory(lambda req: pong(req) if req["op"] == "ping" else [dict(STATUS)])
    r = run("status", "--endpoint", p.endpoint)
    assert r.returncode == 0, r.stderr
    assert "cpu" in r.stdout and "2.000 GB / 8.000 GB" in r.stdout and " 25%" in r.stdout
    header = [line for line in r.stdout.splitlines() if line.startswith("MODEL")][0]
    row = [line for line in r.stdout.splitlines() if line.startswith("qwen3-0.6b")][0]
    assert row.index("resident") == header.index("STATE")  # aligned
    assert "writer, critic" in row and "812 ms" in row
    j = run("status", "--json", "--endpoint", p.endpoint)
    out = json.loads(j.stdout)
    assert out["pool"]["total_bytes"] == 8000000000
    assert out["models"][0]["agents"] == ["writer", "critic"]


def test_status_watch_count(peer_factory):
    p = peer_factory(lambda req: pong(req) if req["op"] == "ping" else [dict(STATUS)])
    r = run("status", "--watch", "--count", "2", "--json", "--endpoint", p.endpoint)
    assert r.returncode == 0, r.stderr
    assert len([json.loads(line) for line in r.stdout.splitlines()]) == 2


def test_tasks_request_fields(peer_factory):
    def script(req):
        if req["op"] == "ping":
            return pong(req)
        return [{"op": "tasks", "tasks": [{"task": 3, "agent": "writer", "status": "done",
                                            "session": None, "created_at": 1700000000.5,
                                            "timings": {"queue_ms": 1, "swap_ms": 0,
                                                        "ttft_ms": 5, "total_ms": 40},
                                            "usage": {}, "error": None}]}]
    p = peer_factory(script)
    r = run("tasks", "--agent", "writer", "--limit", "5", "--endpoint", p.endpoint)
    assert r.returncode == 0, r.stderr
    q = [q for q in p.requests if q["op"] == "tasks"][0]
    assert q["agent"] == "writer" and q["limit"] == 5
    assert "done" in r.stdout and "40 ms" in r.stdout


def test_curve_with_keygen_keys(peer_factory, tmp):
    run("keygen", tmp, "--name", "server")
    run("keygen", tmp, "--name", "app")
    server_secret = read_cert(os.path.join(tmp, "server.key_secret"))["secret-key"]
    p = peer_factory(pong, curve_secret=server_secret.encode())
    env = {"NEXUS_CLIENT_KEY": os.path.join(tmp, "app.key_secret"),
           "NEXUS_SERVER_KEY": os.path.join(tmp, "server.key")}
    r = run("ping", "--endpoint", p.endpoint, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"pong from {p.endpoint}: nexusd 0.1")
    # without keys the CURVE server never completes the handshake: "not answering"
    r = run("ping", "--endpoint", p.endpoint)
    assert r.returncode == 2
    assert NOT_RUNNING in r.stderr
