"""daemon_util.py — what the nexusd integration tests share: tiny models synthesized once per
test session, a temporary home with a nexus.yaml and agent files on free loopback ports, a
real nexusd process started from it (ready when it answers a ping) and stopped by its pid,
and a small pyzmq + msgpack client (DEALER or REQ).

Nothing here mocks anything: the daemon, its SQLite file and its sockets are real."""
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import msgpack
import zmq

BUILD = os.environ.get("NEXUS_BUILD",
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build"))
NEXUSD = os.path.join(BUILD, "nexusd")
NEXUSCTL = os.path.join(BUILD, "nexusctl")
# The pool's device: cpu, except where `make emu-test` runs a test on the CPU emulation of CUDA
# (NEXUS_TEST_DEVICE=cuda with NEXUS_BUILD=build-emu).
DEVICE = os.environ.get("NEXUS_TEST_DEVICE", "cpu")

_MODELS = {}  # name -> directory, synthesized once per process (= per pytest session)
_MODELS_ROOT = []
_TOOL_MODEL = []  # tool_model()'s directory


def _cleanup_models():
    for root in _MODELS_ROOT:
        shutil.rmtree(root, ignore_errors=True)


atexit.register(_cleanup_models)


def tiny_models():
    """{"tq": qwen3 tiny dir, "tl": llama tiny dir}, made once, removed at exit."""
    if not _MODELS:
        root = tempfile.mkdtemp(prefix="nx-daemon-models-")
        _MODELS_ROOT.append(root)
        for name, arch, seed in (("tq", "qwen3", 3), ("tl", "llama", 5)):
            path = os.path.join(root, name)
            r = subprocess.run([NEXUSCTL, "model", "synth", "--arch", arch, "--preset", "tiny",
                                "--seed", str(seed), "--out", path],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            _MODELS[name] = path
    return dict(_MODELS)


def tool_model():
    """A tiny random qwen3 model with the real Qwen3 tokenizer (tests/fixtures/tokenizer/qwen3:
    its template writes <tool_call>, the hermes tool format), made once, removed at exit."""
    if not _TOOL_MODEL:
        import gzip
        root = tempfile.mkdtemp(prefix="nx-tool-model-")
        _MODELS_ROOT.append(root)
        fixture = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                               "tokenizer", "qwen3")
        tok = os.path.join(root, "tok")
        os.makedirs(tok)
        with gzip.open(os.path.join(fixture, "tokenizer.json.gz"), "rb") as src, \
                open(os.path.join(tok, "tokenizer.json"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        shutil.copy(os.path.join(fixture, "tokenizer_config.json"), tok)
        path = os.path.join(root, "tt")
        r = subprocess.run([NEXUSCTL, "model", "synth", "--arch", "qwen3", "--preset", "tiny",
                            "--seed", "7", "--tokenizer", tok, "--out", path],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        _TOOL_MODEL.append(path)
    return _TOOL_MODEL[0]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def to_yaml(value, indent=0):
    """A small YAML writer for the dicts, lists and scalars of our configs (strings are
    JSON-quoted, which YAML reads as double-quoted scalars)."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:\n{to_yaml(v, indent + 2)}")
            else:
                lines.append(f"{pad}{k}: {to_yaml(v)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        return "\n".join(f"{pad}- {to_yaml(v).lstrip()}" if not isinstance(v, dict)
                         else f"{pad}-\n{to_yaml(v, indent + 2)}" for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def agent(name, model, **extra):
    """An agent definition: greedy, few tokens, unless extra says otherwise."""
    d = {"name": name, "model": model, "chat_template": "raw",
         "generation": {"max_tokens": 8, "temperature": 0}}
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return d


class Daemon:
    """A nexusd in a temporary home. `agents` is a list of agent dicts (see agent()); `conf`
    overrides nexus.yaml keys. The model folder holds links to the tiny models."""

    def __init__(self, agents, conf=None, models=None, home=None):
        self.home = home or tempfile.mkdtemp(prefix="nx-daemon-")
        self.port = free_port()
        self.events_port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.events = f"tcp://127.0.0.1:{self.events_port}"
        self.proc = None
        self.config = os.path.join(self.home, "nexus.yaml")
        models_dir = os.path.join(self.home, "models")
        os.makedirs(models_dir, exist_ok=True)
        for name, path in (models or tiny_models()).items():
            link = os.path.join(models_dir, name)
            if not os.path.exists(link):
                os.symlink(path, link)
        agents_dir = os.path.join(self.home, "agents")
        os.makedirs(agents_dir, exist_ok=True)
        for a in agents:
            with open(os.path.join(agents_dir, a["name"] + ".yaml"), "w") as f:
                f.write(to_yaml(a) + "\n")
        c = {"home": self.home, "models": models_dir, "agents": agents_dir,
             "listen": self.endpoint, "events": self.events, "device": DEVICE,
             "pool": "64MiB", "host_cache": "16MiB", "max_message_bytes": "64KiB",
             "context": 512, "max_batch": 8}
        c.update(conf or {})
        self.endpoint, self.events = c["listen"], c["events"]
        with open(self.config, "w") as f:
            f.write(to_yaml(c) + "\n")
        self.log_path = os.path.join(self.home, "nexusd.log")

    def start_no_ping(self, extra_args=()):
        """Start nexusd without waiting for it (CURVE: a plain ping would get no answer)."""
        if getattr(self, "log", None):
            self.log.close()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([NEXUSD, "--config", self.config, *extra_args],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def start(self, extra_args=(), timeout=30):
        self.start_no_ping(extra_args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nexusd exited {self.proc.returncode}:\n{self.read_log()}")
            with Client(self.endpoint) as c:
                try:
                    if c.call({"op": "ping"}, timeout=0.5)["op"] == "pong":
                        return self
                except TimeoutError:
                    pass
        self.kill()
        raise RuntimeError(f"nexusd did not answer a ping in {timeout}s:\n{self.read_log()}")

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, timeout=20):
        """SIGTERM and wait (SIGKILL if it does not stop); returns the exit code."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self):
        """kill -9 by pid."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def close(self, remove=True):
        self.kill()
        if getattr(self, "log", None):
            self.log.close()
        if remove:
            shutil.rmtree(self.home, ignore_errors=True)

    def client(self, **kw):
        return Client(self.endpoint, **kw)

    def ctl(self, *args, timeout=60):
        """nexusctl ARGS --endpoint ENDPOINT."""
        return subprocess.run([NEXUSCTL, *args, "--endpoint", self.endpoint],
                              capture_output=True, text=True, timeout=timeout)


class Client:
    """A DEALER (default) or REQ socket speaking the protocol: one msgpack map per frame."""

    def __init__(self, endpoint, kind=zmq.DEALER, curve=None):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(kind)
        self.sock.linger = 0
        self.sock.sndtimeo = 5000  # a send that cannot be queued raises zmq.Again, never hangs
        self.kind = kind
        if curve:  # (client_public, client_secret, server_public)
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.sock.connect(endpoint)
        self.next_id = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close(0)

    def send(self, msg):
        if "id" not in msg:
            msg = {**msg, "id": self.next_id}
            self.next_id += 1
        self.send_raw(msgpack.packb(msg, use_bin_type=True))
        return msg["id"]

    def send_raw(self, frame):
        if self.kind == zmq.REQ:
            self.sock.send(frame)
        else:
            self.sock.send_multipart([frame])

    def recv(self, timeout=30):
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no reply in {timeout}s")
        frames = self.sock.recv_multipart()
        return msgpack.unpackb(frames[-1], raw=False)

    def call(self, msg, timeout=30):
        """Send and return the first reply with the same id."""
        rid = self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.recv(max(0.01, deadline - time.monotonic()))
            if reply.get("id") == rid:
                return reply

    def task(self, agent, text, timeout=60, **fields):
        """Run a task to its end: (accepted, [tokens], final reply)."""
        rid = self.send({"op": "task", "agent": agent, "input": text, **fields})
        accepted, tokens = None, []
        deadline = time.monotonic() + timeout
        while True:
            r = self.recv(max(0.01, deadline - time.monotonic()))
            if r.get("id") != rid:
                continue
            if r["op"] == "accepted":
                accepted = r
            elif r["op"] == "token":
                tokens.append(r)
            else:
                return accepted, tokens, r

    def batch(self, requests, timeout=120):
        """Send every task request (fields beside op), then collect their final replies (result
        or error), in the requests' order; timeout is per reply awaited."""
        ids = [self.send({"op": "task", **r}) for r in requests]
        finals = {}
        while len(finals) < len(ids):
            r = self.recv(timeout)
            if r.get("id") in ids and r["op"] in ("result", "error"):
                finals[r["id"]] = r
        return [finals[i] for i in ids]


def wait_for(predicate, timeout=30, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not reached")


@contextlib.contextmanager
def running(agents, conf=None, models=None):
    """A started Daemon for a `with` block or a fixture: stopped cleanly (exit 0 asserted, its
    log shown otherwise) and its home removed at the end. models: as for Daemon."""
    d = Daemon(agents, conf=conf, models=models)
    try:
        d.start()
        yield d
        assert d.stop() == 0, d.read_log()
    finally:
        d.close()


@contextlib.contextmanager
def small_tmpfs(size, prefix="nx-tmpfs-"):
    """A fresh tmpfs of `size` (bytes, or a mount size such as "4m") mounted on a temporary
    folder, unmounted and removed after; pytest skips the test, saying why, where mounting is
    not allowed (it needs root in a container)."""
    import pytest
    path = tempfile.mkdtemp(prefix=prefix)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(path)
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)
        os.rmdir(path)


def final_reply(c, rid, timeout=60):
    """The `result` or `error` that ends request `rid` (other replies are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.recv(max(0.01, deadline - time.monotonic()))
        if r.get("id") == rid and r["op"] in ("result", "error"):
            return r


def task_row(d, task):
    """Task `task`'s row as the daemon's `tasks` op lists it (the newest 100)."""
    with d.client() as c:
        rows = c.call({"op": "tasks", "limit": 100})["tasks"]
    return next(r for r in rows if r["task"] == task)
