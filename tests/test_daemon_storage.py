"""test_daemon_storage.py — a full disk, for real: the daemon's home (its SQLite database) on a
small tmpfs that the test fills to the last byte while tasks run, then empties again.

- a request that cannot be stored gets `storage_full` (never `internal`, which means a bug);
- a task whose end cannot be stored ends with `storage_full` and is listed as failed with that
  code at once (not `accepted`/`running` forever), and its row says so once space returns;
- the daemon answers throughout, never crashes, keeps what was committed, and serves again
  when space returns;
- a daemon stopped while the disk is still full stores that end at its next start (from the
  side record nexus.db-ends), so the reason is the real one, not "interrupted by a restart".

Mounting needs the privilege to mount (root in a container, as in CI here); where that is
refused the test is skipped, and says so."""
import errno
import os
import sqlite3
import time

import pytest

import daemon_util as du

LONG = du.agent("long", "tq", generation={"max_tokens": 3000}, limits={"queue": 100})
SHORT = du.agent("short", "tq")


@pytest.fixture
def tmpfs():
    with du.small_tmpfs("4m", prefix="nx-full-") as path:
        yield path


def fill(path):
    """Write `path` until the file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)


def start_long_then_fill(d, c, ballast):
    """Start a streaming long task, wait until it runs, fill the disk, cancel it: its end
    (canceled) can then not be stored. Returns (request id, task id)."""
    rid = c.send({"op": "task", "agent": "long", "input": "count", "stream": True})
    task = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = c.recv(max(0.01, deadline - time.monotonic()))
        if r.get("id") == rid and r["op"] == "accepted":
            task = r["task"]
        if r.get("id") == rid and r["op"] == "token":
            break
    assert task, "the long task was not accepted"
    fill(ballast)
    assert c.call({"op": "cancel", "task": task})["op"] == "canceled"
    return rid, task


def test_full_disk_answers_storage_full_and_recovers(tmpfs):
    d = du.Daemon([LONG, SHORT], conf={"home": tmpfs, "context": 4096})
    ballast = os.path.join(tmpfs, "ballast")
    try:
        d.start()
        with d.client() as c:
            _, _, first = c.task("short", "before")
            assert first["op"] == "result", first
            done_task = first["task"]

            rid, task = start_long_then_fill(d, c, ballast)
            end = du.final_reply(c, rid)
            assert end["op"] == "error" and end["code"] == "storage_full", end
            assert end["task"] == task and "could not be stored" in end["message"], end
            # a new task cannot be stored either: refused, with the same code
            _, _, refused = c.task("short", "while full")
            assert refused["op"] == "error" and refused["code"] == "storage_full", refused
            assert c.call({"op": "ping"})["op"] == "pong"  # still serving
        r = du.task_row(d, task)  # listed as it ended, not accepted/running forever
        assert r["status"] == "failed" and r["error_code"] == "storage_full", r
        assert du.task_row(d, done_task)["status"] == "done"  # what was committed is kept

        os.remove(ballast)  # space returns
        with d.client() as c:
            _, _, again = c.task("short", "after")
            assert again["op"] == "result", again
        r = du.task_row(d, task)
        assert r["status"] == "failed" and r["error_code"] == "storage_full", r
        assert d.stop() == 0, d.read_log()

        # stopped while still full: the end is stored at the next start, with its reason
        d.start()
        with d.client() as c:
            rid, task2 = start_long_then_fill(d, c, ballast)
            end = du.final_reply(c, rid)
            assert end["code"] == "storage_full", end
        assert d.stop() == 0, d.read_log()
        os.remove(ballast)
        d.start()
        r = du.task_row(d, task2)
        assert r["status"] == "failed" and r["error_code"] == "storage_full", r
        assert "interrupted by a restart" not in (r["error"] or ""), r
        assert du.task_row(d, task)["error_code"] == "storage_full"
        assert du.task_row(d, done_task)["status"] == "done"
        assert d.stop() == 0, d.read_log()
        db = sqlite3.connect(os.path.join(tmpfs, "nexus.db"))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
    finally:
        d.close()
