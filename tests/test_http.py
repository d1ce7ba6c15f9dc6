"""test_http.py — nexusd's OpenAI-compatible HTTP front, with real clients against a real
daemon (tiny synthesized models, loopback):

- the official `openai` node client (tests/tools/openai_client.mjs; `make openai-client`
  installs it, pinned; its tests skip, saying why, where node or the package is missing):
  a completion, a streamed completion, a text completion, the models list, a multi-turn
  conversation, an error per HTTP status (400, 401, 404, 413, 429 with Retry-After, 500,
  503), and a client that disconnects mid-stream, whose task ends canceled (and one that hangs
  up while waiting for a whole answer, over a raw socket);
- `curl -N` reading the server-sent events as they come;
- GET /metrics parsed by prometheus_client's strict text-format parser and checked against
  the store (the `tasks` and `status` ops over ZeroMQ);
- malformed HTTP (bad JSON, huge headers, a slow client, wrong methods and paths, bodies over
  the limit, garbage) answered or closed, the daemon serving on;
- 507 storage_full with the database on a full tmpfs (skipped where mounting is refused).

The HTTP answers are checked against the same task over ZeroMQ: the front translates, it
never decides."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

import daemon_util as du

ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CLIENT = os.path.join(ROOT, "tests", "tools", "openai_client.mjs")
OPENAI_DIR = os.environ.get("OPENAI_DIR") or os.path.join(ROOT, ".tools", "openai")
KEY = "sk-nexus-test-0123456789abcdef"
IDLE_S = 1


def openai_missing():
    """None when the openai node client can run, else why not."""
    if not shutil.which("node"):
        return "node is not installed"
    if not os.path.isfile(os.path.join(OPENAI_DIR, "node_modules", "openai", "package.json")):
        return f"the openai npm package is not installed in {OPENAI_DIR} (make openai-client)"
    return None


def need_openai():
    reason = openai_missing()
    if reason:
        pytest.skip(reason)


def cut_copy(model_dir, root):
    """A copy of a model whose weights file is cut in half: it cannot be loaded."""
    out = os.path.join(root, "tq_cut")
    shutil.copytree(model_dir, out)
    for name in os.listdir(out):
        if name.endswith(".safetensors"):
            path = os.path.join(out, name)
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.truncate(size // 2)
    return out


AGENTS = [
    du.agent("a", "tq"),
    du.agent("long", "tq", generation={"max_tokens": 3500, "temperature": 0}),  # no early end
    du.agent("one", "tq", generation={"max_tokens": 1500}, limits={"queue": 1}),
    du.agent("mem", "tq", memory={"type": "session", "turns": 4}),
    du.agent("broken", "tq_cut"),
    du.agent("j", "tq", generation={"max_tokens": 64, "temperature": 1.0}),
    du.agent("caller", "tt", chat_template="auto",
             generation={"max_tokens": 120, "temperature": 1.0, "thinking": False}),
    du.agent("boss", "tt", chat_template="auto", tools=["city"], limits={"tool_steps": 1},
             generation={"max_tokens": 60, "temperature": 1.0, "thinking": False}),
    du.agent("city", "tq", description="Says something about a city",
             input_schema={"type": "object", "properties": {"city": {"enum": ["Oslo", "Lima"]}},
                           "required": ["city"], "additionalProperties": False}),
]
WEATHER = {"type": "object",
           "properties": {"city": {"enum": ["Paris", "Oslo"]}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ADD = {"type": "object",
       "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9},
                      "b": {"type": "integer", "minimum": 0, "maximum": 9}},
       "required": ["a", "b"], "additionalProperties": False}
# not "strict": the SDK's stream helper would parse strict tools' arguments, and throws at
# finish_reason "length" (which a random model's free text under "auto" always reaches)
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "a + b",
                                           "parameters": ADD}}]
PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 8},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "likes": {"type": "array", "items": {"enum": ["tea", "jazz"]},
                                   "maxItems": 2}},
          "required": ["name", "age", "likes"], "additionalProperties": False}


@pytest.fixture(scope="module")
def d():
    root = tempfile.mkdtemp(prefix="nx-http-models-")
    models = du.tiny_models()
    models["tq_cut"] = cut_copy(models["tq"], root)
    models["tt"] = du.tool_model()
    port = du.free_port()
    conf = {"context": 4096, "max_batch": 1, "http": {"listen": f"127.0.0.1:{port}", "api_keys": [KEY],
                                      "idle_timeout": IDLE_S}}
    try:
        with du.running(AGENTS, conf=conf, models=models) as daemon:
            daemon.base = f"http://127.0.0.1:{port}"
            daemon.http_port = port
            yield daemon
    finally:
        shutil.rmtree(root, ignore_errors=True)


def node(d, steps, key=KEY, timeout=60):
    r = subprocess.run(["node", CLIENT, d.base + "/v1", key, json.dumps(steps)],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def http(d, method, path, body=None, key=KEY, timeout=30):
    """(status, headers, parsed JSON or text) with urllib."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(d.base + path, data=data, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    text = raw.decode()
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, text


def zmq_output(d, agent, text):
    with d.client() as c:
        _, _, r = c.task(agent, text)
    assert r["op"] == "result", r
    return r


def task_row(d, task):
    with d.client() as c:
        rows = c.call({"op": "tasks", "limit": 1000})["tasks"]
    return next(r for r in rows if r["task"] == task)


def raw_exchange(d, data, wait=5.0):
    """Send raw bytes, read until the server closes or `wait` passes; returns the bytes."""
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def health_ok(d):
    status, _, body = http(d, "GET", "/health", key=None)
    return status == 200 and body == {"status": "ok"}


# ------------------------------------------------------------------------------------------
# the openai client
# ------------------------------------------------------------------------------------------
def test_openai_client_completion_stream_and_models(d):
    need_openai()
    want = zmq_output(d, "a", "hello")
    assert want["stop_reason"] == "length" and want["usage"]["completion_tokens"] == 8
    msgs = [{"role": "system", "content": "ignored: the agent's applies"},
            {"role": "user", "content": "hello"}]
    models, chat, stream, comp, stopped = node(d, [
        {"do": "models"},
        {"do": "chat", "model": "a", "messages": msgs},
        {"do": "stream", "model": "a", "messages": msgs, "stream_options": {"include_usage": True}},
        {"do": "completion", "model": "a", "prompt": "hello", "max_tokens": 3},
        {"do": "chat", "model": "a", "messages": msgs, "stop": [want["output"][:1]]},
    ])
    assert sorted(models["ids"]) == sorted(a["name"] for a in AGENTS)
    assert chat["object"] == "chat.completion" and chat["model"] == "a"
    assert chat["role"] == "assistant" and chat["content"] == want["output"]
    # the agent's max_tokens (8) was used up: the client is told "length"
    assert chat["finish_reason"] == "length"
    assert chat["usage"] == {"prompt_tokens": want["usage"]["prompt_tokens"],
                             "completion_tokens": 8,
                             "total_tokens": want["usage"]["prompt_tokens"] + 8}
    task = int(chat["id"].split("-")[1])
    row = task_row(d, task)  # the same store row a ZeroMQ task gets
    assert row["agent"] == "a" and row["status"] == "done"
    assert stream["text"] == want["output"] and stream["role"] == "assistant"
    assert stream["finish_reason"] == "length" and stream["chunks"] >= 3
    assert stream["usage"]["completion_tokens"] == 8
    assert comp["object"] == "text_completion" and comp["finish_reason"] == "length"
    assert comp["usage"]["completion_tokens"] == 3 and len(comp["text"]) > 0
    # a stop string ends it early: "stop", the stop string itself left out
    assert stopped["finish_reason"] == "stop" and stopped["content"] == "", stopped
    assert stopped["usage"]["completion_tokens"] < 8


def test_openai_client_multi_turn_and_overrides(d):
    need_openai()
    one_turn = [{"role": "user", "content": "and now?"}]
    three_turns = [{"role": "user", "content": "first question"},
                   {"role": "assistant", "content": "first answer"}] + one_turn
    short, long_, capped = node(d, [
        {"do": "chat", "model": "a", "messages": one_turn},
        {"do": "chat", "model": "a", "messages": three_turns},
        {"do": "chat", "model": "long", "messages": one_turn, "max_tokens": 5, "seed": 7,
         "temperature": 0, "top_p": 0.9},
    ])
    # the earlier turns reach the prompt (the task's history), so it is longer
    assert long_["usage"]["prompt_tokens"] > short["usage"]["prompt_tokens"]
    row = task_row(d, int(long_["id"].split("-")[1]))
    assert row["status"] == "done"
    # the request's max_tokens overrides the agent's 1500
    assert capped["usage"]["completion_tokens"] == 5 and capped["finish_reason"] == "length"


def test_openai_client_response_format(d):
    """json_schema (strict) and json_object through the SDK at temperature 1 on a random model:
    the content is JSON valid under the schema every time; the SDK's parse agrees; a keyword
    the compiler cannot enforce is a 400 naming it and its JSON pointer."""
    need_openai()
    import jsonschema
    msgs = [{"role": "user", "content": "a person please"}]
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                 "strict": True}}
    bad = {"type": "json_schema", "json_schema": {"name": "bad", "schema": {
        "type": "object", "properties": {"tags": {"type": "object",
                                                  "patternProperties": {"^t": {}}}}}}}
    steps = ([{"do": "chat", "model": "j", "messages": msgs, "response_format": rf, "seed": s}
              for s in range(6)] +
             [{"do": "parse", "model": "j", "messages": msgs, "response_format": rf, "seed": 9},
              {"do": "chat", "model": "j", "messages": msgs, "seed": 3,
               "response_format": {"type": "json_object"}},
              {"do": "chat", "model": "j", "messages": msgs, "response_format": bad},
              {"do": "chat", "model": "j", "messages": msgs,
               "response_format": {"type": "yaml"}}])
    out = node(d, steps)
    for r in out[:6]:
        assert r["finish_reason"] == "stop", r
        jsonschema.Draft202012Validator(PERSON).validate(json.loads(r["content"]))
    parsed = out[6]
    assert parsed["parsed"] == json.loads(parsed["content"]), parsed
    jsonschema.Draft202012Validator(PERSON).validate(parsed["parsed"])
    obj = out[7]
    if obj["finish_reason"] == "stop":
        assert isinstance(json.loads(obj["content"]), dict), obj
    err = out[8]["error"]
    assert err["status"] == 400 and err["code"] == "bad_request", err
    assert "patternProperties" in err["message"] and "/properties/tags" in err["message"], err
    assert out[9]["error"]["status"] == 400 and "response_format.type" in out[9]["error"]["message"]


def check_tool_answer(r, choice, parallel):
    """One SDK answer under tools: its calls name a tool and validate; none for "none", at
    least one for "required" or a named function, at most one without parallel calls."""
    import jsonschema
    calls = r["tool_calls"] or []
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for k, call in enumerate(calls):
        assert call["type"] == "function" and call["id"].startswith("call_"), call
        if r["finish_reason"] == "length" and k == len(calls) - 1:
            continue  # max_tokens may have cut the last call's arguments
        jsonschema.Draft202012Validator(schemas[call["function"]["name"]]).validate(
            json.loads(call["function"]["arguments"]))
    if calls and r["finish_reason"] != "length":
        assert r["finish_reason"] == "tool_calls", r
    elif not calls:
        assert r["finish_reason"] in ("stop", "length"), r
    if choice == "none":
        assert not calls, r
    if choice == "required" or isinstance(choice, dict):
        assert calls, r
    if isinstance(choice, dict):
        assert {c["function"]["name"] for c in calls} == {"add"}, r
    if parallel is False:
        assert len(calls) <= 1, r


def test_openai_client_tools(d):
    """tools through the official SDK under each tool_choice and parallel_tool_calls, whole and
    streamed: the SDK's stream helper reassembles delta.tool_calls into the very answer the
    non-streamed request gives (same seed); a tool-result turn answers; an unsupported keyword
    in a tool's parameters is a 400 naming it."""
    need_openai()
    msgs = [{"role": "user", "content": "weather in Oslo, or 2+3?"}]
    choices = ["auto", "none", "required", {"type": "function", "function": {"name": "add"}}]
    steps, cases = [], []
    for choice in choices:
        for parallel in (True, False):
            seed = 1 + len(cases)  # one seed per case, a different one each (test time)
            p = {"model": "caller", "messages": msgs, "tools": TOOLS, "tool_choice": choice,
                 "parallel_tool_calls": parallel, "seed": seed}
            steps += [{"do": "chat", **p}, {"do": "stream_final", **p}]
            cases.append((choice, parallel))
    after_call = msgs + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo","unit":"c"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "4 degrees, rain"}]
    bad = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"m": {"type": "object",
                                               "patternProperties": {"^a": {}}}}}}}]
    steps += [{"do": "chat", "model": "caller", "messages": after_call, "tools": TOOLS,
               "tool_choice": "none", "max_tokens": 8, "seed": 1},
              {"do": "chat", "model": "caller", "messages": msgs, "tools": bad}]
    out = node(d, steps, timeout=180)
    for i, (choice, parallel) in enumerate(cases):
        whole, streamed = out[2 * i], out[2 * i + 1]
        check_tool_answer(whole, choice, parallel)
        def no_ids(calls):  # ids are per task: two tasks, two sets of ids
            return [{**c, "id": None} for c in calls or []]
        assert no_ids(streamed["tool_calls"]) == no_ids(whole["tool_calls"]), (whole, streamed)
        assert all(c["id"].startswith("call_") for c in streamed["tool_calls"] or [])
        assert streamed["finish_reason"] == whole["finish_reason"], (whole, streamed)
        assert (streamed["content"] or "") == (whole["content"] or ""), (whole, streamed)
        if whole["tool_calls"]:
            assert streamed["chunks"] > 2 + len(whole["tool_calls"])
    answered = out[-2]
    assert answered["finish_reason"] in ("stop", "length") and not answered["tool_calls"]
    assert answered["usage"]["prompt_tokens"] > 40, answered
    err = out[-1]["error"]
    assert err["status"] == 400 and err["code"] == "bad_request", err
    assert "tools[0].function.parameters" in err["message"], err
    assert "patternProperties" in err["message"] and "/properties/m" in err["message"], err


def test_openai_client_agent_tools_stay_inside(d):
    """An agent whose YAML lists another agent under tools: its calls run inside the daemon
    (a child task), so the SDK sees neither tool_calls nor a tool_calls finish, streamed or
    not."""
    need_openai()
    msgs = [{"role": "user", "content": "tell me about a city"}]
    p = {"model": "boss", "messages": msgs, "tool_choice": "required", "seed": 4}
    whole, streamed = node(d, [{"do": "chat", **p}, {"do": "stream_final", **p}], timeout=120)
    for r in (whole, streamed):
        assert not r["tool_calls"] and r["finish_reason"] in ("stop", "length"), r
    assert (streamed["content"] or "") == (whole["content"] or "")


def test_openai_client_errors_by_status(d):
    need_openai()
    msgs = [{"role": "user", "content": "hi"}]
    results = node(d, [
        {"do": "chat", "model": "a", "messages": msgs, "temperature": -1},   # 400
        {"do": "chat", "model": "nobody", "messages": msgs},                 # 404
        {"do": "chat", "model": "a",
         "messages": [{"role": "user", "content": "x" * (70 << 10)}]},      # 413
        {"do": "chat", "model": "broken", "messages": msgs},                 # 500
    ])
    bad, unknown, large, broken = (r["error"] for r in results)
    assert (bad["status"], bad["code"]) == (400, "bad_request"), bad
    assert "temperature" in bad["message"]
    assert (unknown["status"], unknown["code"]) == (404, "unknown_agent"), unknown
    assert (large["status"], large["code"]) == (413, "too_large"), large
    assert (broken["status"], broken["code"]) == (500, "model_error"), broken
    # 429: "one" allows one task. The client is started and waiting first, then a ZeroMQ task
    # takes the slot, and the request goes out while that task streams (sampled, a random
    # model meets its end token within a few hundred tokens, sooner than node starts).
    client = subprocess.Popen(["node", CLIENT, d.base + "/v1", KEY, json.dumps(
        [{"do": "wait"}, {"do": "chat", "model": "one", "messages": msgs}])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with d.client() as c:
        # greedy: the same continuation every run, and it meets no end token in 4000
        rid = c.send({"op": "task", "agent": "one", "input": "x", "stream": True,
                      "params": {"max_tokens": 4000, "temperature": 0}})
        while True:  # running, not only accepted
            r = c.recv(30)
            assert r.get("id") != rid or r["op"] in ("accepted", "token"), r
            if r.get("id") == rid and r["op"] == "accepted":
                task = r["task"]
            if r.get("id") == rid and r["op"] == "token":
                break
        out, err = client.communicate("go\n", timeout=60)
        c.send({"op": "cancel", "task": task})
    assert client.returncode == 0, err
    busy = json.loads(out)[1]["error"]
    assert (busy["status"], busy["code"], busy["retry_after"]) == (429, "busy", "1"), busy
    [denied] = node(d, [{"do": "models"}], key="sk-wrong-key-0123456789")
    assert denied["error"]["status"] == 401, denied


def test_openai_client_disconnect_cancels_the_task(d):
    need_openai()
    [r] = node(d, [{"do": "disconnect", "model": "long", "after": 3,
                    "messages": [{"role": "user", "content": "tell me everything"}]}])
    assert r["chunks"] == 3, r
    task = int(r["id"].split("-")[1])
    row = du.wait_for(lambda: (lambda x: x if x["status"] != "running" else None)(task_row(d, task)),
                      timeout=10)
    # 3500 tokens take seconds here; it ended at once, canceled, not done
    assert row["status"] == "canceled" and row["error_code"] == "canceled", row
    assert row["usage"]["completion_tokens"] < 3500, row


def test_disconnect_while_waiting_for_a_whole_answer_cancels(d):
    """Without stream: a client that hangs up before the answer has its task cancelled too."""
    with d.client() as c:
        before = {r["task"] for r in c.call({"op": "tasks", "agent": "long", "limit": 1000})["tasks"]}
    body = json.dumps({"model": "long", "messages": [{"role": "user", "content": "wait"}]}).encode()
    s = socket.create_connection(("127.0.0.1", d.http_port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
              str(len(body)).encode() + b"\r\n\r\n" + body)
    with d.client() as c:
        def running_new():
            rows = c.call({"op": "tasks", "agent": "long", "limit": 1000})["tasks"]
            return [r for r in rows if r["task"] not in before and r["status"] == "running"]
        [row] = du.wait_for(running_new, timeout=10)
    s.close()  # hang up mid-task
    row = du.wait_for(lambda: (lambda x: x if x["status"] != "running" else None)(
        task_row(d, row["task"])), timeout=10)
    assert row["status"] == "canceled" and row["error_code"] == "canceled", row
    assert row["usage"]["completion_tokens"] < 3500, row


# ------------------------------------------------------------------------------------------
# curl, urllib, raw sockets
# ------------------------------------------------------------------------------------------
def test_curl_streams_server_sent_events(d):
    want = zmq_output(d, "a", "stream me")
    body = json.dumps({"model": "a", "stream": True,
                       "messages": [{"role": "user", "content": "stream me"}]})
    r = subprocess.run(["curl", "-sS", "-N", "--max-time", "20", "-H", f"Authorization: Bearer {KEY}",
                        "-H", "Content-Type: application/json", "-d", body,
                        d.base + "/v1/chat/completions", "-D", "-"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    head, _, events = r.stdout.partition("\n\n")  # text mode: CRLF read as \n
    assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head, head
    lines = [line for line in events.split("\n") if line.strip()]
    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == want["output"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_user_names_the_session(d):
    for text in ("one", "two"):
        status, _, body = http(d, "POST", "/v1/chat/completions",
                               {"model": "mem", "user": "http-s1",
                                "messages": [{"role": "user", "content": text}]})
        assert status == 200, body
    with d.client() as c:
        h = c.call({"op": "history", "session": "http-s1"})
    assert [m["content"] for m in h["messages"] if m["role"] == "user"] == ["one", "two"]


def pause_daemon(d, seconds):
    """SIGSTOP the whole daemon, then SIGCONT: every thread, libmicrohttpd's included, sees
    `seconds` pass with nothing sent or read, longer than http.idle_timeout."""
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)


def test_long_wait_outlives_the_idle_timeout(d):
    """A request waiting on its task longer than http.idle_timeout (a queue, a model's load;
    here the daemon paused) is answered, not closed as idle: a whole answer, then a stream
    paused between two events."""
    import threading
    got = {}

    def whole():
        got["whole"] = http(d, "POST", "/v1/chat/completions",
                            {"model": "long", "max_tokens": 1000,
                             "messages": [{"role": "user", "content": "go"}]}, timeout=120)
    t = threading.Thread(target=whole)
    t.start()
    with d.client() as c:
        du.wait_for(lambda: c.call({"op": "status"})["router"]["tasks_in_flight"] == 1)
    pause_daemon(d, 2.5 * IDLE_S)
    t.join(120)
    status, _, body = got["whole"]
    assert status == 200 and body["usage"]["completion_tokens"] == 1000, body

    body = json.dumps({"model": "long", "max_tokens": 1000, "stream": True,
                       "messages": [{"role": "user", "content": "go"}]}).encode()
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=60) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                  KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n" + body)
        events = s.recv(65536)
        assert events.startswith(b"HTTP/1.1 200"), events
        pause_daemon(d, 2.5 * IDLE_S)  # mid-stream
        while not events.endswith(b"\r\n0\r\n\r\n"):  # the stream's last chunk
            chunk = s.recv(65536)
            assert chunk, events[-300:]  # closed as idle: the stream was cut
            events += chunk
        assert b"data: [DONE]" in events


def test_malformed_http_is_answered_or_closed_and_serving_goes_on(d):
    checks = [
        ("POST", "/v1/chat/completions", b"{not json", 400, "bad_request"),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, "bad_request"),
        ("POST", "/v1/chat/completions", json.dumps({"model": "a"}).encode(), 400, "bad_request"),
        ("POST", "/v1/chat/completions",
         json.dumps({"model": "a", "n": 2, "messages": [{"role": "user", "content": "x"}]}).encode(),
         400, "bad_request"),
        ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
        ("DELETE", "/v1/models", None, 405, "method_not_allowed"),
        ("GET", "/v2/nothing", None, 404, "not_found"),
        ("POST", "/v1/completions", b"x" * (65 << 10), 413, "too_large"),
    ]
    for method, path, body, want_status, want_code in checks:
        status, headers, reply = http(d, method, path, body)
        assert (status, reply["error"]["code"]) == (want_status, want_code), (path, reply)
    # no key: 401, except /health
    status, headers, reply = http(d, "GET", "/v1/models", key=None)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer", reply
    # headers past 64 KiB: refused, never served
    out = raw_exchange(d, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 << 10) +
                       b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]
    # garbage instead of a request line: answered 400 or closed (at the idle timeout)
    out = raw_exchange(d, b"\x00\x01garbage\r\n\r\n")
    assert out == b"" or out.startswith(b"HTTP/1.1 400"), out[:200]
    # a chunked body whose chunk size is not a number
    out = raw_exchange(d, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                          b"\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\nzz\r\nabc\r\n")
    assert out == b"" or out.startswith(b"HTTP/1.1 400"), out[:200]
    assert health_ok(d)


def test_slow_clients_are_closed_while_others_are_served(d):
    """Slow loris: headers, or a body, trickled slower than http.idle_timeout allows."""
    slow_headers = socket.create_connection(("127.0.0.1", d.http_port))
    slow_body = socket.create_connection(("127.0.0.1", d.http_port))
    try:
        slow_headers.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        slow_body.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                          b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n{\"model\"")
        assert health_ok(d)  # others are served meanwhile
        for s in (slow_headers, slow_body):
            s.settimeout(IDLE_S + 5)
            t0 = time.monotonic()
            assert s.recv(1024) == b""  # closed by the server, nothing answered
            assert time.monotonic() - t0 < IDLE_S + 4
    finally:
        slow_headers.close()
        slow_body.close()
    assert health_ok(d)
    # a stream lifts the timeout while it runs (tokens may be seconds apart); once it has
    # ended, the kept-alive connection is idle and closes like any other
    body = json.dumps({"model": "a", "stream": True,
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=IDLE_S + 5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                  KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n" + body)
        got = b""
        while not got.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of the stream
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        assert b"data: [DONE]" in got
        t0 = time.monotonic()
        assert s.recv(1024) == b""
        assert time.monotonic() - t0 < IDLE_S + 4


# ------------------------------------------------------------------------------------------
# /metrics
# ------------------------------------------------------------------------------------------
def scrape(d):
    """GET /metrics through prometheus_client's strict parser: {family name: family}."""
    from prometheus_client.parser import text_string_to_metric_families
    req = urllib.request.Request(d.base + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(families, family, suffix=""):
    """{sorted label items: value} of one family's samples named family + suffix."""
    if family not in families:
        return {}
    return {tuple(sorted(s.labels.items())): s.value
            for s in families[family].samples if s.name == family + suffix}


def test_metrics_count_what_the_test_did(d):
    before = scrape(d)
    msgs = [{"role": "user", "content": "count me"}]
    assert http(d, "POST", "/v1/chat/completions", {"model": "a", "messages": msgs})[0] == 200
    assert http(d, "POST", "/v1/chat/completions", {"model": "zz", "messages": msgs})[0] == 404
    assert http(d, "POST", "/v1/completions", {"model": "a", "prompt": "x",
                                                "temperature": -1})[0] == 400
    chat, comp = "/v1/chat/completions", "/v1/completions"

    def delta_in(after, family, suffix, labels):
        key = tuple(sorted(labels.items()))
        return samples(after, family, suffix).get(key, 0) - samples(before, family, suffix).get(key, 0)

    def all_answered(families):
        # libmicrohttpd counts a request once its connection has sent the answer (the
        # completion callback), which may run just after the client has read it
        done = all(delta_in(families, "nexus_http_requests", "_total", {"path": p, "code": c})
                   for p, c in ((chat, "200"), (chat, "404"), (comp, "400")))
        return families if done else None

    after = du.wait_for(lambda: all_answered(scrape(d)), timeout=10)

    def delta(family, suffix, labels):
        return delta_in(after, family, suffix, labels)

    assert delta("nexus_http_requests", "_total", {"path": chat, "code": "200"}) == 1
    assert delta("nexus_http_requests", "_total", {"path": chat, "code": "404"}) == 1
    assert delta("nexus_http_requests", "_total", {"path": comp, "code": "400"}) == 1
    assert delta("nexus_task_refusals", "_total", {"code": "unknown_agent"}) == 1
    assert delta("nexus_task_refusals", "_total", {"code": "bad_request"}) == 1
    assert delta("nexus_tasks", "_total", {"agent": "a", "status": "done"}) == 1
    assert delta("nexus_completion_tokens", "_total", {"agent": "a"}) == 8
    assert delta("nexus_task_duration_seconds", "_count", {}) == 1


def test_metrics_parse_strictly_and_match_the_store(d):
    with d.client() as c:
        du.wait_for(lambda: c.call({"op": "status"})["router"]["tasks_in_flight"] == 0)
        rows = c.call({"op": "tasks", "limit": 1000})["tasks"]
        st = c.call({"op": "status"})
    families = scrape(d)
    assert families["nexus_tasks"].type == "counter"
    tasks = samples(families, "nexus_tasks", "_total")
    for a in AGENTS:
        for state in ("done", "failed", "canceled"):
            want = sum(1 for r in rows if r["agent"] == a["name"] and r["status"] == state)
            assert tasks[(("agent", a["name"]), ("status", state))] == want, (a["name"], state)
    out = samples(families, "nexus_completion_tokens", "_total")
    for a in AGENTS:
        want = sum(r["usage"]["completion_tokens"] for r in rows if r["agent"] == a["name"])
        assert out[(("agent", a["name"]),)] == want, a["name"]
    done = sum(1 for r in rows if r["status"] == "done")
    assert done >= 1
    for name in ("nexus_task_queue_seconds", "nexus_task_swap_seconds",
                 "nexus_task_ttft_seconds", "nexus_task_duration_seconds"):
        assert families[name].type == "histogram"
        assert samples(families, name, "_count")[()] == done, name
        buckets = samples(families, name, "_bucket")
        assert buckets[(("le", "+Inf"),)] == done
        counts = [v for k, v in sorted(buckets.items(), key=lambda kv: float(kv[0][0][1]))]
        assert counts == sorted(counts)  # cumulative
    models = samples(families, "nexus_models")
    for state in ("disk", "host", "loading", "resident", "evicting"):
        assert models[(("state", state),)] == sum(1 for m in st["models"] if m["state"] == state)
    assert samples(families, "nexus_pool_total_bytes")[()] == st["pool"]["total_bytes"]
    assert samples(families, "nexus_pool_used_bytes")[()] == st["pool"]["used_bytes"]
    assert samples(families, "nexus_host_cache_total_bytes")[()] == st["host_cache"]["budget_bytes"]
    loads = samples(families, "nexus_model_loads", "_total")
    assert loads[(("model", "tq"),)] >= 1
    assert samples(families, "nexus_model_load_bytes", "_total")[(("model", "tq"),)] == \
        loads[(("model", "tq"),)] * next(m["bytes"] for m in st["models"] if m["name"] == "tq")
    assert samples(families, "nexus_model_resident_seconds", "_total")[(("model", "tq"),)] > 0
    for family in ("nexus_task_refusals", "nexus_http_requests", "nexus_model_evictions"):
        assert families[family].type == "counter", family


# ------------------------------------------------------------------------------------------
# their own daemons: shutting down, full disk
# ------------------------------------------------------------------------------------------
def test_shutdown_answers_503(d):
    need_openai()
    port = du.free_port()
    daemon = du.Daemon([du.agent("long", "tq", generation={"max_tokens": 1500})],
                       conf={"context": 2048, "http": {"listen": f"127.0.0.1:{port}"}})
    try:
        daemon.start()
        steps = [{"do": "chat", "model": "long", "messages": [{"role": "user", "content": "x"}]}]
        p = subprocess.Popen(["node", CLIENT, f"http://127.0.0.1:{port}/v1", "none",
                              json.dumps(steps)], stdout=subprocess.PIPE, text=True)
        with daemon.client() as c:
            du.wait_for(lambda: c.call({"op": "status"})["router"]["tasks_in_flight"] == 1)
        daemon.proc.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
        [r] = json.loads(out)
        assert (r["error"]["status"], r["error"]["code"]) == (503, "shutting_down"), r
        assert daemon.proc.wait(20) == 0, daemon.read_log()
    finally:
        daemon.close()


def test_full_disk_answers_507():
    from test_daemon_storage import fill
    with du.small_tmpfs("4m", prefix="nx-http-full-") as tmpfs:
        port = du.free_port()
        daemon = du.Daemon([du.agent("a", "tq")],
                           conf={"home": tmpfs, "http": {"listen": f"127.0.0.1:{port}"}})
        daemon.base, daemon.http_port = f"http://127.0.0.1:{port}", port
        ballast = os.path.join(tmpfs, "ballast")
        try:
            daemon.start()
            msgs = [{"role": "user", "content": "x"}]
            assert http(daemon, "POST", "/v1/chat/completions", {"model": "a", "messages": msgs})[0] == 200
            fill(ballast)
            status, _, reply = http(daemon, "POST", "/v1/chat/completions",
                                    {"model": "a", "messages": msgs})
            assert (status, reply["error"]["code"]) == (507, "storage_full"), reply
            os.remove(ballast)
            assert http(daemon, "POST", "/v1/chat/completions", {"model": "a", "messages": msgs})[0] == 200
            assert daemon.stop() == 0, daemon.read_log()
        finally:
            daemon.close()


def test_http_works_with_curve_on():
    """With CURVE on the ROUTER (its ZeroMQ clients must hold listed keys), the HTTP front's
    inproc connection needs no key: inproc has no security handshake; HTTP has its own keys."""
    import zmq.auth
    home = tempfile.mkdtemp(prefix="nx-http-curve-")
    keys, clients = os.path.join(home, "keys"), os.path.join(home, "clients")
    os.makedirs(keys)
    os.makedirs(clients)
    zmq.auth.create_certificates(keys, "server")
    port = du.free_port()
    daemon = du.Daemon([du.agent("a", "tq")], home=home, conf={
        "curve": {"secret_key": os.path.join(keys, "server.key_secret"), "clients": clients},
        "http": {"listen": f"127.0.0.1:{port}"}})
    daemon.base, daemon.http_port = f"http://127.0.0.1:{port}", port
    try:
        daemon.start_no_ping()
        du.wait_for(lambda: _health_or_none(daemon), timeout=30)
        status, _, body = http(daemon, "POST", "/v1/chat/completions",
                               {"model": "a", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200 and body["usage"]["completion_tokens"] == 8, body
        assert daemon.stop() == 0, daemon.read_log()
    finally:
        daemon.close()


def _health_or_none(d):
    try:
        return health_ok(d)
    except (urllib.error.URLError, ConnectionError):
        return None


def test_ipv6_loopback_and_a_free_port():
    """http.listen [::1]:PORT serves on IPv6; port 0 takes a free one and logs it."""
    port = du.free_port()
    for listen in (f"[::1]:{port}", "127.0.0.1:0"):
        daemon = du.Daemon([du.agent("a", "tq")], conf={"http": {"listen": listen}})
        try:
            daemon.start()
            [line] = [l for l in daemon.read_log().splitlines() if "OpenAI-compatible HTTP on" in l]
            base = line.split(" on ", 1)[1].rsplit("/v1", 1)[0]
            assert base.startswith("http://[::1]:" if listen.startswith("[") else "http://127.0.0.1:")
            assert int(base.rsplit(":", 1)[1]) > 0
            with urllib.request.urlopen(base + "/health", timeout=10) as resp:
                assert json.loads(resp.read()) == {"status": "ok"}
            assert daemon.stop() == 0, daemon.read_log()
        finally:
            daemon.close()
