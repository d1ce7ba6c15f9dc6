"""test_model_store.py — model names and the store (modelstore.h, README "Model names and the
store"). Stores are built by hand here, file by file in the Hugging Face cache's layout
(models--Org--Name/{refs/REV, blobs/SHA256, snapshots/COMMIT/FILE -> ../../blobs/SHA256}), from
a model `nexusctl model synth` writes; then `nexusctl run`, `model list`, `rm`, `nexusd` and
`nexusd --check` must find (or refuse) them by name."""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

import pytest

import daemon_util as du

C1 = "1" * 40  # commits: snapshot folder names
C2 = "2a" * 20
C3 = "3b" * 20


@pytest.fixture(scope="module")
def synth():
    """A tiny safetensors model folder and a tiny .gguf, made once; their seeds differ, so
    their greedy tokens tell which one a name resolved to."""
    root = tempfile.mkdtemp(prefix="nx-ms-synth-")
    folder = os.path.join(root, "tiny")
    gguf = os.path.join(root, "tiny.gguf")
    for out, extra in ((folder, []), (gguf, ["--dtype", "q8_0", "--seed", "7"])):
        r = subprocess.run([du.NEXUSCTL, "model", "synth", "--arch", "qwen3", "--preset", "tiny",
                            "--out", out, *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    yield {"folder": folder, "gguf": gguf}
    shutil.rmtree(root, ignore_errors=True)


def folder_files(folder):
    return {name: os.path.join(folder, name) for name in os.listdir(folder)}


def put_snapshot(root, repo, commit, files, refs=(), mtime=None):
    """Add snapshot `commit` of `repo` ("Org/Name") to the cache at `root`: each file's bytes
    become blobs/<sha256> (shared with other snapshots holding the same bytes) and
    snapshots/<commit>/<name> a relative link to it; refs name the commit. Returns the
    snapshot folder."""
    org, name = repo.split("/")
    repo_dir = os.path.join(root, f"models--{org}--{name}")
    snap = os.path.join(repo_dir, "snapshots", commit)
    os.makedirs(os.path.join(repo_dir, "blobs"), exist_ok=True)
    os.makedirs(snap, exist_ok=True)
    for file_name, src in files.items():
        with open(src, "rb") as f:
            data = f.read()
        blob_id = hashlib.sha256(data).hexdigest()
        blob = os.path.join(repo_dir, "blobs", blob_id)
        if not os.path.exists(blob):
            with open(blob, "wb") as f:
                f.write(data)
        os.symlink(os.path.join("..", "..", "blobs", blob_id), os.path.join(snap, file_name))
    for ref in refs:
        path = os.path.join(repo_dir, "refs", ref)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(commit)
    if mtime is not None:
        os.utime(snap, (mtime, mtime))
    return snap


def blobs(root, repo):
    org, name = repo.split("/")
    return sorted(os.listdir(os.path.join(root, f"models--{org}--{name}", "blobs")))


@pytest.fixture
def env(tmp_path):
    """An environment with no Hugging Face cache of the user's: HOME is a fresh folder."""
    e = dict(os.environ)
    for k in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "NEXUS_MODELS"):
        e.pop(k, None)
    home = tmp_path / "home"
    home.mkdir()
    e["HOME"] = str(home)
    return e


def ctl(env, *args, cwd=None, timeout=60):
    return subprocess.run([du.NEXUSCTL, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def run(env, model, *extra, cwd=None):
    return ctl(env, "run", model, "Hi", "--max-tokens", "4", "--json", "--template", "raw",
               "--device", "cpu", *extra, cwd=cwd)


# ---- resolving names: nexusctl run ---------------------------------------------------------


def test_run_a_pulled_model_by_name(synth, env, tmp_path):
    models = tmp_path / "models"
    put_snapshot(models, "Org/Tiny", C1, folder_files(synth["folder"]), refs=["main"])
    r = run(env, "Org/Tiny", "--models", str(models))
    assert r.returncode == 0, r.stderr
    by_name = json.loads(r.stdout)
    direct = run(env, synth["folder"])
    assert direct.returncode == 0, direct.stderr
    assert by_name["ids"] == json.loads(direct.stdout)["ids"]
    # NEXUS_MODELS says the same as --models
    r = run({**env, "NEXUS_MODELS": str(models)}, "Org/Tiny")
    assert r.returncode == 0, r.stderr


def two_revisions(synth, root):
    """Org/Tiny with a safetensors snapshot C1 (refs/main) and a GGUF snapshot C2 (refs/v2)."""
    put_snapshot(root, "Org/Tiny", C1, folder_files(synth["folder"]), refs=["main"])
    put_snapshot(root, "Org/Tiny", C2, {"tiny-q8_0.gguf": synth["gguf"]}, refs=["v2"])


def test_revisions_by_ref_and_by_commit(synth, env, tmp_path):
    models = tmp_path / "models"
    two_revisions(synth, models)
    gguf_text = json.loads(run(env, synth["gguf"]).stdout)["ids"]
    folder_text = json.loads(run(env, synth["folder"]).stdout)["ids"]
    for name, text in (("Org/Tiny@v2", gguf_text), ("Org/Tiny@" + C2[:7], gguf_text),
                       ("Org/Tiny@" + C2, gguf_text), ("Org/Tiny@main", folder_text),
                       ("Org/Tiny", folder_text), ("Org/Tiny@" + C1[:12], folder_text)):
        r = run(env, name, "--models", str(models))
        assert r.returncode == 0, (name, r.stderr)
        assert json.loads(r.stdout)["ids"] == text, name
    # a revision that is nowhere: the pull hint keeps it
    r = run(env, "Org/Tiny@v9", "--models", str(models))
    assert r.returncode == 1
    assert "model 'Org/Tiny@v9' not found in " + str(models) in r.stderr, r.stderr
    assert "no revision 'v9'" in r.stderr and "`nexusctl pull Org/Tiny@v9`" in r.stderr
    # a prefix two snapshots share is ambiguous
    put_snapshot(models, "Org/Tiny", C2[:8] + "f" * 32, {"m.gguf": synth["gguf"]})
    r = run(env, "Org/Tiny@" + C2[:7], "--models", str(models))
    assert r.returncode == 1 and "names 2 snapshots" in r.stderr, r.stderr


def test_no_ref_main_takes_the_newest_snapshot(synth, env, tmp_path):
    models = tmp_path / "models"
    put_snapshot(models, "Org/Tiny", C1, folder_files(synth["folder"]), mtime=1_000_000)
    put_snapshot(models, "Org/Tiny", C2, {"t.gguf": synth["gguf"]}, mtime=2_000_000)
    gguf_text = json.loads(run(env, synth["gguf"]).stdout)["ids"]
    r = run(env, "Org/Tiny", "--models", str(models))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ids"] == gguf_text


def test_hf_cache_roots_and_the_store_first(synth, env, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    hub = tmp_path / "hub"
    put_snapshot(hub, "Org/Tiny", C2, {"t.gguf": synth["gguf"]}, refs=["main"])
    gguf_text = json.loads(run(env, synth["gguf"]).stdout)["ids"]
    # HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, HOME/.cache/huggingface/hub
    hf_home = tmp_path / "hfhome"
    xdg = tmp_path / "xdg"
    home_cache = os.path.join(env["HOME"], ".cache", "huggingface")
    os.makedirs(hf_home)
    os.makedirs(xdg / "huggingface")
    os.makedirs(home_cache)
    os.symlink(hub, hf_home / "hub")
    os.symlink(hub, xdg / "huggingface" / "hub")
    for extra in ({"HF_HUB_CACHE": str(hub)}, {"HF_HOME": str(hf_home)},
                  {"XDG_CACHE_HOME": str(xdg)}, {}):
        if not extra:
            os.symlink(hub, os.path.join(home_cache, "hub"))
        r = run({**env, **extra}, "Org/Tiny", "--models", str(models))
        assert r.returncode == 0, (extra, r.stderr)
        assert json.loads(r.stdout)["ids"] == gguf_text, extra
    # with no models folder at all, a hub name still resolves in the cache
    r = run({**env, "HF_HUB_CACHE": str(hub)}, "Org/Tiny", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    # the store wins over the cache
    put_snapshot(models, "Org/Tiny", C1, folder_files(synth["folder"]), refs=["main"])
    folder_text = json.loads(run(env, synth["folder"]).stdout)["ids"]
    r = run({**env, "HF_HUB_CACHE": str(hub)}, "Org/Tiny", "--models", str(models))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ids"] == folder_text != gguf_text


def test_missing_model_says_pull(env, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    hub = tmp_path / "hub"
    r = run({**env, "HF_HUB_CACHE": str(hub)}, "Org/Absent@v1", "--models", str(models))
    assert r.returncode == 1
    assert ("model 'Org/Absent@v1' not found in %s or the Hugging Face cache (%s, %s/.cache/"
            "huggingface/hub): run `nexusctl pull Org/Absent@v1`"
            % (models, hub, env["HOME"])) in r.stderr, r.stderr
    # a bare name is looked up in the models folder only
    r = run(env, "absent", "--models", str(models))
    assert r.returncode == 1
    assert "model 'absent' is neither a path here nor in the models folder " + str(models) \
        in r.stderr, r.stderr


def test_broken_snapshots_are_not_models(synth, env, tmp_path):
    models = tmp_path / "models"
    snap = put_snapshot(models, "Org/Dangling", C1, folder_files(synth["folder"]),
                        refs=["main"])
    blob = os.path.realpath(os.path.join(snap, "model.safetensors"))
    os.rename(blob, blob + ".incomplete")  # the blob never finished
    r = run(env, "Org/Dangling", "--models", str(models))
    assert r.returncode == 1
    assert "snapshot '%s' is not a whole model: 'model.safetensors' links to a blob that is " \
        "missing" % snap in r.stderr, r.stderr
    snap = put_snapshot(models, "Org/Two", C1, {"a.gguf": synth["gguf"], "b.gguf": synth["gguf"]},
                        refs=["main"])
    r = run(env, "Org/Two", "--models", str(models))
    assert r.returncode == 1
    assert "snapshot '%s' holds 2 .gguf files" % snap in r.stderr and "name one by its path" \
        in r.stderr, r.stderr
    r = run(env, os.path.join(snap, "b.gguf"))  # ... as it says
    assert r.returncode == 0, r.stderr
    empty = os.path.join(models, "models--Org--Empty", "snapshots", C1)
    os.makedirs(empty)
    r = run(env, "Org/Empty", "--models", str(models))
    assert r.returncode == 1
    assert "snapshot '%s' holds neither config.json nor a .gguf file" % empty in r.stderr


def test_paths_and_folder_names_as_before(synth, env, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(synth["folder"], models / "plain")
    os.symlink(synth["gguf"], models / "plain.gguf")
    for name in ("plain", "plain.gguf"):
        r = run(env, name, "--models", str(models))
        assert r.returncode == 0, (name, r.stderr)
    # "sub/dir" that is no pulled model but a folder here is still a path
    os.makedirs(tmp_path / "sub")
    os.symlink(synth["folder"], tmp_path / "sub" / "dir")
    r = run(env, "sub/dir", "--models", str(models), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr


# ---- nexusctl model list -------------------------------------------------------------------


def test_model_list(synth, env, tmp_path):
    models = tmp_path / "models"
    two_revisions(synth, models)
    os.symlink(synth["folder"], models / "plain")
    os.symlink(synth["gguf"], models / "plain.gguf")
    os.makedirs(models / "notes")  # no config.json: not a model
    put_snapshot(models, "Org/Two", C1, {"a.gguf": synth["gguf"], "b.gguf": synth["gguf"]})
    hub = tmp_path / "hub"
    put_snapshot(hub, "Cache/Tiny", C3, {"t.gguf": synth["gguf"]}, refs=["main"])
    put_snapshot(hub, "Org/Tiny", C1, folder_files(synth["folder"]), refs=["main"])  # shadowed
    e = {**env, "HF_HUB_CACHE": str(hub)}
    r = ctl(e, "model", "list", "--models", str(models), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["models_dir"] == str(models)
    assert out["hf_cache"] == [str(hub), env["HOME"] + "/.cache/huggingface/hub"]
    rows = {m["name"]: m for m in out["models"]}
    assert list(rows) == ["Org/Tiny", "Org/Tiny@v2", "plain", "plain.gguf", "Cache/Tiny"]
    folder_bytes = sum(os.path.getsize(p) for p in folder_files(synth["folder"]).values())
    gguf_bytes = os.path.getsize(synth["gguf"])
    repo = os.path.join(models, "models--Org--Tiny")
    assert rows["Org/Tiny"] == {"name": "Org/Tiny", "bytes": folder_bytes, "source": "pulled",
                                "revs": ["main"], "commit": C1,
                                "path": os.path.join(repo, "snapshots", C1)}
    assert rows["Org/Tiny@v2"]["path"] == os.path.join(repo, "snapshots", C2, "tiny-q8_0.gguf")
    assert rows["Org/Tiny@v2"]["bytes"] == gguf_bytes and rows["Org/Tiny@v2"]["revs"] == ["v2"]
    assert rows["plain"]["source"] == rows["plain.gguf"]["source"] == "folder"
    assert rows["plain"]["bytes"] == folder_bytes and rows["plain"]["commit"] is None
    assert rows["Cache/Tiny"]["source"] == "hf-cache" and rows["Cache/Tiny"]["commit"] == C3
    # the snapshot no name can pick is said on stderr, not listed
    assert "skipped Org/Two@%s" % C1 in r.stderr and "holds 2 .gguf files" in r.stderr
    r = ctl(e, "model", "list", "--models", str(models))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "SOURCE", "REV", "COMMIT", "PATH"]
    assert lines[1].split()[:6] == ["Org/Tiny", "%.1f" % (folder_bytes / 1e3), "kB", "pulled",
                                    "main", C1[:12]]
    assert lines[5].split()[0] == "Cache/Tiny" and "hf-cache" in lines[5].split()
    # blobs that two snapshots share count once in each
    put_snapshot(models, "Org/Dup", C1, {"a.gguf": synth["gguf"], "b.bin": synth["gguf"]})
    r = ctl(e, "model", "list", "--models", str(models), "--json")
    dup = {m["name"]: m for m in json.loads(r.stdout)["models"]}["Org/Dup"]
    assert dup["bytes"] == gguf_bytes, dup


# ---- nexusctl rm ---------------------------------------------------------------------------


def config_with_agent(tmp_path, models, model):
    """A nexus.yaml whose one agent names `model`."""
    cfg = tmp_path / "cfg"
    os.makedirs(cfg / "agents", exist_ok=True)
    (cfg / "nexus.yaml").write_text(f"home: var\nmodels: {models}\nagents: agents\n")
    (cfg / "agents" / "a.yaml").write_text(f"name: a\nmodel: {model}\n")
    return str(cfg / "nexus.yaml")


def test_rm_a_revision_keeps_shared_blobs(synth, env, tmp_path):
    models = tmp_path / "models"
    two_revisions(synth, models)
    # C3 shares every blob of C1 and adds none
    put_snapshot(models, "Org/Tiny", C3, folder_files(synth["folder"]), refs=["v3"])
    before = blobs(models, "Org/Tiny")
    config = config_with_agent(tmp_path, models, "Org/Tiny@v2")
    r = ctl(env, "rm", "Org/Tiny@v2", "--config", config)
    assert r.returncode == 1
    assert "model 'Org/Tiny@v2' is used by a (%s)" % (tmp_path / "cfg" / "agents" / "a.yaml") \
        in r.stderr and "--force" in r.stderr, r.stderr
    # no config (and none in the folder it runs from): nothing is known about the agents
    r = ctl(env, "rm", "Org/Tiny@v2", "--models", str(models), cwd=str(tmp_path))
    assert r.returncode == 1
    assert "cannot tell whether an agent uses 'Org/Tiny@v2'" in r.stderr, r.stderr
    r = ctl(env, "rm", "Org/Tiny@v2", "--config", config, "--force", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    gguf_blob = hashlib.sha256(open(synth["gguf"], "rb").read()).hexdigest()
    assert out["commit"] == C2 and out["bytes_freed"] == os.path.getsize(synth["gguf"])
    assert blobs(models, "Org/Tiny") == sorted(set(before) - {gguf_blob})
    repo = models / "models--Org--Tiny"
    assert sorted(os.listdir(repo / "snapshots")) == [C1, C3]
    assert sorted(os.listdir(repo / "refs")) == ["main", "v3"]
    # removing C1 by its ref frees nothing: C3 links to the same blobs
    config = config_with_agent(tmp_path, models, "Org/Tiny@v3")
    r = ctl(env, "rm", "Org/Tiny@main", "--config", config, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes_freed"] == 0
    assert blobs(models, "Org/Tiny") == sorted(set(before) - {gguf_blob})
    r = run(env, "Org/Tiny", "--models", str(models))  # C3 is the one left: still a model
    assert r.returncode == 0, r.stderr
    # the last snapshot takes the repo with it
    r = ctl(env, "rm", "Org/Tiny@" + C3[:7], "--models", str(models), "--force")
    assert r.returncode == 0, r.stderr
    assert os.listdir(models) == []


def test_rm_refusals_and_whole_repo(synth, env, tmp_path):
    models = tmp_path / "models"
    two_revisions(synth, models)
    os.symlink(synth["folder"], models / "plain")
    hub = tmp_path / "hub"
    put_snapshot(hub, "Cache/Tiny", C3, {"t.gguf": synth["gguf"]}, refs=["main"])
    e = {**env, "HF_HUB_CACHE": str(hub)}
    config = config_with_agent(tmp_path, models, "plain")
    r = ctl(e, "rm", "Cache/Tiny", "--config", config)
    assert r.returncode == 1
    assert "model 'Cache/Tiny' is in the Hugging Face cache (%s/models--Cache--Tiny), which is " \
        "yours" % hub in r.stderr, r.stderr
    r = ctl(e, "rm", "plain", "--config", config)
    assert r.returncode == 1
    assert "'plain' is a model you put in the models folder (%s/plain), not a pulled one: " \
        "delete it by hand" % models in r.stderr, r.stderr
    r = ctl(e, "rm", "Org/Absent", "--config", config)
    assert r.returncode == 1 and "model 'Org/Absent' is not in the store %s" % models in r.stderr
    r = ctl(e, "rm", "Org/Tiny", "--config", config)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("removed Org/Tiny (")
    assert sorted(os.listdir(models)) == ["plain"]  # no hidden leftovers either
    assert os.path.isdir(hub / "models--Cache--Tiny")


# ---- nexusd ------------------------------------------------------------------------------------


def test_nexusd_serves_hub_names(synth, tmp_path, monkeypatch):
    store = tmp_path / "store"
    two_revisions(synth, store)
    hub = tmp_path / "hub"
    put_snapshot(hub, "Cache/Tiny", C3, {"t.gguf": synth["gguf"]}, refs=["main"])
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    agents = [du.agent("hub", "Org/Tiny"), du.agent("hub_main", "Org/Tiny@main"),
              du.agent("hub_v2", "Org/Tiny@v2"), du.agent("cached", "Cache/Tiny"),
              du.agent("plain", "plain")]
    models = {"models--Org--Tiny": str(store / "models--Org--Tiny"), "plain": synth["folder"]}
    with du.running(agents, models=models) as d:
        with d.client() as c:
            for name in ("hub", "hub_v2", "cached"):
                _, _, r = c.task(name, "Hi")
                assert r["op"] == "result", (name, r)
            st = c.call({"op": "models"})
        by_name = {m["name"]: m for m in st["models"]}
        # Org/Tiny and Org/Tiny@main are one snapshot: one model, named as first written
        assert sorted(by_name) == ["Cache/Tiny", "Org/Tiny", "Org/Tiny@v2", "plain"], by_name
        assert sorted(by_name["Org/Tiny"]["agents"]) == ["hub", "hub_main"]
        assert by_name["Org/Tiny"]["source"] == "pulled"
        assert by_name["Org/Tiny"]["path"].endswith("/models--Org--Tiny/snapshots/" + C1)
        assert by_name["Org/Tiny@v2"]["path"].endswith(C2 + "/tiny-q8_0.gguf")
        assert by_name["Cache/Tiny"]["source"] == "hf-cache"
        assert by_name["Cache/Tiny"]["path"].startswith(str(hub))
        assert by_name["plain"]["source"] == "folder"
        r = d.ctl("agents", "--json")
        assert r.returncode == 0, r.stderr
        agents_out = {a["name"]: a for a in json.loads(r.stdout)["agents"]}
        assert agents_out["hub_main"]["model"] == "Org/Tiny@main"  # as written
        for name in ("Org/Tiny@v2", "Org/Tiny@main"):  # a model's name, or an agent's spelling
            r = d.ctl("load", name, "--json")
            assert r.returncode == 0, (name, r.stderr)
        assert json.loads(r.stdout)["model"] == "Org/Tiny", r.stdout


def test_nexusd_check_says_pull(synth, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    d = du.Daemon([du.agent("miss", "Org/Missing@v1")], models={"plain": synth["folder"]})
    try:
        models = os.path.join(d.home, "models")
        for args in (("--check",), ()):
            r = subprocess.run([du.NEXUSD, "--config", d.config, *args], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 1, r.stdout + r.stderr
            agent_file = os.path.join(d.home, "agents", "miss.yaml")
            assert f"{agent_file}:2:8: field 'model': model 'Org/Missing@v1' not found in " \
                f"{models} or the Hugging Face cache ({tmp_path / 'hub'}" in r.stderr, r.stderr
            assert "run `nexusctl pull Org/Missing@v1`" in r.stderr, r.stderr
    finally:
        d.close()


def test_offline_commands_take_names(synth, env, tmp_path):
    models = tmp_path / "models"
    two_revisions(synth, models)
    m = ["--models", str(models)]
    r = ctl(env, "model", "inspect", "Org/Tiny", "--json", "--summary", *m)
    assert r.returncode == 0, r.stderr
    r = ctl(env, "model", "verify", "Org/Tiny", "--json", *m)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == os.path.join(models, "models--Org--Tiny",
                                                        "snapshots", C1)
    r = ctl(env, "model", "load", "Org/Tiny@v2", "--device", "cpu", "--json", *m)
    assert r.returncode == 0, r.stderr
    direct = ctl(env, "tokenize", synth["folder"], "Hello there")
    r = ctl(env, "tokenize", "Org/Tiny", "Hello there", *m)
    assert r.returncode == 0 and r.stdout == direct.stdout, r.stderr
    out = tmp_path / "q.gguf"
    r = ctl(env, "model", "quantize", "Org/Tiny", str(out), "--type", "q8_0", *m)
    assert r.returncode == 0 and out.exists(), r.stderr
    # --config FILE: its models folder
    config = config_with_agent(tmp_path, models, "Org/Tiny")
    r = ctl(env, "model", "verify", "Org/Tiny@v2", "--config", config)
    assert r.returncode == 0 and r.stdout.startswith(
        "OK %s/models--Org--Tiny/snapshots/%s/tiny-q8_0.gguf:" % (models, C2)), r.stderr
    r = run(env, "Org/Tiny@v2", "--config", config)
    assert r.returncode == 0, r.stderr
    r = ctl(env, "model", "list", "--models", str(tmp_path / "absent"))
    assert r.returncode == 0
    assert "the models folder %s does not exist" % (tmp_path / "absent") in r.stderr
