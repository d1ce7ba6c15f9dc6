"""test_pull.py — `nexusctl pull` against tests/hub_server.py, a real HTTP server that serves a
synthesized tiny model the way the Hugging Face hub does: byte-exact files in the store's
layout (blobs by sha256 / git sha1, snapshot symlinks, refs), a second pull that fetches
nothing, revisions, --include and --file, resume after a cut connection and after a kill,
retries (429 with Retry-After, 5xx until the attempts run out), 404s, a gated repository and
its token (which must not follow the redirect to another host), a checksum mismatch and a full
disk that leave nothing under a final name, and `nexusctl run` on what was pulled."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import daemon_util as du
from hub_server import start_hub

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
DEFAULT_FILES = {"config.json", "generation_config.json", "model.safetensors.index.json",
                 "tokenizer.json", "tokenizer_config.json", SHARD1, SHARD2}


@pytest.fixture(scope="module")
def source():
    root = tempfile.mkdtemp(prefix="nx-pull-src-")
    st = os.path.join(root, "st")
    r = subprocess.run([du.NEXUSCTL, "model", "synth", "--arch", "qwen3", "--preset", "tiny",
                        "--shards", "2", "--out", st], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(st, "README.md"), "w") as f:
        f.write("# a tiny test model\n")
    os.makedirs(os.path.join(st, "extra"))
    with open(os.path.join(st, "extra", "notes.txt"), "w") as f:
        f.write("notes in a folder\n")
    open(os.path.join(st, "empty.txt"), "w").close()
    gguf = os.path.join(root, "gguf")
    os.makedirs(gguf)
    for mix in ("f16", "q8_0"):
        r = subprocess.run([du.NEXUSCTL, "model", "synth", "--arch", "qwen3", "--preset", "tiny",
                            "--dtype", mix, "--out", os.path.join(gguf, "tiny-%s.gguf" % mix)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    with open(os.path.join(gguf, "README.md"), "w") as f:
        f.write("# GGUF files\n")
    yield {"st": st, "gguf": gguf}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hub(source):
    h = start_hub(source["st"], "Org/Name", branches=("main", "v1.0"))
    yield h
    h.stop()


@pytest.fixture
def models():
    d = tempfile.mkdtemp(prefix="nx-pull-models-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def pull(hub, models, *args, token=None, json_out=False, timeout=60, **env_extra):
    env = dict(os.environ)
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "NEXUS_MODELS"):
        env.pop(k, None)
    env.update({"HF_ENDPOINT": hub.url, "NEXUS_PULL_BACKOFF_MS": "20",
                "NEXUS_PULL_ATTEMPTS": "3"})
    if token:
        env["HF_TOKEN"] = token
    env.update({k: str(v) for k, v in env_extra.items()})
    cmd = [du.NEXUSCTL, "pull", *args, "--models", models] + (["--json"] if json_out else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def events(r):
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def done_event(r):
    ev = [e for e in events(r) if e["event"] == "done"]
    assert len(ev) == 1, r.stdout + r.stderr
    return ev[0]


def snapshot_of(r):
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    return lines["snapshot"], lines["model"]


def repo_dir(models, repo="Org/Name"):
    org, name = repo.split("/")
    return os.path.join(models, "models--%s--%s" % (org, name))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def git_sha1(path):
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def snapshot_entries(models, repo="Org/Name"):
    snaps = os.path.join(repo_dir(models, repo), "snapshots")
    out = []
    for root, _, names in os.walk(snaps):
        out += [os.path.relpath(os.path.join(root, n), snaps) for n in names]
    return out


def assert_same(src_dir, snap, names):
    for n in names:
        with open(os.path.join(src_dir, n), "rb") as a, open(os.path.join(snap, n), "rb") as b:
            assert a.read() == b.read(), n


# ---- the good path ----------------------------------------------------------------------

def test_pull_default_selection_byte_exact_and_layout(hub, models, source):
    r = pull(hub, models, "Org/Name")
    assert r.returncode == 0, r.stderr
    snap, model = snapshot_of(r)
    commit = hub.repo.commit
    rd = repo_dir(models)
    assert snap == os.path.join(rd, "snapshots", commit)
    assert model == "Org/Name"
    assert set(os.listdir(snap)) == DEFAULT_FILES  # README.md and extra/ are not the engine's
    assert_same(source["st"], snap, DEFAULT_FILES)
    with open(os.path.join(rd, "refs", "main")) as f:
        assert f.read() == commit  # 40 hex digits, no newline
    for n in DEFAULT_FILES:
        link = os.path.join(snap, n)
        assert os.path.islink(link)
        src = os.path.join(source["st"], n)
        blob_id = sha256(src) if n.endswith(".safetensors") else git_sha1(src)
        assert os.readlink(link) == "../../blobs/" + blob_id
        assert os.path.isfile(os.path.join(rd, "blobs", blob_id))
    assert not [b for b in os.listdir(os.path.join(rd, "blobs")) if "." in b]  # no .incomplete
    assert "pulled Org/Name@main: 7 files" in r.stderr


def test_second_pull_is_a_noop(hub, models):
    r1 = pull(hub, models, "Org/Name", json_out=True)
    assert r1.returncode == 0, r1.stderr
    before = {n: hub.stat(n)["requests"] for n in DEFAULT_FILES}
    r2 = pull(hub, models, "Org/Name", json_out=True)
    assert r2.returncode == 0, r2.stderr
    d1, d2 = done_event(r1), done_event(r2)
    assert d1["bytes_fetched"] == d1["bytes"] > 0
    assert d2["bytes_fetched"] == 0 and d2["path"] == d1["path"]
    assert all(e["cached"] for e in events(r2) if e["event"] == "file")
    assert {n: hub.stat(n)["requests"] for n in DEFAULT_FILES} == before  # no file request


def test_revision_by_branch_and_by_commit(hub, models):
    r = pull(hub, models, "Org/Name@v1.0")
    assert r.returncode == 0, r.stderr
    snap, model = snapshot_of(r)
    assert model == "Org/Name@v1.0"
    with open(os.path.join(repo_dir(models), "refs", "v1.0")) as f:
        assert f.read() == hub.repo.commit
    commit = hub.repo.commit
    m2 = os.path.join(models, "second")
    r = pull(hub, m2, "Org/Name@" + commit)
    assert r.returncode == 0, r.stderr
    assert snapshot_of(r)[0] == os.path.join(repo_dir(m2), "snapshots", commit)
    assert not os.path.exists(os.path.join(repo_dir(m2), "refs", commit))  # a commit is no ref


def test_include_adds_files_in_folders(hub, models, source):
    r = pull(hub, models, "Org/Name", "--include", "*.md", "--include", "extra/*",
             "--file", "empty.txt")
    assert r.returncode == 0, r.stderr
    snap, _ = snapshot_of(r)
    assert set(snapshot_entries(models)) == {
        os.path.join(hub.repo.commit, n)
        for n in DEFAULT_FILES | {"README.md", "extra/notes.txt", "empty.txt"}}
    assert os.readlink(os.path.join(snap, "empty.txt")) == "../../blobs/" + git_sha1(
        os.path.join(source["st"], "empty.txt"))
    assert os.path.getsize(os.path.join(snap, "empty.txt")) == 0
    link = os.path.join(snap, "extra", "notes.txt")
    assert os.readlink(link) == "../../../blobs/" + git_sha1(
        os.path.join(source["st"], "extra", "notes.txt"))
    assert_same(source["st"], snap, ["README.md", "extra/notes.txt"])


def test_gguf_repo_needs_file(source, models):
    h = start_hub(source["gguf"], "Org/Tiny-GGUF")
    try:
        r = pull(h, models, "Org/Tiny-GGUF")
        assert r.returncode == 2, r.stderr
        assert "Org/Tiny-GGUF" in r.stderr and "--file" in r.stderr
        assert "tiny-f16.gguf" in r.stderr and "tiny-q8_0.gguf" in r.stderr
        assert not os.path.exists(os.path.join(repo_dir(models, "Org/Tiny-GGUF"), "snapshots"))
        r = pull(h, models, "Org/Tiny-GGUF", "--file", "tiny-q8_0.gguf")
        assert r.returncode == 0, r.stderr
        path, model = snapshot_of(r)
        assert path.endswith("/tiny-q8_0.gguf") and model == "Org/Tiny-GGUF"
        assert snapshot_entries(models, "Org/Tiny-GGUF") == [
            os.path.join(h.repo.commit, "tiny-q8_0.gguf")]
        assert_same(source["gguf"], os.path.dirname(path), ["tiny-q8_0.gguf"])
        r = pull(h, models, "Org/Tiny-GGUF", "--file", "nope.gguf")
        assert r.returncode == 1
        assert "Org/Tiny-GGUF" in r.stderr and "'nope.gguf'" in r.stderr
        assert "not in the repository" in r.stderr
        run = subprocess.run([du.NEXUSCTL, "run", path, "Hi", "--max-tokens", "4"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
    finally:
        h.stop()


def test_run_on_the_pulled_snapshot(hub, models):
    r = pull(hub, models, "Org/Name")
    assert r.returncode == 0, r.stderr
    snap, _ = snapshot_of(r)
    run = subprocess.run([du.NEXUSCTL, "run", snap, "Hi", "--max-tokens", "4", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["ids"]) == 4


def test_pulled_model_by_name_serves_an_agent(hub):
    """The issue's end to end: `nexusctl pull Org/Name` into a daemon's models folder, then
    `nexusctl run Org/Name` and an agent whose `model:` is `Org/Name` (and `Org/Name@v1.0`)
    answering a task over ZeroMQ, the daemon saying the model was pulled."""
    d = du.Daemon([du.agent("hubbed", "Org/Name", generation={"max_tokens": 4}),
                   du.agent("pinned_rev", "Org/Name@v1.0", generation={"max_tokens": 4})],
                  models={})
    try:
        models = os.path.join(d.home, "models")
        env = {k: v for k, v in os.environ.items() if k not in ("NEXUS_MODELS", "HF_TOKEN")}
        env.update({"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": os.path.join(d.home, "no-cache")})
        for name in ("Org/Name", "Org/Name@v1.0"):
            r = subprocess.run([du.NEXUSCTL, "pull", name, "--config", d.config],
                               capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 0, r.stderr
            assert f"model: {name}" in r.stdout, r.stdout
        assert os.path.isdir(os.path.join(models, "models--Org--Name", "snapshots"))
        run = subprocess.run([du.NEXUSCTL, "run", "Org/Name", "Hi", "--max-tokens", "4",
                              "--json", "--config", d.config], capture_output=True, text=True,
                             env=env, timeout=60)
        assert run.returncode == 0, run.stderr
        assert len(json.loads(run.stdout)["ids"]) == 4
        d.start()
        with d.client() as c:
            for agent in ("hubbed", "pinned_rev"):
                _, _, final = c.task(agent, "Hello")
                assert final["op"] == "result", final
            models_reply = c.call({"op": "models"})["models"]
        assert [m["source"] for m in models_reply] == ["pulled"], models_reply
        assert d.stop() == 0, d.read_log()
    finally:
        d.close()


def test_slow_transfer_completes(hub, models, source):
    hub.fault(SHARD1, rate=400_000)
    t0 = time.monotonic()
    r = pull(hub, models, "Org/Name", json_out=True)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 > 0.3  # it did go slowly
    assert_same(source["st"], done_event(r)["path"], [SHARD1])
    progress = [e for e in events(r) if e["event"] == "progress"]
    total = done_event(r)["bytes"]
    assert progress and all(e["bytes_total"] == total for e in progress)
    done = [e["bytes_done"] for e in progress]
    assert done == sorted(done) and done[-1] == total


def test_parallel_ranges_small_chunks(hub, models, source):
    # 16 KiB chunks: each shard is ~10 ranged requests, 4 at once across files
    r = pull(hub, models, "Org/Name", "--jobs", "4", json_out=True, NEXUS_PULL_CHUNK_KIB=16)
    assert r.returncode == 0, r.stderr
    assert hub.stat(SHARD1)["requests"] >= 160128 // 16384 + 1
    assert_same(source["st"], done_event(r)["path"], DEFAULT_FILES)


# ---- resume -------------------------------------------------------------------------------

def test_resume_after_cut_connection(hub, models, source):
    size = os.path.getsize(os.path.join(source["st"], SHARD1))
    hub.fault(SHARD1, cut=32768, times=100)
    r = pull(hub, models, "Org/Name", json_out=True)
    assert r.returncode == 1
    msg = r.stderr.strip().splitlines()[-1]
    assert "Org/Name" in msg and SHARD1 in msg and "cut" in msg
    assert "gave up after 3 attempts" in msg and "kept for a resume" in msg
    assert snapshot_entries(models) == []
    blob = os.path.join(repo_dir(models), "blobs", sha256(os.path.join(source["st"], SHARD1)))
    assert not os.path.exists(blob) and os.path.exists(blob + ".incomplete")
    hub.clear_faults()
    r = pull(hub, models, "Org/Name", json_out=True)
    assert r.returncode == 0, r.stderr
    fetched = [e for e in events(r) if e["event"] == "file" and e["file"] == SHARD1][0]["fetched"]
    assert fetched == size - 3 * 32768  # only what the three cut transfers had not delivered
    assert_same(source["st"], done_event(r)["path"], [SHARD1])
    assert not os.path.exists(blob + ".incomplete") and not os.path.exists(
        blob + ".incomplete.state")


def test_resume_after_kill(hub, models, source):
    size = os.path.getsize(os.path.join(source["st"], SHARD1))
    hub.fault(SHARD1, rate=50_000)
    env = dict(os.environ, HF_ENDPOINT=hub.url)
    env.pop("HF_TOKEN", None)
    p = subprocess.Popen([du.NEXUSCTL, "pull", "Org/Name", "--models", models],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    blob = os.path.join(repo_dir(models), "blobs", sha256(os.path.join(source["st"], SHARD1)))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not os.path.exists(blob + ".incomplete.state"):
        time.sleep(0.05)
    time.sleep(1.6)  # the state file is rewritten about once a second
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert os.path.exists(blob + ".incomplete.state") and not os.path.exists(blob)
    hub.clear_faults()
    r = pull(hub, models, "Org/Name", json_out=True)
    assert r.returncode == 0, r.stderr
    fetched = [e for e in events(r) if e["event"] == "file" and e["file"] == SHARD1][0]["fetched"]
    assert 0 < fetched < size
    assert_same(source["st"], done_event(r)["path"], [SHARD1])


def test_resume_from_a_server_that_ignores_range(hub, models, source):
    size = os.path.getsize(os.path.join(source["st"], SHARD1))
    hub.fault(SHARD1, cut=32768, times=100)
    assert pull(hub, models, "Org/Name").returncode == 1
    hub.fault(SHARD1, no_range=True)  # 200 and the whole file for the resume's Range request
    r = pull(hub, models, "Org/Name", json_out=True)
    assert r.returncode == 0, r.stderr
    fetched = [e for e in events(r) if e["event"] == "file" and e["file"] == SHARD1][0]["fetched"]
    assert fetched == size
    assert_same(source["st"], done_event(r)["path"], [SHARD1])


def test_interrupt_keeps_what_arrived(hub, models, source):
    size = os.path.getsize(os.path.join(source["st"], SHARD1))
    hub.fault(SHARD1, rate=100_000)
    env = dict(os.environ, HF_ENDPOINT=hub.url)
    env.pop("HF_TOKEN", None)
    p = subprocess.Popen([du.NEXUSCTL, "pull", "Org/Name", "--models", models, "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    blob = os.path.join(repo_dir(models), "blobs", sha256(os.path.join(source["st"], SHARD1)))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not os.path.exists(blob + ".incomplete"):
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130, err
    assert "Org/Name: interrupted;" in err and "the same command resumes" in err
    error = [json.loads(x) for x in out.splitlines()][-1]
    assert error["event"] == "error" and error["code"] == "ECANCELED"
    assert snapshot_entries(models) == [] and not os.path.exists(blob)
    hub.clear_faults()
    r = pull(hub, models, "Org/Name", json_out=True)
    assert r.returncode == 0, r.stderr
    fetched = [e for e in events(r) if e["event"] == "file" and e["file"] == SHARD1][0]["fetched"]
    assert 0 < fetched <= size - 20_000  # at least 0.2 s worth was kept at the interrupt
    assert_same(source["st"], done_event(r)["path"], [SHARD1])


def test_untrusted_state_restarts_the_file(hub, models, source):
    size = os.path.getsize(os.path.join(source["st"], SHARD1))
    hub.fault(SHARD1, cut=32768, times=100)
    assert pull(hub, models, "Org/Name").returncode == 1
    blob = os.path.join(repo_dir(models), "blobs", sha256(os.path.join(source["st"], SHARD1)))
    with open(blob + ".incomplete.state", "r+b") as f:  # a flipped bit: the xxh64 fails
        f.seek(40)
        b = f.read(1)
        f.seek(40)
        f.write(bytes([b[0] ^ 1]))
    hub.clear_faults()
    r = pull(hub, models, "Org/Name", json_out=True)
    assert r.returncode == 0, r.stderr
    fetched = [e for e in events(r) if e["event"] == "file" and e["file"] == SHARD1][0]["fetched"]
    assert fetched == size
    assert_same(source["st"], done_event(r)["path"], [SHARD1])


# ---- retries and HTTP errors -------------------------------------------------------------

def test_429_with_retry_after_then_success(hub, models, source):
    hub.fault(SHARD2, status=429, retry_after=1, times=1)
    t0 = time.monotonic()
    r = pull(hub, models, "Org/Name", json_out=True)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 >= 1.0  # Retry-After honoured, not the 20 ms backoff
    retries = [e for e in events(r) if e["event"] == "retry"]
    assert [(e["file"], e["http_status"], e["retry_in_s"]) for e in retries] == [(SHARD2, 429, 1)]
    assert_same(source["st"], done_event(r)["path"], [SHARD2])


def test_5xx_until_attempts_run_out(hub, models):
    hub.fault(SHARD2, status=503, times=100)
    r = pull(hub, models, "Org/Name")
    assert r.returncode == 1
    msg = r.stderr.strip().splitlines()[-1]
    assert msg == ("nexusctl pull: Org/Name: file '%s': HTTP 503 (gave up after 3 attempts)"
                   % SHARD2)
    assert hub.stat(SHARD2)["requests"] == 3
    assert snapshot_entries(models) == []
    assert not os.path.exists(os.path.join(repo_dir(models), "refs", "main"))


def test_transfer_retries_429_then_5xx_exhausted(hub, models, source):
    # the HEAD probes pass; the ranged GETs on the multi handle answer 429 once, then succeed
    hub.fault(SHARD1, status=429, retry_after=1, times=1, get_only=True)
    r = pull(hub, models, "Org/Name", json_out=True)
    assert r.returncode == 0, r.stderr
    retries = [e for e in events(r) if e["event"] == "retry"]
    assert [(e["file"], e["http_status"], e["retry_in_s"]) for e in retries] == [(SHARD1, 429, 1)]
    assert_same(source["st"], done_event(r)["path"], [SHARD1])
    hub.fault(SHARD2, status=502, times=100, get_only=True)
    r = pull(hub, os.path.join(models, "again"), "Org/Name")
    assert r.returncode == 1
    msg = r.stderr.strip().splitlines()[-1]
    assert msg == ("nexusctl pull: Org/Name: file '%s': HTTP 502 (gave up after 3 attempts; 0 "
                   "of %d bytes are kept for a resume)"
                   % (SHARD2, os.path.getsize(os.path.join(source["st"], SHARD2))))
    assert snapshot_entries(os.path.join(models, "again")) == []


def test_404_repo_revision_and_file(hub, models):
    r = pull(hub, models, "Org/Missing")
    assert r.returncode == 1
    assert "Org/Missing: repository or revision 'main' not found" in r.stderr
    assert "HTTP 404: Repository not found" in r.stderr
    r = pull(hub, models, "Org/Name@nope")
    assert r.returncode == 1
    assert "Org/Name: repository or revision 'nope' not found" in r.stderr
    assert "Invalid rev id: nope" in r.stderr
    hub.fault("tokenizer.json", status=404, times=100)
    r = pull(hub, models, "Org/Name")
    assert r.returncode == 1
    assert ("Org/Name: file 'tokenizer.json': not found at commit %s (HTTP 404" %
            hub.repo.commit) in r.stderr
    assert snapshot_entries(models) == []


def test_gated_repo_token_and_no_leak_to_other_host(source, models):
    h = start_hub(source["st"], "Org/Gated", token="hf_sekrit", cdn=True)
    try:
        r = pull(h, models, "Org/Gated")
        assert r.returncode == 1
        assert "Org/Gated: access denied (HTTP 401" in r.stderr
        assert "set HF_TOKEN" in r.stderr and "licence" in r.stderr
        r = pull(h, models, "Org/Gated", token="hf_wrong")
        assert r.returncode == 1 and "HF_TOKEN was sent" in r.stderr
        r = pull(h, models, "Org/Gated", token="hf_sekrit")
        assert r.returncode == 0, r.stderr
        assert_same(source["st"], snapshot_of(r)[0], DEFAULT_FILES)
        assert h.auth_seen and not [p for p in h.auth_seen if p.startswith("/blobs/")]
    finally:
        h.stop()


def test_expired_cdn_url_is_asked_again(source, models):
    # the blob server (another host: the hub's CDN) refuses the first GET, as it refuses a
    # signed URL that expired; pull asks the hub for the file's URL again, once
    h = start_hub(source["st"], "Org/Name", cdn=True)
    try:
        h.fault(SHARD1, status=403, times=1, get_only=True)
        r = pull(h, models, "Org/Name")
        assert r.returncode == 0, r.stderr
        assert_same(source["st"], snapshot_of(r)[0], [SHARD1])
        h.fault(SHARD2, status=403, times=2, get_only=True)  # refused again: an error
        r = pull(h, os.path.join(models, "again"), "Org/Name")
        assert r.returncode == 1
        assert "Org/Name: file '%s': access denied (HTTP 403" % SHARD2 in r.stderr
    finally:
        h.stop()


def test_gated_files_with_public_listing(source, models):
    # the hub's own way: the repository's listing is public, its files need the token
    h = start_hub(source["st"], "Org/Gated", token="hf_sekrit", public_api=True)
    try:
        r = pull(h, models, "Org/Gated")
        assert r.returncode == 1
        assert "Org/Gated: file 'config.json': access denied (HTTP 401" in r.stderr
        assert "set HF_TOKEN" in r.stderr
        assert snapshot_entries(models, "Org/Gated") == []
        r = pull(h, models, "Org/Gated", token="hf_sekrit")
        assert r.returncode == 0, r.stderr
    finally:
        h.stop()


# ---- integrity and disk ------------------------------------------------------------------

def test_wrong_checksum_leaves_nothing(hub, models, source):
    hub.fault(SHARD1, corrupt=True)
    r = pull(hub, models, "Org/Name")
    assert r.returncode == 1
    msg = r.stderr.strip().splitlines()[-1]
    want = sha256(os.path.join(source["st"], SHARD1))
    assert "Org/Name: file '%s': sha256 mismatch: the hub says %s" % (SHARD1, want) in msg
    blobs = os.path.join(repo_dir(models), "blobs")
    assert not [b for b in os.listdir(blobs) if b.startswith(want)]  # no blob, no .incomplete
    assert snapshot_entries(models) == []
    hub.fault("config.json", corrupt=True)
    hub.fault(SHARD1)
    r = pull(hub, os.path.join(models, "again"), "Org/Name")
    assert r.returncode == 1
    assert "Org/Name: file 'config.json': git blob sha1 mismatch" in r.stderr


def test_full_disk(hub, source):
    with du.small_tmpfs("256k", prefix="nx-pull-full-") as models:
        r = pull(hub, models, "Org/Name")
        assert r.returncode == 1
        msg = r.stderr.strip().splitlines()[-1]
        assert "Org/Name: file '" in msg and "no space left on device" in msg
        assert snapshot_entries(models) == []
        blobs = os.path.join(repo_dir(models), "blobs")
        for n in (SHARD1, SHARD2):
            sha = sha256(os.path.join(source["st"], n))
            if "'%s'" % n in msg:
                assert not os.path.exists(os.path.join(blobs, sha))
                assert not os.path.exists(os.path.join(blobs, sha + ".incomplete"))


# ---- usage --------------------------------------------------------------------------------

def test_usage_errors(hub, models):
    for args, text in ((["--jobs", "0"], "--jobs takes 1 to 64"),
                       (["not-a-name"], "not a hub repository name"),
                       (["Org/Name", "Org/Other"], "one too many"),
                       (["Org/Name", "--bogus"], "unknown option '--bogus'"),
                       ([], "which repository")):
        r = pull(hub, models, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert text in r.stderr
    env = dict(os.environ, HF_ENDPOINT=hub.url)
    env.pop("NEXUS_MODELS", None)
    r = subprocess.run([du.NEXUSCTL, "pull", "Org/Name"], capture_output=True, text=True,
                       env=env, cwd=models, timeout=30)
    assert r.returncode == 2 and "no models folder" in r.stderr
