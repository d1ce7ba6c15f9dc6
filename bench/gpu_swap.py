"""gpu_swap.py — time to first token of a task to an agent whose model is on disk (page cache
dropped), in the host tier, or resident, through a real nexusd (gpu_suite.sh section 4).

One nexusd, configured here: device cuda, a pool that holds the largest model plus KV, a host
cache (pinned RAM) that holds the largest model, one agent per model (greedy, max_tokens 2,
keep_alive 1h). Per model, smallest first: drop the model's pages (posix_fadvise DONTNEED on
its files, then /proc/sys/vm/drop_caches as root), send a task (disk), `nexusctl evict` (the
weights go to the host tier), send (host), send (resident), evict. Tasks go through
`nexusctl send --json` (the GPU machine's Python has no pyzmq); ttft is the daemon's
timings.ttft_ms (accept to first token, the swap included), the client's wall time beside it.

Targets: 8b from the host tier < 0.5 s; from disk < 2 s where the disk allows it: the disk
limit of section 1's loader JSON (--loader-dir) is printed beside it, and when the limit alone
needs 2 s or more the verdict says DISK-BOUND instead of FAIL.

  python3 bench/gpu_swap.py --bin .bundle --model 0.6b=DIR --model 8b=DIR [--device cuda]
      [--work DIR] [--loader-dir D] [--deadline-s N] [--json F] [--summary F]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

T0 = time.monotonic()
GIB = 1 << 30
HOST_TARGET_S, DISK_TARGET_S = 0.5, 2.0


def log(*args):
    print(*args, flush=True)


def left(args):
    return args.deadline_s - (time.monotonic() - T0)


def child_env():
    env = dict(os.environ)
    if os.environ.get("NEXUS_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["NEXUS_LD_LIBRARY_PATH"]
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_files(path):
    """The weight files of a model: a .gguf file itself, or a folder's .safetensors."""
    if os.path.isfile(path):
        return [path]
    return [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".safetensors")]


def model_name(preset, path):
    """The agent's `model:` for a model folder (m-PRESET) or a .gguf file (m-PRESET.gguf)."""
    return f"m-{preset}" + (".gguf" if os.path.isfile(path) else "")


def weight_bytes(path):
    return sum(os.path.getsize(f) for f in model_files(path))


def drop_pages(path):
    """Evict the model's files from the page cache; returns how (for the log)."""
    how = []
    for f in model_files(path):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    how.append("fadvise")
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        how.append("drop_caches")
    except OSError as e:
        how.append(f"drop_caches refused ({e.strerror})")
    return ", ".join(how)


class Daemon:
    def __init__(self, args, models, env=None):
        self.args, self.proc, self.env = args, None, env or {}
        home = os.path.abspath(args.work)  # nexusd reads relative paths from its home
        shutil.rmtree(home, ignore_errors=True)
        os.makedirs(os.path.join(home, "models"))
        os.makedirs(os.path.join(home, "agents"))
        biggest = max(weight_bytes(p) for _, p in models)
        for preset, path in models:
            name = model_name(preset, path)
            os.symlink(os.path.abspath(path), os.path.join(home, "models", name))
            with open(os.path.join(home, "agents", f"a-{preset}.yaml"), "w") as f:
                f.write(f'name: "a-{preset}"\nmodel: "{name}"\nchat_template: raw\n'
                        f"generation:\n  max_tokens: {args.max_tokens}\n  temperature: 0\n"
                        "residency:\n  keep_alive: 1h\nlimits:\n  timeout: 5m\n")
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        pool_mib = (biggest + 2 * GIB) // (1 << 20)
        cache_mib = (biggest + GIB) // (1 << 20)
        self.config = os.path.join(home, "nexus.yaml")
        with open(self.config, "w") as f:
            f.write(f'home: "{home}"\nmodels: "{home}/models"\nagents: "{home}/agents"\n'
                    f'listen: "{self.endpoint}"\nevents: "tcp://127.0.0.1:{free_port()}"\n'
                    f"device: {args.device}\npool: {pool_mib}MiB\nhost_cache: {cache_mib}MiB\n"
                    "context: 256\nmax_batch: 1\n")
        log(f"   nexusd: pool {pool_mib} MiB, host cache {cache_mib} MiB, device {args.device}")
        self.log_path = os.path.join(home, "nexusd.log")

    def start(self, timeout):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([os.path.join(self.args.bin, "nexusd"), "--config",
                                      self.config], stdout=self.logf, stderr=subprocess.STDOUT,
                                     env={**child_env(), **self.env})
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nexusd exited {self.proc.returncode}: {self.tail()}")
            r = self.ctl("ping", timeout=5, check=False)
            if r.returncode == 0:
                log(f"   nexusd answered after {time.monotonic() - t:.1f}s")
                return
            time.sleep(0.5)
        raise RuntimeError(f"nexusd did not answer a ping in {timeout:.0f}s: {self.tail()}")

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return "(no log)"

    def tail(self):
        return self.read_log()[-600:]

    def ctl(self, *cmd, timeout=120, check=True):
        r = subprocess.run([os.path.join(self.args.bin, "nexusctl"), *cmd, "--endpoint",
                            self.endpoint], capture_output=True, text=True, timeout=timeout,
                           env=child_env())
        if check and r.returncode != 0:
            raise RuntimeError(f"nexusctl {' '.join(cmd)} exited {r.returncode}: "
                               f"{(r.stderr or r.stdout).strip()[-300:]}")
        return r

    def state(self, model):
        for m in json.loads(self.ctl("models", "--json").stdout)["models"]:
            if m["name"] == model:
                return m["state"]
        return "?"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "logf", None):
            self.logf.close()


def task(d, preset, timeout):
    t = time.monotonic()
    r = d.ctl("send", f"a-{preset}", "hello", "--json", "--timeout", str(int(timeout)),
              timeout=timeout + 10)
    wall = time.monotonic() - t
    reply = json.loads(r.stdout.strip().splitlines()[-1])
    if reply.get("op") != "result":
        raise RuntimeError(f"task to a-{preset}: {reply}")
    tm = reply["timings"]
    return {"ttft_s": tm["ttft_ms"] / 1e3, "swap_s": tm.get("swap_ms", 0) / 1e3,
            "total_s": tm.get("total_ms", 0) / 1e3, "client_s": wall,
            "tokens": reply.get("usage", {}).get("completion_tokens", 0)}


def disk_limit(args, preset):
    """Section 1's disk limit for this model, GB/s, or None."""
    try:
        with open(os.path.join(args.loader_dir, f"loader-{preset}.json")) as f:
            rows = json.load(f)["models"][0]["rows"]
        return rows["cold_limit"]["gbps"] or None
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def measure_model(args, d, preset, path):
    name, out = model_name(preset, path), {"model": preset, "bytes": weight_bytes(path)}
    gb = out["bytes"] / 1e9
    need = 15 + gb * 2.0  # a cold load at >= 1 GB/s, twice more loads from RAM, slack
    if left(args) < need:
        out["skipped"] = f"skipped (time: {left(args):.0f}s left, ~{need:.0f}s needed)"
        return out
    timeout = max(30, min(300, left(args) - 5))
    out["drop"] = drop_pages(path)
    out["state_before_disk"] = d.state(name)
    out["disk"] = task(d, preset, timeout)
    r = json.loads(d.ctl("evict", name, "--json").stdout)
    out["state_before_host"] = r.get("state", "?")
    out["host"] = task(d, preset, timeout)
    out["state_before_resident"] = d.state(name)
    out["resident"] = task(d, preset, timeout)
    d.ctl("evict", name, "--json")
    log(f"   {preset}: " + ", ".join(f"{k} {out[k]['ttft_s']:.3f}s (state {out['state_before_' + k]})"
                                     for k in ("disk", "host", "resident")))
    return out


def report(args, results):
    lines = ["", "swap: time to first token, seconds (daemon ttft: accept -> first token; "
             f"targets for 8b: host < {HOST_TARGET_S:g} s, disk < {DISK_TARGET_S:g} s where the "
             "disk allows)",
             f"{'model':<6} {'GB':>6} {'disk':>8} {'swap':>8} {'disk lim':>9} {'lim s':>6} "
             f"{'host':>8} {'resident':>9} {'client':>8}"]
    verdicts = []
    for r in results:
        gb = r["bytes"] / 1e9
        if "error" in r or "skipped" in r:
            lines.append(f"{r['model']:<6} {gb:>6.1f} {r.get('error') or r['skipped']}")
            if "error" in r:
                verdicts.append(f"swap {r['model']}: FAIL ({r['error']})")
            continue
        lim = disk_limit(args, r["model"])
        lim_s = gb / lim if lim else None
        r["disk_limit_gbps"] = lim
        lines.append(f"{r['model']:<6} {gb:>6.1f} {r['disk']['ttft_s']:>8.3f} "
                     f"{r['disk']['swap_s']:>8.3f} "
                     f"{(f'{lim:.2f}' if lim else '-'):>9} {(f'{lim_s:.2f}' if lim_s else '-'):>6} "
                     f"{r['host']['ttft_s']:>8.3f} {r['resident']['ttft_s']:>9.3f} "
                     f"{r['resident']['client_s']:>8.3f}")
        states = (r["state_before_disk"], r["state_before_host"], r["state_before_resident"])
        if states != ("disk", "host", "resident"):
            verdicts.append(f"swap {r['model']}: NOTE states before the tasks were {states}, "
                            "not (disk, host, resident)")
        if r["model"] == "8b":
            host_ok = r["host"]["ttft_s"] < HOST_TARGET_S and states[1] == "host"
            disk_s = r["disk"]["ttft_s"]
            if disk_s < DISK_TARGET_S:
                disk_v = "PASS"
            elif lim_s and lim_s >= DISK_TARGET_S:
                disk_v = f"DISK-BOUND (the disk limit alone needs {lim_s:.2f} s)"
            else:
                disk_v = "FAIL" + ("" if lim_s else " (disk limit not measured: run section 1)")
            verdicts.append(f"swap 8b: host tier {r['host']['ttft_s']:.3f} s "
                            f"{'PASS' if host_ok else 'FAIL'}; disk {disk_s:.3f} s ({r['drop']}"
                            f"; {gb / disk_s:.2f} GB/s, disk limit "
                            f"{f'{lim:.2f} GB/s' if lim else 'not measured'}) {disk_v}")
    if not any(r["model"] == "8b" for r in results):
        verdicts.append("swap: 8b not in the models; targets not checked")
    return lines, verdicts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=".bundle")
    ap.add_argument("--model", action="append", default=[], help="PRESET=MODEL_DIR")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--work", default="/tmp/nexus-gpu-swap")
    ap.add_argument("--loader-dir", default="", help="section 1's folder (loader-PRESET.json)")
    ap.add_argument("--max-tokens", type=int, default=2)
    ap.add_argument("--deadline-s", type=float, default=200)
    ap.add_argument("--json")
    ap.add_argument("--summary")
    args = ap.parse_args()
    models = [m.split("=", 1) for m in args.model]
    results, lines, verdicts = [], [], []
    d = None
    try:
        missing = [p for _, p in models if not os.path.exists(os.path.join(p, "config.json"))]
        if missing or not models:
            raise RuntimeError(f"models missing: {missing or 'none given'}")
        models.sort(key=lambda m: weight_bytes(m[1]))
        d = Daemon(args, models)
        d.start(timeout=min(180, max(10, left(args) - 10)))
        for preset, path in models:
            try:
                results.append(measure_model(args, d, preset, path))
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                results.append({"model": preset, "bytes": weight_bytes(path),
                                "error": f"{type(e).__name__}: {str(e)[:300]}"})
                log(f"   {preset}: {results[-1]['error']}")
        lines, verdicts = report(args, results)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        verdicts.append(f"swap: FAIL ({type(e).__name__}: {str(e)[:400]})")
    finally:
        if d:
            d.stop()
    text = "\n".join(lines + verdicts) + "\n"
    print(text, end="", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "verdicts": verdicts}, f, indent=2)
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(text)
    return 1 if any("FAIL" in v for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
