"""test_daemon_lifecycle.py — nexusd's start, stop and crash, for real:
kill -9 while tasks run, then a restart: every task that was accepted is accounted for (done,
or failed with "interrupted by a restart"); SIGTERM answers queued and running tasks
shutting_down and exits 0; `--check` passes a good configuration and names FILE:LINE:COL of a
bad one; a non-loopback listen without CURVE keys and a model larger than the pool are
refused at start-up; CURVE: an allowed client is served, others get nothing at all; nexusctl
with no daemon running exits 2."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import zmq
import zmq.auth

import daemon_util as du

LONG = du.agent("long", "tq", generation={"max_tokens": 3000}, limits={"queue": 100})


def run_nexusd(*args, timeout=30):
    return subprocess.run([du.NEXUSD, *args], capture_output=True, text=True, timeout=timeout)


def wait_running(client, rid_set, timeout=60):
    """Read replies until a token of one of these requests arrives (a task is running)."""
    deadline = time.monotonic() + timeout
    accepted = {}
    while time.monotonic() < deadline:
        r = client.recv(max(0.01, deadline - time.monotonic()))
        if r["id"] in rid_set and r["op"] == "accepted":
            accepted[r["id"]] = r["task"]
        if r["op"] == "token":
            return accepted
    raise TimeoutError("no task started")


def test_kill9_then_restart_accounts_for_every_task():
    d = du.Daemon([LONG], conf={"context": 4096, "max_batch": 2})
    try:
        d.start()
        with d.client() as c:
            rids = {c.send({"op": "task", "agent": "long", "input": f"t{i}", "stream": True})
                    for i in range(6)}
            accepted = wait_running(c, rids)
            # the rest of the accepted replies are already on their way: read them briefly
            end = time.monotonic() + 1.0
            while len(accepted) < len(rids) and time.monotonic() < end:
                try:
                    r = c.recv(0.2)
                except TimeoutError:
                    continue
                if r["op"] == "accepted":
                    accepted[r["id"]] = r["task"]
        d.kill()  # kill -9, mid-generation
        assert accepted, "nothing was accepted"
        d.start()
        with d.client() as c:
            rows = {r["task"]: r for r in c.call({"op": "tasks", "limit": 100})["tasks"]}
        for task in accepted.values():
            row = rows[task]  # durable before "accepted"
            assert row["status"] in ("done", "failed"), row
            if row["status"] == "failed":
                assert "interrupted by a restart" in row["error"], row
        assert any(rows[t]["status"] == "failed" for t in accepted.values())
        assert not [r for r in rows.values() if r["status"] in ("accepted", "running")]
        # and the restarted daemon serves
        with d.client() as c:
            assert c.call({"op": "ping"})["op"] == "pong"
    finally:
        d.close()


def test_sigterm_fails_queued_and_running_tasks_and_exits_0():
    d = du.Daemon([LONG], conf={"context": 4096, "max_batch": 1})
    try:
        d.start()
        with d.client() as c:
            rids = [c.send({"op": "task", "agent": "long", "input": f"t{i}", "stream": True})
                    for i in range(4)]
            wait_running(c, set(rids))
            d.proc.send_signal(signal.SIGTERM)
            final = {}
            end = time.monotonic() + 30
            while len(final) < len(rids) and time.monotonic() < end:
                try:
                    r = c.recv(0.5)
                except TimeoutError:
                    continue
                if r["op"] in ("result", "error"):
                    final[r["id"]] = r
            assert d.proc.wait(30) == 0, d.read_log()
        assert len(final) == len(rids), final
        codes = [final[i].get("code", "result") for i in rids]
        assert "shutting_down" in codes and set(codes) <= {"result", "shutting_down"}, codes
        d.start()
        with d.client() as c:
            rows = c.call({"op": "tasks"})["tasks"]
        assert len(rows) == 4 and all(r["status"] in ("done", "failed") for r in rows)
        assert all(r["status"] == "done" or r["error_code"] == "shutting_down"
                   for r in rows), rows
    finally:
        d.close()


def test_check_good_and_bad_yaml():
    d = du.Daemon([du.agent("echo", "tq")])
    try:
        r = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 0 and "OK" in r.stdout, r.stderr
        path = os.path.join(d.home, "agents", "echo.yaml")
        with open(path, "a") as f:
            f.write("limits:\n  queue: many\n")
        r = run_nexusd("--config", d.config, "--check")
        assert r.returncode == 1
        assert f"{path}:" in r.stderr and "queue" in r.stderr, r.stderr
        line_col = r.stderr.split(f"{path}:")[1].split(":")[:2]
        assert all(p.isdigit() for p in line_col), r.stderr  # FILE:LINE:COL
        r = run_nexusd("--config", d.config)  # and the daemon refuses to start on it
        assert r.returncode == 1 and path in r.stderr
    finally:
        d.close()


def test_usage_errors_exit_2():
    assert run_nexusd("--bogus").returncode == 2
    assert run_nexusd("--policy", "fifo").returncode == 2


def test_non_loopback_listen_without_keys_is_refused():
    d = du.Daemon([du.agent("echo", "tq")],
                  conf={"listen": f"tcp://0.0.0.0:{du.free_port()}"})
    try:
        r = run_nexusd("--config", d.config)
        assert r.returncode == 1
        assert "curve.secret_key" in r.stderr and "curve.clients" in r.stderr, r.stderr
    finally:
        d.close()


def test_model_larger_than_the_pool_is_refused():
    d = du.Daemon([du.agent("echo", "tq")], conf={"pool": "2MiB"})
    try:
        r = run_nexusd("--config", d.config)
        assert r.returncode == 1
        assert "tq" in r.stderr and "4194304" in r.stderr and "2097152" in r.stderr, r.stderr
    finally:
        d.close()


def test_curve_allowed_client_served_others_get_nothing():
    home = tempfile.mkdtemp(prefix="nx-curve-")
    keys, mine, clients = (os.path.join(home, n) for n in ("keys", "mine", "clients"))
    for p in (keys, mine, clients):
        os.makedirs(p)
    zmq.auth.create_certificates(keys, "server")       # server.key + server.key_secret
    zmq.auth.create_certificates(mine, "allowed")
    zmq.auth.create_certificates(mine, "stranger")
    shutil.copy(os.path.join(mine, "allowed.key"), clients)  # only its public certificate
    d = du.Daemon([du.agent("echo", "tq")], home=home, conf={
        "listen": f"tcp://127.0.0.2:{du.free_port()}",
        "events": f"tcp://127.0.0.2:{du.free_port()}",
        "curve": {"secret_key": os.path.join(keys, "server.key_secret"), "clients": clients}})
    server_public, _ = zmq.auth.load_certificate(os.path.join(keys, "server.key"))
    clients_ = []
    try:
        d.start_no_ping()
        allowed = du.Client(d.endpoint, curve=(
            *zmq.auth.load_certificate(os.path.join(mine, "allowed.key_secret")), server_public))
        stranger = du.Client(d.endpoint, curve=(
            *zmq.auth.load_certificate(os.path.join(mine, "stranger.key_secret")),
            server_public))
        plain = du.Client(d.endpoint)
        clients_ = [allowed, stranger, plain]
        assert du.wait_for(lambda: try_ping(allowed), timeout=30)["op"] == "pong"
        _, _, result = allowed.task("echo", "secret hello")
        assert result["op"] == "result"
        for c in (stranger, plain):
            # refused at the handshake: the send cannot even be queued (zmq.Again, once
            # ZeroMQ dropped the connection) or it goes out and nothing ever comes back
            with pytest.raises((TimeoutError, zmq.Again)):
                c.send({"op": "ping"})
                c.recv(1.5)
        assert d.proc.poll() is None  # still serving
        assert allowed.call({"op": "ping"})["op"] == "pong"
    finally:
        for c in clients_:
            c.close()
        d.close()


def try_ping(client):
    try:
        return client.call({"op": "ping"}, timeout=0.5)
    except (TimeoutError, zmq.Again):
        return None


def test_nexusctl_without_daemon_exits_2():
    r = subprocess.run([du.NEXUSCTL, "status", "--endpoint", f"tcp://127.0.0.1:{du.free_port()}",
                        "--timeout", "2"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() and "unknown command" not in r.stderr, r.stderr
