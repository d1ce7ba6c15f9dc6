#!/usr/bin/env python3
"""st_torch_baseline.py — the usual way to load a checkpoint onto a GPU, timed: for every shard
of a model directory, safetensors.torch.load_file(path, device="cuda"), with
torch.cuda.synchronize() before the clock stops. Cold (the shards' page-cache pages dropped:
fsync + posix_fadvise(DONTNEED), plus /proc/sys/vm/drop_caches when root) and warm (shards read
once beforehand), the median of --repeat runs each, printed as JSON. It is the baseline that
bench/gpu_suite.sh sets beside build/bench/loader's figures; it needs torch and safetensors,
which the GPU machines have.

    python3 bench/st_torch_baseline.py MODEL_DIR [--repeat N] [--device cuda] [--json FILE]
"""
import argparse
import glob
import json
import os
import statistics
import struct
import sys
import time


def shard_paths(model_dir):
    if os.path.isfile(model_dir):
        return [model_dir]
    paths = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not paths:
        raise SystemExit(f"st_torch_baseline: no .safetensors files in {model_dir}")
    return paths


def data_bytes(path):
    """Bytes of the data section: the file less the 8-byte length and the JSON header."""
    with open(path, "rb") as f:
        (header_bytes,) = struct.unpack("<Q", f.read(8))
    return os.path.getsize(path) - 8 - header_bytes


def drop_pages(paths):
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if os.geteuid() == 0:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1")
        except OSError:
            pass


def warm_pages(paths):
    block = bytearray(64 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(block):
                pass


def load_once(paths, device, torch, load_file):
    start = time.perf_counter()
    tensors = {}
    for path in paths:
        tensors.update(load_file(path, device=device))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del tensors
    torch.cuda.empty_cache()
    return seconds


def measure(paths, device, repeat, cold, torch, load_file):
    samples = []
    for _ in range(repeat):
        if cold:
            drop_pages(paths)
        else:
            warm_pages(paths)
        samples.append(load_once(paths, device, torch, load_file))
    return samples


def summary(samples, total_bytes):
    median = statistics.median(samples)
    return {"seconds": median, "gbps": total_bytes / median / 1e9, "samples_seconds": samples}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()

    import safetensors
    import torch
    from safetensors.torch import load_file

    if not torch.cuda.is_available():
        raise SystemExit("st_torch_baseline: torch sees no CUDA device")
    torch.zeros(1, device=args.device)  # create the CUDA context outside the timing
    torch.cuda.synchronize()

    paths = shard_paths(args.model_dir)
    total_bytes = sum(data_bytes(p) for p in paths)
    cold = measure(paths, args.device, args.repeat, True, torch, load_file)
    warm = measure(paths, args.device, args.repeat, False, torch, load_file)
    result = {
        "bench": "st_torch_baseline",
        "path": args.model_dir,
        "files": len(paths),
        "data_bytes": total_bytes,
        "repeat": args.repeat,
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "safetensors": getattr(safetensors, "__version__", "unknown"),
        "cold": summary(cold, total_bytes),
        "warm": summary(warm, total_bytes),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
