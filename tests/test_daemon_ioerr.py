"""test_daemon_ioerr.py — the disk under the database answers EIO while tasks run.

A real nexusd with its real SQLite file; tests/fault_ioerr.c (an LD_PRELOAD library) makes
the writes and syncs of nexus.db and its journal fail with EIO while a flag file exists, as
a failing disk or a lost network volume would. What the issue asks of it:

- a request that cannot be stored gets `storage_error`, a code of its own (never `internal`,
  which means a bug) that says the disk failed and the request is not stored;
- a task whose end cannot be stored ends with `storage_error` and is listed as failed at once;
- the daemon answers throughout and never crashes; what was committed before is kept;
- once the disk answers again the daemon stores again, the task's row says how it ended, and
  the database passes `integrity_check`."""
import os
import sqlite3

import pytest

import daemon_util as du

LONG = du.agent("long", "tq", generation={"max_tokens": 3000}, limits={"queue": 100})
SHORT = du.agent("short", "tq")
SHIM = os.path.join(du.BUILD, "tests", "libnx_fault_ioerr.so")


@pytest.fixture
def faulty_daemon(monkeypatch, tmp_path):
    trigger = tmp_path / "disk-fails"
    log = tmp_path / "faults.log"
    monkeypatch.setenv("LD_PRELOAD", SHIM)
    monkeypatch.setenv("NX_FAULT_TRIGGER", str(trigger))
    monkeypatch.setenv("NX_FAULT_LOG", str(log))
    # ASan wants to come first in the library list; the shim only wraps write/sync calls
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "verify_asan_link_order=0")
    d = du.Daemon([LONG, SHORT], conf={"context": 4096})
    try:
        d.start()
        yield d, trigger, log
    finally:
        d.close()


def test_disk_io_errors_answer_storage_error_and_recover(faulty_daemon):
    d, trigger, log = faulty_daemon
    with d.client() as c:
        _, _, first = c.task("short", "before")
        assert first["op"] == "result", first
        done_task = first["task"]

        rid = c.send({"op": "task", "agent": "long", "input": "count", "stream": True})
        task = None
        while True:
            r = c.recv(60)
            if r.get("id") == rid and r["op"] == "accepted":
                task = r["task"]
            if r.get("id") == rid and r["op"] == "token":
                break
        trigger.write_text("on")  # the disk fails from here
        assert c.call({"op": "cancel", "task": task})["op"] == "canceled"
        end = du.final_reply(c, rid)
        assert end["op"] == "error" and end["code"] == "storage_error", end
        assert end["task"] == task and "could not be stored" in end["message"], end

        _, _, refused = c.task("short", "while failing")
        assert refused["op"] == "error" and refused["code"] == "storage_error", refused
        assert "I/O error" in refused["message"], refused
        assert c.call({"op": "ping"})["op"] == "pong"  # still serving
        assert c.call({"op": "status"})["op"] == "status"
    assert log.read_text().strip(), "the shim refused nothing: the test proved nothing"
    r = du.task_row(d, task)  # listed as it ended, not running forever
    assert r["status"] == "failed" and r["error_code"] == "storage_error", r
    assert du.task_row(d, done_task)["status"] == "done"

    trigger.unlink()  # the disk answers again
    with d.client() as c:
        _, _, again = c.task("short", "after")
        assert again["op"] == "result", again
    assert d.stop() == 0, d.read_log()
    assert "Segmentation" not in d.read_log() and "internal" not in d.read_log()
    db = sqlite3.connect(os.path.join(d.home, "nexus.db"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        status = dict(db.execute("SELECT id, status FROM tasks").fetchall())
        assert status[done_task] == "done" and status[again["task"]] == "done", status
        code = db.execute("SELECT error_code FROM tasks WHERE id = ?", (task,)).fetchone()[0]
        assert code == "storage_error", code  # stored once the disk came back
    finally:
        db.close()
