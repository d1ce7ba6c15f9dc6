"""Crash durability of the store with real processes: tests/tool_store_crash writes tasks in
group commits of 10 and prints each id only after its commit returned; we SIGKILL it
mid-stream, several times on the same file, and check that every id it printed is in the
database (and every task it said it finished is done), that groups are all-or-nothing, and that
PRAGMA integrity_check is ok, both through Python's sqlite3 and through the store itself.

kill -9 loses the process, not the machine: this proves commit-before-print and recovery from
a hot WAL; surviving power loss rests on synchronous=FULL (checked in tests/test_store.c)."""
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import tempfile

import pytest

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
TOOL = os.path.join(BUILD, "tests", "tool_store_crash")
HANG_GUARD_S = 60  # only against a hung writer; no test asserts on time


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="nx-store-crash-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def read_until(proc, want_tasks):
    """Read the writer's stdout until it has printed want_tasks 'task' lines; return the text."""
    fd = proc.stdout.fileno()
    buf = b""
    while buf.count(b"task ") < want_tasks:
        ready, _, _ = select.select([fd], [], [], HANG_GUARD_S)
        assert ready, "the writer printed nothing for %d s" % HANG_GUARD_S
        chunk = os.read(fd, 65536)
        if not chunk:
            err = proc.stderr.read().decode(errors="replace")
            pytest.fail("the writer exited early (%s): %s" % (proc.wait(), err))
        buf += chunk
    return buf


def kill_and_drain(proc, buf):
    """SIGKILL the writer, then collect what it had already written to the pipe."""
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    proc.stderr.close()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    text = (buf + rest).decode()
    lines = text.split("\n")[:-1]  # a line without its newline is not counted
    tasks = {int(l.split()[1]) for l in lines if l.startswith("task ")}
    done = {int(l.split()[1]) for l in lines if l.startswith("done ")}
    return tasks, done


def check_database(db, printed, done):
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        status = dict(con.execute("SELECT id, status FROM tasks"))
        messages = {r[0] for r in con.execute("SELECT task FROM messages")}
    con.close()
    missing = sorted(printed - status.keys())
    assert not missing, "committed ids lost after kill -9: %s" % missing[:20]
    not_done = sorted(i for i in done if status[i] != "done")
    assert not not_done, "tasks reported done are not: %s" % not_done[:20]
    assert printed <= messages  # the message of each task went in its group
    # each group of 10 (with its messages and finishes) is one transaction: all or nothing
    assert len(status) % 10 == 0
    assert sorted(status) == list(range(1, len(status) + 1))
    return status


def test_committed_tasks_survive_kill_9(tmp):
    assert os.access(TOOL, os.X_OK), "build %s first (make CUDA=0 %s)" % (TOOL, TOOL)
    db = os.path.join(tmp, "nexus.db")
    printed, done = set(), set()
    for round_no in range(3):
        proc = subprocess.Popen([TOOL, db], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        buf = read_until(proc, 200)
        tasks, finished = kill_and_drain(proc, buf)
        assert len(tasks) >= 200
        assert not (tasks & printed), "ids reused after a crash"
        printed |= tasks
        done |= finished
        # killed, not closed: the WAL is still there and must be recovered from
        assert os.path.getsize(db + "-wal") > 0
        status = check_database(db, printed, done)
        assert len(status) >= len(printed)

    # the store itself reopens the file after the crash and sees the same tasks
    listed = subprocess.run([TOOL, "--list", db], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = [l.split() for l in listed.stdout.splitlines()]
    ids = [int(r[0]) for r in rows]
    assert ids == sorted(ids)
    assert printed <= set(ids)
    assert all(r[1] == "done" for r in rows if int(r[0]) in done)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_list_mode_usage(tmp):
    bad = subprocess.run([TOOL], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    garbage = os.path.join(tmp, "garbage.db")
    with open(garbage, "wb") as f:
        f.write(b"not a database at all\n" * 500)
    out = subprocess.run([TOOL, "--list", garbage], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert garbage in out.stderr and "not a database" in out.stderr
