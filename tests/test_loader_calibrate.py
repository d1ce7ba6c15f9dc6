"""`nexusctl loader calibrate` and the I/O shape a `nexusctl model load` reads with: calibrate
writes the per-file-system cache; the next load on that file system says io_source calibrated
with the stored shape; flags override it; a corrupt cache warns once (file:line) and the load
goes on with the device rule; another file system's entry is not used; `loader show` on this
machine's real /sys gives the README's rule. Real binary, real files, real io_uring where the
kernel allows it; the cache is pointed into a temp dir (NEXUS_LOADER_CACHE), never $HOME."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

BUILD = os.environ.get("NEXUS_BUILD", os.path.join(os.path.dirname(__file__), "..", "build"))
NEXUSCTL = os.path.join(BUILD, "nexusctl")
MIB = 1 << 20


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="nx-calibrate-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def env_for(tmp):
    env = dict(os.environ)
    env["NEXUS_LOADER_CACHE"] = os.path.join(tmp, "cache", "loader-io.txt")
    env["HOME"] = os.path.join(tmp, "home")  # nothing may land in the real one
    env.pop("XDG_CACHE_HOME", None)
    env.pop("NX_LOADER_IO", None)
    return env


def run(tmp, *args):
    return subprocess.run([NEXUSCTL, *args], capture_output=True, text=True, timeout=120,
                          env=env_for(tmp))


def model(tmp):
    out = os.path.join(tmp, "m")
    r = run(tmp, "model", "synth", "--arch", "qwen3", "--preset", "tiny", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def load_json(tmp, path, *extra):
    r = run(tmp, "model", "load", path, "--device", "cpu", "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def fs_key(path):
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def has_block_device(path):
    return os.path.exists(f"/sys/dev/block/{fs_key(path)}")


def test_calibrate_writes_cache_and_load_uses_it(tmp):
    m = model(tmp)
    r = run(tmp, "loader", "calibrate", m, "--device", "cpu", "--json", "--rounds", "2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    cache = env_for(tmp)["NEXUS_LOADER_CACHE"]
    assert out["cache"] == cache and out["dev"] == fs_key(m) and out["rounds"] == 2
    measured = [s for s in out["shapes"] if not s["refused"]]
    assert len(measured) >= 4 and all(len(s["seconds"]) == 2 for s in measured)
    best, fastest, rule = out["best"], out["fastest"], out["device_rule"]
    assert best["io"] in ("io_uring", "threads")

    def median(shape):
        return [s["median"] for s in measured if {k: s[k] for k in shape} == shape][0]
    assert median(fastest) == min(s["median"] for s in measured)
    # The fastest is stored, unless the device rule's shape is within 5% of it.
    rule = dict(rule, io="io_uring")
    if best != fastest:
        assert best == rule and median(rule) <= median(fastest) * 1.05
    elif best != rule and any({k: s[k] for k in rule} == rule for s in measured):
        assert median(rule) > median(fastest) * 1.05
    lines = [l for l in open(cache) if not l.startswith("#")]
    assert len(lines) == 1 and f"dev={fs_key(m)} fsid={out['fsid']}" in lines[0]
    assert not os.path.exists(os.path.join(tmp, "home"))

    stats, err = load_json(tmp, m)
    assert stats["io_source"] == "calibrated", err
    assert stats["io"] == best["io"] and stats["chunk_bytes"] == best["chunk_bytes"]
    if best["io"] == "io_uring":
        assert stats["queue_depth"] == best["queue_depth"]
    # Threads: at most one per chunk of the (small) file.
    assert 1 <= stats["threads"] <= best["threads"]
    assert "warn" not in err


def test_stored_shape_and_flags(tmp):
    m = model(tmp)
    cache = env_for(tmp)["NEXUS_LOADER_CACHE"]
    r = run(tmp, "loader", "calibrate", m, "--device", "cpu", "--json", "--rounds", "1")
    assert r.returncode == 0, r.stderr
    fsid = json.loads(r.stdout)["fsid"]
    # A shape no default gives: 3 threads x 3 in flight x 4 KiB reads (the file has ~70 such).
    with open(cache, "w") as f:
        f.write(f"v1 dev={fs_key(m)} fsid={fsid} io=io_uring threads=3 depth=3 chunk_kib=4\n")
    stats, _ = load_json(tmp, m)
    if stats["io"] == "io_uring":
        assert (stats["threads"], stats["queue_depth"]) == (3, 3)
    assert stats["io_source"] == "calibrated" and stats["chunk_bytes"] == 4096
    # pread threads, calibrated.
    with open(cache, "w") as f:
        f.write(f"v1 dev={fs_key(m)} fsid={fsid} io=threads threads=5 depth=1 chunk_kib=8\n")
    stats, _ = load_json(tmp, m)
    assert (stats["io"], stats["threads"], stats["chunk_bytes"]) == ("threads", 5, 8192)
    assert stats["io_source"] == "calibrated"
    # Flags win, field by field; the rest stays calibrated.
    stats, _ = load_json(tmp, m, "--threads", "2")
    assert (stats["io_source"], stats["threads"], stats["chunk_bytes"]) == ("flag", 2, 8192)
    stats, _ = load_json(tmp, m, "--chunk-mib", "1", "--threads", "1")
    assert (stats["io_source"], stats["threads"], stats["chunk_bytes"]) == ("flag", 1, MIB)
    # The human output says it too.
    r = run(tmp, "model", "load", m, "--device", "cpu")
    assert r.returncode == 0 and "shape from: calibrated" in r.stdout


def drop(path):
    for name in os.listdir(path):
        fd = os.open(os.path.join(path, name), os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def test_calibrated_cold_read_mode(tmp):
    """cold=buffered: read mode auto reads a file that is not in the page cache through it;
    cold=direct (and an entry without cold) bypasses it; --read overrides either."""
    m = model(tmp)
    r = run(tmp, "loader", "calibrate", m, "--device", "cpu", "--json", "--rounds", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    fsid = out["fsid"]
    # The grid measures buffered shapes too (the file dropped before each: cold), unless the
    # page cache kept the file, which it says.
    buffered = [s for s in out["shapes"] if s["cold_read"] == "buffered"]
    assert len(buffered) >= 2
    assert all(len(s["seconds"]) == 1 for s in buffered if not s["refused"])
    assert out["best"]["cold_read"] in ("direct", "buffered")
    cache = env_for(tmp)["NEXUS_LOADER_CACHE"]
    entry = f"v1 dev={fs_key(m)} fsid={fsid} io=io_uring threads=2 depth=2 chunk_kib=16384"
    direct_ok = True
    for cold, want in ((" cold=buffered", "buffered"), (" cold=direct", "direct"), ("", "direct")):
        with open(cache, "w") as f:
            f.write(entry + cold + "\n")
        drop(m)
        stats, err = load_json(tmp, m)
        assert stats["io_source"] == "calibrated", err
        if want == "direct" and stats["read_mode"] != "direct":
            direct_ok = False  # a file system without O_DIRECT (tmpfs) reads buffered anyway
            continue
        assert stats["read_mode"] == want, (cold, stats)
    with open(cache, "w") as f:
        f.write(entry + " cold=buffered\n")
    drop(m)
    stats, _ = load_json(tmp, m, "--read", "direct")
    assert stats["read_mode"] == ("direct" if direct_ok else "buffered")
    r = run(tmp, "loader", "show", m)
    assert r.returncode == 0 and "buffered" in r.stdout, r.stdout


def test_corrupt_stale_and_foreign_cache(tmp):
    m = model(tmp)
    cache = env_for(tmp)["NEXUS_LOADER_CACHE"]
    os.makedirs(os.path.dirname(cache))
    fallback = "device" if has_block_device(m) else "default"
    with open(cache, "w") as f:
        f.write("# ok\nv1 dev=what fsid=1\n\x00\xff junk\n")
    stats, err = load_json(tmp, m)
    assert stats["io_source"] == fallback
    warnings = [l for l in err.splitlines() if "warn" in l]
    assert len(warnings) == 1 and f"{cache}:2" in warnings[0], err
    # Stale: this device number, another file system id.
    with open(cache, "w") as f:
        f.write(f"v1 dev={fs_key(m)} fsid=0000000000000001 io=io_uring threads=3 depth=3 "
                "chunk_kib=4\n")
    stats, err = load_json(tmp, m)
    assert stats["io_source"] == fallback and "stale" in err and f"{cache}:1" in err
    # Another file system's entry: not used, nothing to warn about.
    with open(cache, "w") as f:
        f.write("v1 dev=4095:4095 fsid=0000000000000001 io=io_uring threads=3 depth=3 "
                "chunk_kib=4\n")
    stats, err = load_json(tmp, m)
    assert stats["io_source"] == fallback and "warn" not in err
    # A cache that is a folder: no crash either.
    os.remove(cache)
    os.makedirs(cache)
    stats, _ = load_json(tmp, m)
    assert stats["io_source"] == fallback


def sysfs_attr(disk, name):
    try:
        with open(f"/sys/block/{disk}/queue/{name}") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def readme_rule(kind, rotational, nr_requests, max_sectors_kb, optimal, cpus):
    """The rule as README's "Loader I/O shape" states it, written again here."""
    max_req = max_sectors_kb * 1024
    chunk = min(max(4 * max_req, 8 * MIB), 32 * MIB) if max_req else 16 * MIB
    if optimal and optimal % 4096 == 0 and optimal <= 32 * MIB:
        chunk = -(-chunk // optimal) * optimal
    if rotational and kind != "virtio":
        return 1, 2, chunk
    threads = min(cpus, 8)
    if not max_req:
        return threads, 2, chunk
    budget = 8 * cpus
    if nr_requests and nr_requests // 4 < budget:
        budget = nr_requests // 4
    per_read = -(-chunk // max_req)
    return threads, min(max(budget // (threads * per_read), 2), 16), chunk


def test_show_gives_the_readme_rule_on_this_machine(tmp):
    m = model(tmp)
    r = run(tmp, "loader", "show", m, "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    if not has_block_device(m):
        assert shown["io_source"] == "default"
        assert (shown["threads"], shown["queue_depth"], shown["chunk_bytes"]) == (2, 2, 16 * MIB)
        pytest.skip(f"{m} is on no block device ({shown['why']})")
    link = os.path.realpath(f"/sys/dev/block/{fs_key(m)}")
    if os.path.exists(os.path.join(link, "partition")):
        link = os.path.dirname(link)
    disk = os.path.basename(link)
    kind = "virtio" if disk.startswith("vd") else "nvme" if disk.startswith("nvme") else "x"
    attrs = [sysfs_attr(disk, a) for a in ("rotational", "nr_requests", "max_sectors_kb",
                                           "optimal_io_size")]
    cpus = len(os.sched_getaffinity(0))
    expected = readme_rule(kind, attrs[0] == 1, attrs[1], attrs[2], attrs[3], cpus)
    assert shown["io_source"] == "device" and disk in shown["why"]
    assert (shown["threads"], shown["queue_depth"], shown["chunk_bytes"]) == expected
    if (kind, attrs[1], attrs[2], cpus) == ("virtio", 256, 4096, 2):  # this VM: the sweep's best
        assert expected == (2, 2, 16 * MIB)


def test_bad_arguments(tmp):
    assert run(tmp, "loader", "calibrate").returncode == 2
    assert run(tmp, "loader", "calibrate", "x", "--rounds", "0").returncode == 2
    assert run(tmp, "loader", "calibrate", "x", "--bogus").returncode == 2
    r = run(tmp, "loader", "calibrate", os.path.join(tmp, "nothing-here"))
    assert r.returncode == 1 and "nothing-here" in r.stderr
    bad = os.path.join(tmp, "bad.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\xff" * 64)
    r = run(tmp, "loader", "calibrate", bad, "--device", "cpu")
    assert r.returncode == 1 and "bad.safetensors" in r.stderr
    assert not os.path.exists(env_for(tmp)["NEXUS_LOADER_CACHE"])
    assert run(tmp, "loader", "show", os.path.join(tmp, "nothing-here")).returncode == 1


def test_daemon_logs_its_calibrated_shape(tmp, monkeypatch):
    import daemon_util as du
    cache = env_for(tmp)["NEXUS_LOADER_CACHE"]
    os.makedirs(os.path.dirname(cache))
    home = os.path.join(tmp, "daemon")
    os.makedirs(home)
    st_fsid = json.loads(run(tmp, "loader", "calibrate", model(tmp), "--device", "cpu", "--json",
                             "--rounds", "1").stdout)["fsid"]
    with open(cache, "w") as f:
        f.write(f"v1 dev={fs_key(home)} fsid={st_fsid} io=io_uring threads=3 depth=3 "
                "chunk_kib=4096\n")
    monkeypatch.setenv("NEXUS_LOADER_CACHE", cache)
    d = du.Daemon([du.agent("a", "tq")], home=home)
    try:
        d.start()
        line = [ln for ln in d.read_log().splitlines() if "loader:" in ln and "io_source" in ln]
        assert line and "io_source calibrated" in line[0], d.read_log()
        # io_uring refused by the kernel: the pread threads' default of 4, same chunk.
        assert ("io_uring, 3 threads x 3 in flight x 4 MiB" in line[0]
                or "threads, 4 threads x 1 in flight x 4 MiB" in line[0]), line[0]
    finally:
        d.stop()
        d.close()


def test_no_save_and_human_output(tmp):
    m = model(tmp)
    r = run(tmp, "loader", "calibrate", m, "--device", "cpu", "--rounds", "1", "--no-save")
    assert r.returncode == 0, r.stderr
    assert "not stored: --no-save" in r.stdout and "<- fastest" in r.stdout
    assert not os.path.exists(env_for(tmp)["NEXUS_LOADER_CACHE"])
    r = run(tmp, "loader", "show", m)
    assert r.returncode == 0 and "io_source" in r.stdout and "calibrated" not in r.stdout
