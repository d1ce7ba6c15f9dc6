"""nexusctl's daemon commands. Without a daemon: nothing at the endpoint (one sentence, exit 2,
bounded time, for every command), a peer that accepts the connection but never answers,
argument errors (exit 2), keygen (loadable files, no overwrite). Against a real nexusd (one per
module, tests/daemon_util.py: temp home, tiny synthesized models, free loopback ports): send
streaming and --json, error replies (exit 1, `nexusctl: CODE: MESSAGE`) including a full
queue, status (table, --json, --watch), agents, models, tasks, history, load/evict/pin/unpin
and the state they leave, ping; and CURVE end to end with `nexusctl keygen` keys.
"""
import json
import os
import pty
import select
import signal
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import zmq

import daemon_util as du

NEXUSCTL = du.NEXUSCTL
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


# ---- against a real nexusd --------------------------------------------------------------------

AGENTS = [
    du.agent("echo", "tq", description="greedy, 8 tokens"),
    du.agent("other", "tl"),
    du.agent("chain", "tq", next="other"),
    du.agent("mem", "tq", memory={"type": "session", "turns": 5}),
    # 3000 tokens take seconds on the tiny model: long enough to be caught running
    du.agent("narrow", "tq", generation={"max_tokens": 3000}, limits={"queue": 1}),
]
AGENT_MODELS = {"tq": ["chain", "echo", "mem", "narrow"], "tl": ["other"]}


@pytest.fixture(scope="module")
def daemon():
    with du.running(AGENTS, conf={"context": 4096}) as d:
        yield d


def ctl(daemon, *args, env=None, timeout=60):
    """nexusctl ARGS --endpoint (the daemon's), with no NEXUS_* from the caller's environment."""
    return run(*args, "--endpoint", daemon.endpoint, env=env, timeout=timeout)


def ctl_json(daemon, *args):
    r = ctl(daemon, *args, "--json")
    assert r.returncode == 0, (args, r.stderr)
    assert r.stdout.count("\n") == 1 and r.stderr == "", r
    return json.loads(r.stdout)


def last_task(daemon, agent):
    return ctl_json(daemon, "tasks", "--agent", agent, "--limit", "1")["tasks"][0]


def format_bytes(n):
    """nexusctl's byte format (nx_cli_format_bytes)."""
    if n >= 1e9:
        return f"{n / 1e9:.3f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def table(text):
    """A nexusctl table: (header line, {first cell: row line})."""
    lines = text.rstrip("\n").split("\n")
    return lines[0], {line.split("  ")[0]: line for line in lines[1:]}


def column(header, row, name):
    """The cell of row under header's column `name` (cells are separated by 2+ spaces)."""
    start = header.index(name)
    return row[start:].split("  ")[0]


def start_running(client, agent, text):
    """Send a streamed task and read until its first token: it is running. Returns
    (request id, task id)."""
    rid = client.send({"op": "task", "agent": agent, "input": text, "stream": True})
    task = None
    while True:
        r = client.recv(60)
        assert r["id"] == rid and r["op"] in ("accepted", "token"), r
        if r["op"] == "accepted":
            task = r["task"]
        else:
            return rid, task


def cancel_and_wait(client, rid, task):
    assert client.call({"op": "cancel", "task": task})["op"] == "canceled"
    while True:
        r = client.recv(60)
        if r["id"] == rid and r["op"] != "token":
            assert r["op"] == "error" and r["code"] == "canceled", r
            return


def test_send_prints_the_output_and_a_newline(daemon):
    r = ctl(daemon, "send", "echo", "stream this")
    assert r.returncode == 0 and r.stderr == "", r
    row = last_task(daemon, "echo")
    assert row["status"] == "done" and row["input"] == "stream this"
    assert row["output"] and r.stdout == row["output"] + "\n"


def test_send_streams_pieces_before_the_result(daemon):
    """The first bytes reach stdout while the task is still running; another client's cancel
    of it is refused (only the client that sent a task may cancel it: not_found), so the
    stream goes on to its end: the whole output and a newline, exit 0. (A cancel by the owner
    ending the stream: test_curve_with_keygen_keys.)"""
    proc = subprocess.Popen([NEXUSCTL, "send", "narrow", "go on", "--endpoint", daemon.endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert select.select([proc.stdout], [], [], 30)[0], "nothing streamed in 30 s"
        first = os.read(proc.stdout.fileno(), 1)
        assert first
        row = last_task(daemon, "narrow")
        assert row["status"] == "running", row  # output arrived before the task ended
        with daemon.client() as c:
            r = c.call({"op": "cancel", "task": row["task"]})
            assert r["op"] == "error" and r["code"] == "not_found", r
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    out = (first + rest).decode()
    row = ctl_json(daemon, "tasks", "--agent", "narrow", "--limit", "1")["tasks"][0]
    assert row["status"] == "done" and out == row["output"] + "\n", row


def interrupt_running_send(daemon):
    """Start `nexusctl send narrow`, SIGINT it once its task streams; (returncode, stderr,
    the task row as it was)."""
    proc = subprocess.Popen([NEXUSCTL, "send", "narrow", "go on", "--endpoint", daemon.endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert select.select([proc.stdout], [], [], 30)[0], "nothing streamed in 30 s"
        assert os.read(proc.stdout.fileno(), 1)
        row = last_task(daemon, "narrow")
        assert row["status"] == "running", row
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode(), row


def test_ctrl_c_cancels_the_task_on_the_daemon(daemon):
    """SIGINT to `nexusctl send` while its task runs cancels the task on the daemon (it does
    not go on generating for nobody), says so, and exits 130. A tiny model may finish its task
    between the check and the signal (then the run is an ordinary success): try again."""
    for _ in range(5):
        code, err, row = interrupt_running_send(daemon)
        if code == 0 and last_task(daemon, "narrow")["status"] == "done":
            continue  # finished before the signal landed
        break
    assert code == 130, err
    assert err.strip().endswith(f"nexusctl: canceled task {row['task']}"), err
    deadline = time.monotonic() + 10
    while last_task(daemon, "narrow")["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last_task(daemon, "narrow")["status"] == "canceled"


def test_send_no_stream_json_prints_the_result_object(daemon):
    out = ctl_json(daemon, "send", "echo", "json please", "--no-stream")
    assert out["op"] == "result" and out["agent"] == "echo"
    assert isinstance(out["task"], int) and isinstance(out["output"], str) and out["output"]
    assert out["usage"]["prompt_tokens"] > 0 and out["usage"]["completion_tokens"] > 0
    assert set(out["timings"]) == {"queue_ms", "swap_ms", "ttft_ms", "total_ms"}
    row = last_task(daemon, "echo")
    assert row["task"] == out["task"] and row["output"] == out["output"]
    # greedy: the streamed form of the same request prints the same text
    r = ctl(daemon, "send", "echo", "json please")
    assert r.stdout == out["output"] + "\n"


@pytest.mark.parametrize("args, request_, code", [
    (["send", "nope", "hi"], {"op": "task", "agent": "nope", "input": "hi"}, "unknown_agent"),
    (["load", "no-such-model"], {"op": "load", "model": "no-such-model"}, "unknown_model"),
    (["pin", "no-such-model", "--json"], {"op": "pin", "model": "no-such-model"},
     "unknown_model"),
    (["history", "no-such-session"], {"op": "history", "session": "no-such-session"},
     "not_found"),
])
def test_error_reply_is_code_and_message_exit_1(daemon, args, request_, code):
    with daemon.client() as c:
        expected = c.call(request_)
    assert expected["op"] == "error" and expected["code"] == code, expected
    r = ctl(daemon, *args)
    assert r.returncode == 1, r
    assert r.stdout == ""
    assert r.stderr == f"nexusctl: {code}: {expected['message']}\n"


def test_full_queue_is_busy(daemon):
    """narrow allows one task queued or running: while one runs, nexusctl is refused."""
    with daemon.client() as c:
        rid, task = start_running(c, "narrow", "hold the queue")
        try:
            r = ctl(daemon, "send", "narrow", "one more")
            assert r.returncode == 1, r
            assert r.stdout == ""
            assert r.stderr == ("nexusctl: busy: agent 'narrow' has 1 tasks queued or running "
                                "(limits.queue is 1)\n")
        finally:
            cancel_and_wait(c, rid, task)


def test_status_table_and_json(daemon):
    ctl(daemon, "load", "tq")
    status = ctl_json(daemon, "status")
    pool = status["pool"]
    assert pool["device"] == "cpu" and pool["total_bytes"] == 64 << 20
    models = {m["name"]: m for m in status["models"]}
    assert set(models) == set(AGENT_MODELS)
    for name, m in models.items():
        assert m["state"] in ("disk", "host", "loading", "resident", "evicting")
        assert isinstance(m["bytes"], int) and m["bytes"] > 0
        assert sorted(m["agents"]) == AGENT_MODELS[name]
    assert models["tq"]["state"] == "resident"
    resident = sum(m["bytes"] for m in models.values() if m["state"] == "resident")
    assert pool["used_bytes"] == resident
    assert pool["free_bytes"] == pool["total_bytes"] - pool["used_bytes"]

    r = ctl(daemon, "status")
    assert r.returncode == 0 and r.stderr == "", r
    assert "\033" not in r.stdout
    lines = r.stdout.split("\n")
    percent = round(100 * pool["used_bytes"] / pool["total_bytes"])
    assert lines[0].startswith(f"pool        cpu  {format_bytes(pool['used_bytes'])} / "
                               f"{format_bytes(pool['total_bytes'])}  [")
    assert lines[0].endswith(f"] {percent:3d}%")
    assert lines[1].startswith("host cache  ")
    header, rows = table(r.stdout.split("\n\n", 1)[1])
    assert header.split() == ["MODEL", "STATE", "SIZE", "LAST", "USED", "LOADS", "LAST", "SWAP",
                              "QUEUE", "RUNNING", "PIN", "AGENTS", "SOURCE"]
    assert set(rows) == set(models)
    for name, m in models.items():
        assert column(header, rows[name], "STATE") == m["state"]  # aligned under its header
        assert column(header, rows[name], "SIZE") == format_bytes(m["bytes"])
        assert column(header, rows[name], "AGENTS") == ", ".join(m["agents"])
        assert column(header, rows[name], "PIN") == ("yes" if m["pinned"] else "no")


def test_status_watch_count(daemon):
    """Two refreshes a second apart, as tables and as JSON lines (both at once)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    start = time.monotonic()
    procs = [subprocess.Popen([NEXUSCTL, "status", "--watch", "--count", "2", *extra,
                               "--endpoint", daemon.endpoint], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for extra in ([], ["--json"])]
    (out, err), (json_out, json_err) = (p.communicate(timeout=30) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], (err, json_err)
    assert time.monotonic() - start >= 1.0  # one refresh interval between the two
    assert "\033" not in out  # not a terminal: no screen clearing
    tables = out.split("\n\npool")
    assert len(tables) == 2 and out.startswith("pool")  # a blank line between them
    assert len([line for line in out.split("\n") if line.startswith("MODEL ")]) == 2
    snapshots = [json.loads(line) for line in json_out.splitlines()]
    assert len(snapshots) == 2 and all(s["op"] == "status" for s in snapshots)


def test_status_watch_clears_a_terminal(daemon):
    """On a terminal (a pty here) each refresh starts by clearing the screen."""
    main, secondary = pty.openpty()
    try:
        proc = subprocess.Popen([NEXUSCTL, "status", "--watch", "--count", "1",
                                 "--endpoint", daemon.endpoint],
                                stdout=secondary, stderr=subprocess.PIPE)
        os.close(secondary)
        secondary = None
        out = b""
        while True:
            if not select.select([main], [], [], 30)[0]:
                break
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(30) == 0, proc.stderr.read()
        proc.stderr.close()
    finally:
        os.close(main)
        if secondary is not None:
            os.close(secondary)
    assert out.startswith(b"\033[H\033[2J"), out[:40]
    assert b"pool" in out and b"MODEL" in out


def test_agents_human_and_json(daemon):
    out = ctl_json(daemon, "agents")
    agents = {a["name"]: a for a in out["agents"]}
    assert sorted(agents) == sorted(a["name"] for a in AGENTS)
    assert agents["echo"]["model"] == "tq" and agents["other"]["model"] == "tl"
    assert agents["echo"]["description"] == "greedy, 8 tokens"
    assert agents["chain"]["next"] == "other" and agents["echo"]["next"] is None
    r = ctl(daemon, "agents")
    assert r.returncode == 0 and r.stderr == "", r
    header, rows = table(r.stdout)
    assert header.split() == ["AGENT", "MODEL", "QUEUE", "RUNNING", "PIN", "PRIORITY", "NEXT",
                              "DESCRIPTION"]
    assert set(rows) == set(agents)
    assert column(header, rows["chain"], "NEXT") == "other"
    assert column(header, rows["echo"], "NEXT") == "-"
    assert column(header, rows["other"], "MODEL") == "tl"
    assert rows["echo"].endswith("greedy, 8 tokens")


def test_models_human_and_json(daemon):
    out = ctl_json(daemon, "models")
    models = {m["name"]: m for m in out["models"]}
    assert set(models) == set(AGENT_MODELS)
    assert all(sorted(m["agents"]) == AGENT_MODELS[n] for n, m in models.items())
    assert all(m["path"].endswith("/models/" + n) for n, m in models.items())
    r = ctl(daemon, "models")
    assert r.returncode == 0 and r.stderr == "", r
    header, rows = table(r.stdout)
    assert header.startswith("MODEL  STATE")
    assert set(rows) == set(models)
    for name, m in models.items():
        assert column(header, rows[name], "STATE") == m["state"]
        assert column(header, rows[name], "LOADS") == str(m["loads"])
        assert m["source"] == "folder"  # names in the models folder (test_model_store: others)
        assert column(header, rows[name], "SOURCE") == "folder"


def test_tasks_agent_and_limit(daemon):
    for text in ("one", "two", "three"):
        assert ctl(daemon, "send", "other", text, "--no-stream").returncode == 0
    out = ctl_json(daemon, "tasks", "--agent", "other", "--limit", "2")
    rows = out["tasks"]
    assert len(rows) == 2 and all(t["agent"] == "other" for t in rows)
    assert rows[0]["task"] > rows[1]["task"]  # newest first
    assert [t["input"] for t in rows] == ["three", "two"]
    assert all(t["status"] == "done" and t["usage"]["completion_tokens"] > 0 for t in rows)
    r = ctl(daemon, "tasks", "--agent", "other", "--limit", "2")
    assert r.returncode == 0 and r.stderr == "", r
    header, table_rows = table(r.stdout)
    assert header.split() == ["TASK", "AGENT", "STATUS", "SESSION", "CREATED", "QUEUE", "SWAP",
                              "TTFT", "TOTAL", "ERROR"]
    assert list(table_rows) == [str(t["task"]) for t in rows]
    for t in rows:
        line = table_rows[str(t["task"])]
        assert column(header, line, "AGENT") == "other"
        assert column(header, line, "STATUS") == "done"
        assert column(header, line, "TOTAL") == f"{t['timings']['total_ms']:.0f} ms"
        assert column(header, line, "ERROR") == "-"


def test_history_human_and_json(daemon):
    for text in ("my name is Ada", "what is my name?"):
        r = ctl(daemon, "send", "mem", text, "--session", "ctl-ada", "--no-stream")
        assert r.returncode == 0, r
    out = ctl_json(daemon, "history", "ctl-ada")
    assert out["op"] == "history" and out["session"] == "ctl-ada"
    messages = out["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in messages[::2]] == ["my name is Ada", "what is my name?"]
    assert r.stdout == messages[3]["content"] + "\n"  # the last answer, as sent
    assert all(m["agent"] == "mem" for m in messages)
    r = ctl(daemon, "history", "ctl-ada")
    assert r.returncode == 0 and r.stderr == "", r
    lines = r.stdout.rstrip("\n").split("\n")
    header = lines[0]
    assert header.split() == ["AT", "ROLE", "AGENT", "TASK", "CONTENT"]
    assert len(lines) == 5
    for line, m in zip(lines[1:], messages):
        assert column(header, line, "ROLE") == m["role"]
        assert column(header, line, "TASK") == str(m["task"])
    assert lines[1].endswith("my name is Ada") and lines[3].endswith("what is my name?")


def model_state(daemon, name):
    return {m["name"]: m for m in ctl_json(daemon, "status")["models"]}[name]


def test_load_evict_pin_unpin(daemon):
    r = ctl(daemon, "evict", "tl")
    assert r.returncode == 0, r
    tl = model_state(daemon, "tl")
    assert tl["state"] in ("disk", "host") and r.stdout == f"tl: {tl['state']}\n"
    out = ctl_json(daemon, "load", "tl")  # answers once resident
    assert out == {"op": "ok", "id": out["id"], "model": "tl", "state": "resident"}
    tl = model_state(daemon, "tl")
    assert tl["state"] == "resident" and not tl["pinned"]

    r = ctl(daemon, "pin", "tl")
    assert (r.returncode, r.stdout) == (0, "tl: resident\n"), r
    assert model_state(daemon, "tl")["pinned"] is True
    r = ctl(daemon, "evict", "tl")  # a pinned model stays
    assert r.returncode == 1
    assert r.stderr == "nexusctl: busy: model 'tl' is pinned (unpin it first)\n"
    tl = model_state(daemon, "tl")
    assert tl["state"] == "resident" and tl["pinned"] is True

    r = ctl(daemon, "unpin", "tl")
    assert (r.returncode, r.stdout) == (0, "tl: resident\n"), r
    assert model_state(daemon, "tl")["pinned"] is False
    used_before = ctl_json(daemon, "status")["pool"]["used_bytes"]
    r = ctl(daemon, "evict", "tl")
    assert r.returncode == 0, r
    status = ctl_json(daemon, "status")
    tl = {m["name"]: m for m in status["models"]}["tl"]
    assert tl["state"] in ("disk", "host") and r.stdout == f"tl: {tl['state']}\n"
    assert status["pool"]["used_bytes"] == used_before - tl["bytes"]


def test_ping_human_and_json(daemon):
    out = ctl_json(daemon, "ping")
    assert out == {"op": "pong", "id": out["id"], "version": "0.1"}
    assert isinstance(out["id"], int)
    r = ctl(daemon, "ping")
    assert r.returncode == 0, r
    assert r.stdout.startswith(f"pong from {daemon.endpoint}: nexusd 0.1 in ")
    assert r.stdout.endswith(" ms\n")


# ---- CURVE, end to end -------------------------------------------------------------------------

def test_curve_with_keygen_keys(tmp):
    """A daemon with curve.secret_key and curve.clients on loopback serves nexusctl holding an
    allowed key (options or environment); a stranger's key and no key get exit 2; the same key
    on another connection may cancel nexusctl's task (the key owns it)."""
    keys, mine, clients = (os.path.join(tmp, n) for n in ("keys", "mine", "clients"))
    for path in (keys, mine, clients):
        os.makedirs(path)
    for folder, name in ((keys, "server"), (mine, "app"), (mine, "stranger")):
        assert run("keygen", folder, "--name", name).returncode == 0
    shutil.copy(os.path.join(mine, "app.key"), clients)  # the public certificate only
    agents = [du.agent("echo", "tq"), du.agent("narrow", "tq", generation={"max_tokens": 3000})]
    d = du.Daemon(agents, home=os.path.join(tmp, "home"), conf={
        "context": 4096,
        "listen": f"tcp://127.0.0.1:{free_port()}", "events": f"tcp://127.0.0.1:{free_port()}",
        "curve": {"secret_key": os.path.join(keys, "server.key_secret"), "clients": clients}})
    server_key = os.path.join(keys, "server.key")

    def as_(name, *args, env=None):
        return ctl(d, *args, "--key", os.path.join(mine, name + ".key_secret"),
                   "--server-key", server_key, env=env)

    try:
        d.start_no_ping()
        deadline = time.monotonic() + 30
        while as_("app", "ping").returncode != 0:
            assert d.proc.poll() is None, d.read_log()
            assert time.monotonic() < deadline, d.read_log()
        r = as_("app", "ping")
        assert r.returncode == 0 and r.stdout.startswith(f"pong from {d.endpoint}: nexusd 0.1")
        r = as_("app", "send", "echo", "secret hello", "--no-stream", "--json")
        assert r.returncode == 0, r
        assert json.loads(r.stdout)["agent"] == "echo"
        env = {"NEXUS_CLIENT_KEY": os.path.join(mine, "app.key_secret"),
               "NEXUS_SERVER_KEY": server_key}
        r = ctl(d, "status", "--json", env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["op"] == "status", r

        # refused at the handshake: nothing answers (each waits out the ping probe, together)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
        refused = [[NEXUSCTL, "ping", "--endpoint", d.endpoint, "--key",
                    os.path.join(mine, "stranger.key_secret"), "--server-key", server_key],
                   [NEXUSCTL, "ping", "--endpoint", d.endpoint]]
        procs = [subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for cmd in refused]
        results = [p.communicate(timeout=20) + (p.returncode,) for p in procs]
        hint = "; with CURVE, check that it accepts this client's key"
        for (out, err, rc), with_key in zip(results, (True, False)):
            assert rc == 2 and out == "", err
            assert err == (f"nexusctl: {NOT_RUNNING} {d.endpoint} (start one with `make run`"
                           f"{hint if with_key else ''})\n")
        assert d.proc.poll() is None  # and it still serves the allowed key
        assert as_("app", "ping").returncode == 0

        # the owner of a task is its key: a client holding app's key on another connection
        # cancels app's streaming send, which ends with a newline and `nexusctl: canceled:`
        proc = subprocess.Popen([NEXUSCTL, "send", "narrow", "go on", "--endpoint", d.endpoint,
                                 "--key", os.path.join(mine, "app.key_secret"),
                                 "--server-key", server_key],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert select.select([proc.stdout], [], [], 30)[0], "nothing streamed in 30 s"
            first = os.read(proc.stdout.fileno(), 1)
            app = read_cert(os.path.join(mine, "app.key_secret"))
            server = read_cert(server_key)
            with du.Client(d.endpoint, curve=(app["public-key"].encode(),
                                              app["secret-key"].encode(),
                                              server["public-key"].encode())) as c:
                rows = c.call({"op": "tasks", "agent": "narrow", "limit": 1})["tasks"]
                assert rows[0]["status"] == "running", rows
                r = c.call({"op": "cancel", "task": rows[0]["task"]})
                assert r["op"] == "canceled", r
            rest, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 1
        out = (first + rest).decode()
        assert len(out) > 1 and out.endswith("\n")
        assert err.decode().startswith("nexusctl: canceled: "), err
        assert d.stop() == 0, d.read_log()
    finally:
        d.close()
