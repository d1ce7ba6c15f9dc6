"""test_daemon_broken_model.py — a task whose model is already known to be broken is refused at
once with model_error (never `accepted` and then failed): a model whose weights did not open at
start, a pipeline with such a stage, and a model whose load failed (until a `load` of it
succeeds, which makes it serve again). The daemon keeps serving the other agents throughout.
One real nexusd, loopback, tiny synthesized models (copies of them, damaged on purpose)."""
import glob
import os
import shutil
import tempfile

import pytest

import daemon_util as du


def weights_of(model_dir):
    files = glob.glob(os.path.join(model_dir, "*.safetensors"))
    assert len(files) == 1, files
    return files[0]


def cut_in_half(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return data


@pytest.fixture(scope="module")
def models():
    root = tempfile.mkdtemp(prefix="nx-broken-models-")
    tq = du.tiny_models()["tq"]
    out = {"tq": tq}
    for name in ("tq_cut", "tq_later"):
        out[name] = os.path.join(root, name)
        shutil.copytree(tq, out[name])
    cut_in_half(weights_of(out["tq_cut"]))  # the header promises more than the file holds
    yield out
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(models):
    agents = [du.agent("good", "tq"), du.agent("cut", "tq_cut"),
              du.agent("later", "tq_later"), du.agent("drafter", "tq", next="cut")]
    with du.running(agents, models=models) as d:
        yield d


def refused_at_once(client, agent, **fields):
    """The task's only reply is an error (no accepted before it); returns it."""
    accepted, tokens, r = client.task(agent, "hello", **fields)
    assert accepted is None and tokens == [], (accepted, r)  # before the fix: accepted first
    assert r["op"] == "error" and r["code"] == "model_error" and "task" not in r, r
    return r


def test_a_model_that_did_not_open_is_refused_at_once(daemon):
    with daemon.client() as c:
        r = refused_at_once(c, "cut")
        assert "agent 'cut'" in r["message"] and "tq_cut" in r["message"], r
        models = {m["name"]: m for m in c.call({"op": "status"})["models"]}
        assert "tq_cut" in models["tq_cut"]["error"], models["tq_cut"]
        assert models["tq"]["error"] is None, models["tq"]
        # nothing was stored for the refused tasks
        rows = c.call({"op": "tasks", "agent": "cut", "limit": 5})["tasks"]
        assert rows == [], rows
        _, _, r = c.task("good", "still serving")
        assert r["op"] == "result", r


def test_a_pipeline_with_a_broken_stage_is_refused_at_once(daemon):
    with daemon.client() as c:
        r = refused_at_once(c, "drafter")  # its `next` is cut
        assert "agent 'cut'" in r["message"], r
        r = refused_at_once(c, "good", route=["cut"])
        assert "agent 'cut'" in r["message"], r
        _, _, r = c.task("good", "no route")
        assert r["op"] == "result", r


def test_a_failed_load_refuses_until_a_load_succeeds(daemon, models):
    path = weights_of(models["tq_later"])
    original = cut_in_half(path)  # opened fine at start; now its load cannot read it
    try:
        with daemon.client() as c:
            accepted, _, r = c.task("later", "first try")  # not known yet: accepted, then fails
            assert accepted is not None, r
            assert r["op"] == "error" and r["code"] == "model_error", r
            r = refused_at_once(c, "later")  # known now
            assert "could not be loaded" in r["message"] and "load" in r["message"], r
            models_ = {m["name"]: m for m in c.call({"op": "status"})["models"]}
            assert models_["tq_later"]["error"], models_["tq_later"]
            _, _, r = c.task("good", "others still served")
            assert r["op"] == "result", r
            with open(path, "wb") as f:  # repaired: a load tries again and clears it
                f.write(original)
            r = c.call({"op": "load", "model": "tq_later"}, timeout=60)
            assert r["op"] == "ok" and r["state"] == "resident", r
            _, _, r = c.task("later", "works again")
            assert r["op"] == "result", r
            models_ = {m["name"]: m for m in c.call({"op": "status"})["models"]}
            assert models_["tq_later"]["error"] is None, models_["tq_later"]
    finally:
        with open(path, "wb") as f:
            f.write(original)
