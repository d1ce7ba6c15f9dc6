#!/usr/bin/python3
"""hub_server.py — a folder served as a Hugging Face hub repository, over real HTTP, for the
tests of `nexusctl pull` (tests/test_pull.py) and its benchmark (bench/pull.py). Stdlib only.

What it serves, the way the hub does:
  GET  /api/models/Org/Name/revision/REV[?blobs=true]
       {"id", "sha": commit, "siblings": [{"rfilename", "size", "blobId", "lfs": {...}}]}
       404 JSON for an unknown repository or revision; 401 for a gated repository without
       "Authorization: Bearer <token>".
  GET|HEAD /Org/Name/resolve/REV/FILE
       LFS files (*.safetensors, *.gguf, *.bin): 302 to /blobs/<sha256> (relative, or on a
       second "CDN" server when cdn=True) with X-Linked-Etag, X-Linked-Size, X-Repo-Commit;
       other files: 200 with ETag "<git blob sha1>" and X-Repo-Commit.
  GET|HEAD /blobs/<sha256>   the LFS bytes; Range gives 206 + Content-Range.

Faults, per file name (hub.fault(name, **kw), or faults={name: {...}}):
  cut=N, times=k       the first k GETs of its bytes send N body bytes and close the connection
  status=S, times=k    the first k requests (HEAD or GET) answer S (retry_after=SECONDS adds a
                       Retry-After header; get_only=True: GETs only, so HEAD probes pass)
  corrupt=True         bytes served with one byte changed (headers and API stay right)
  rate=BYTES_PER_S     the bytes trickle at this rate
  no_range=True        Range is ignored: always 200 with the whole file
hub.stats: per file, "requests" and "body_bytes" (bytes of the file sent); hub.auth_seen: the
paths requested with an Authorization header.

Revisions: "main" and any extra branch names given resolve to the one commit; the commit's own
40 hex digits work too.

Importable: start_hub(repo_dir, repo="Org/Name", token=None, faults=None) -> Hub (hub.url,
hub.stop()). From the command line: python3 tests/hub_server.py --repo Org/Name --dir DIR
[--port 0] prints its URL on the first line and serves until killed.
"""
import argparse
import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")
BLOCK = 4 << 20


def git_blob_sha1(path):
    size = os.path.getsize(path)
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while True:
            b = f.read(BLOCK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(BLOCK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


class Repo:
    """The files of a folder with their hub checksums, and a commit made from them."""

    def __init__(self, repo_dir, name, branches=("main",)):
        self.dir = os.path.abspath(repo_dir)
        self.name = name
        self.files = {}  # rfilename -> dict(path, size, lfs, blob_id, sha256)
        self.by_sha256 = {}
        for root, _, names in os.walk(self.dir):
            for n in sorted(names):
                path = os.path.join(root, n)
                rel = os.path.relpath(path, self.dir)
                lfs = rel.endswith(LFS_SUFFIXES)
                entry = {"path": path, "size": os.path.getsize(path), "lfs": lfs,
                         "blob_id": git_blob_sha1(path) if not lfs else None,
                         "sha256": sha256_file(path) if lfs else None}
                if lfs:
                    # the git blob of an LFS file is its pointer file
                    pointer = ("version https://git-lfs.github.com/spec/v1\noid sha256:%s\n"
                               "size %d\n" % (entry["sha256"], entry["size"])).encode()
                    entry["blob_id"] = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
                    self.by_sha256[entry["sha256"]] = entry
                self.files[rel] = entry
        listing = "".join("%s %s\n" % (k, v["blob_id"]) for k, v in sorted(self.files.items()))
        self.commit = hashlib.sha1(listing.encode()).hexdigest()
        self.branches = set(branches) | {"main"}

    def resolve(self, rev):
        return self.commit if rev in self.branches or rev == self.commit else None

    def api_record(self):
        siblings = []
        for rel, e in sorted(self.files.items()):
            s = {"rfilename": rel, "size": e["size"], "blobId": e["blob_id"]}
            if e["lfs"]:
                s["lfs"] = {"sha256": e["sha256"], "size": e["size"], "pointerSize": 134}
            siblings.append(s)
        return {"_id": "x", "id": self.name, "modelId": self.name, "sha": self.commit,
                "private": False, "gated": False, "siblings": siblings}


class Hub:
    def __init__(self, repo, token=None, faults=None, cdn=False, host="127.0.0.1", port=0,
                 public_api=False):
        self.repo = repo
        self.token = token
        self.public_api = public_api  # gated the hub's way: the listing is public, files not
        self.faults = {k: dict(v) for k, v in (faults or {}).items()}
        self.stats = {}
        self.auth_seen = []
        self.lock = threading.Lock()
        self.server = _Server((host, port), _Handler, self)
        self.url = "http://%s:%d" % (host, self.server.server_address[1])
        self.cdn = _Server((host, 0), _Handler, self) if cdn else None
        self.cdn_url = "http://%s:%d" % (host, self.cdn.server_address[1]) if cdn else None
        self.threads = []
        for s in [self.server] + ([self.cdn] if self.cdn else []):
            t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def fault(self, name, **kw):
        with self.lock:
            if kw:
                self.faults[name] = kw
            else:
                self.faults.pop(name, None)

    def clear_faults(self):
        with self.lock:
            self.faults.clear()

    def stat(self, name):
        with self.lock:
            return dict(self.stats.get(name, {"requests": 0, "body_bytes": 0}))

    def _count(self, name, key, n):
        with self.lock:
            s = self.stats.setdefault(name, {"requests": 0, "body_bytes": 0})
            s[key] += n

    def _take_fault(self, name, kind, is_get):
        """The fault of `kind` for `name` if it applies now (and count it down)."""
        with self.lock:
            f = self.faults.get(name)
            if not f or kind not in f:
                return None
            if (kind == "cut" or f.get("get_only")) and not is_get:
                return None
            if "times" in f:
                if f["times"] <= 0:
                    return None
                if kind in ("cut", "status"):
                    f["times"] -= 1
            return dict(f)

    def stop(self):
        for s in [self.server] + ([self.cdn] if self.cdn else []):
            s.shutdown()
            s.server_close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, hub):
        self.hub = hub
        super().__init__(addr, handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-test/1"

    def log_message(self, *args):
        pass

    @property
    def hub(self):
        return self.server.hub

    def do_HEAD(self):
        self._route(False)

    def do_GET(self):
        self._route(True)

    def _json(self, status, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def _authorized(self):
        if self.headers.get("Authorization"):
            with self.hub.lock:
                self.hub.auth_seen.append(self.path)
        if not self.hub.token:
            return True
        return self.headers.get("Authorization") == "Bearer " + self.hub.token

    def _route(self, is_get):
        path = urllib.parse.urlsplit(self.path).path
        parts = [urllib.parse.unquote(p) for p in path.split("/")]
        repo = self.hub.repo
        org_name = repo.name.split("/")
        try:
            if parts[1:3] == ["api", "models"] and len(parts) >= 7 and parts[5] == "revision":
                return self._api(parts, org_name, is_get)
            if parts[1] == "blobs" and len(parts) == 3:
                e = repo.by_sha256.get(parts[2])
                if not e:
                    return self._json(404, {"error": "Entry not found"})
                name = os.path.relpath(e["path"], repo.dir)
                return self._bytes(name, e, is_get)
            if len(parts) >= 6 and parts[3] == "resolve":
                return self._resolve(parts, org_name, is_get)
            return self._json(404, {"error": "Not found"})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _api(self, parts, org_name, is_get):
        if parts[3:5] != org_name:
            return self._json(404, {"error": "Repository not found"},
                              [("X-Error-Code", "RepoNotFound")])
        if not self._authorized() and not self.hub.public_api:
            return self._json(401, {"error": "Access to model %s is restricted. You must have "
                                    "access to it and be authenticated to access it. Please "
                                    "log in." % self.hub.repo.name},
                              [("X-Error-Code", "GatedRepo")])
        rev = "/".join(parts[6:])
        if not self.hub.repo.resolve(rev):
            return self._json(404, {"error": "Invalid rev id: %s" % rev},
                              [("X-Error-Code", "RevisionNotFound")])
        return self._json(200, self.hub.repo.api_record())

    def _status_fault(self, name, is_get):
        f = self.hub._take_fault(name, "status", is_get)
        if not f:
            return False
        headers = [("Retry-After", str(f["retry_after"]))] if "retry_after" in f else []
        self._json(f["status"], {"error": "injected HTTP %d" % f["status"]}, headers)
        return True

    def _resolve(self, parts, org_name, is_get):
        if parts[1:3] != org_name:
            return self._json(404, {"error": "Repository not found"})
        if not self._authorized():
            return self._json(401, {"error": "Access to model %s is restricted" %
                                    self.hub.repo.name})
        commit = self.hub.repo.resolve(parts[4])
        if not commit:
            return self._json(404, {"error": "Invalid rev id: %s" % parts[4]})
        name = "/".join(parts[5:])
        self.hub._count(name, "requests", 1)
        if self._status_fault(name, is_get):
            return
        e = self.hub.repo.files.get(name)
        if not e:
            return self._json(404, {"error": "Entry not found"},
                              [("X-Error-Code", "EntryNotFound")])
        if e["lfs"]:
            base = self.hub.cdn_url or ""
            self.send_response(302)
            self.send_header("Location", "%s/blobs/%s" % (base, e["sha256"]))
            self.send_header("X-Linked-Etag", '"%s"' % e["sha256"])
            self.send_header("X-Linked-Size", str(e["size"]))
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        return self._bytes(name, e, is_get, etag=e["blob_id"], commit=commit)

    def _bytes(self, name, e, is_get, etag=None, commit=None):
        if etag is None:  # a blob URL: the resolve counted the request unless it went direct
            self.hub._count(name, "requests", 1)
            if self._status_fault(name, is_get):
                return
        size = e["size"]
        start, end = 0, size - 1
        with self.hub.lock:
            f = dict(self.hub.faults.get(name, {}))
        rng = None if f.get("no_range") else self.headers.get("Range")
        status = 200
        if rng and rng.startswith("bytes=") and size > 0:
            a, _, b = rng[6:].partition("-")
            start = int(a) if a else 0
            end = min(int(b), size - 1) if b else size - 1
            if start > end or start >= size:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        length = end - start + 1 if size > 0 else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"%s"' % (etag or e["sha256"]))
        if commit:
            self.send_header("X-Repo-Commit", commit)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        if not is_get or length == 0:
            return
        cut = self.hub._take_fault(name, "cut", True)
        limit = min(length, cut["cut"]) if cut else length
        self.wfile.flush()
        sent = self._send_range(e["path"], start, limit, f.get("corrupt"), f.get("rate"))
        self.hub._count(name, "body_bytes", sent)
        if cut:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _send_range(self, path, start, count, corrupt, rate):
        sent = 0
        sock = self.connection
        with open(path, "rb") as f:
            if not corrupt and not rate:
                while sent < count:
                    n = os.sendfile(sock.fileno(), f.fileno(), start + sent, count - sent)
                    if n == 0:
                        break
                    sent += n
                return sent
            f.seek(start)
            t0 = time.monotonic()
            step = max(1024, min(BLOCK, int(rate / 20))) if rate else BLOCK
            while sent < count:
                b = bytearray(f.read(min(step, count - sent)))
                if not b:
                    break
                if corrupt and start + sent == 0:
                    b[0] ^= 0xFF  # the file's first byte
                sock.sendall(b)
                sent += len(b)
                if rate:
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        return sent


def start_hub(repo_dir, repo="Org/Name", token=None, faults=None, branches=("main",),
              cdn=False, port=0, public_api=False):
    """Serve repo_dir as hub repository `repo`; returns the Hub (hub.url, hub.stop())."""
    return Hub(Repo(repo_dir, repo, branches), token=token, faults=faults, cdn=cdn, port=port,
               public_api=public_api)


def main():
    ap = argparse.ArgumentParser(description="serve a folder as a hub repository")
    ap.add_argument("--repo", default="Org/Name")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token")
    args = ap.parse_args()
    hub = start_hub(args.dir, args.repo, token=args.token, port=args.port)
    print(hub.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
