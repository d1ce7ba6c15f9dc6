#!/usr/bin/env bash
# profile_b1.sh — where a batch-1 decode step goes, ours and llama.cpp's, on one GGUF file:
# each engine decodes under `perf record -e cpu-clock` (software clock samples, so it works in
# VMs without hardware counters), then the symbols that took at least PROFILE_MIN percent of
# the samples are printed per engine, with the run's decode tokens/s and the read bound it
# measured. This is the "why" behind a batch-1 ratio in bench/RESULTS.md: how much of a step
# each engine spends in its weight kernels, waiting for its threads, in attention; and `perf
# annotate` on the kept data (paths printed at the end) shows where inside a kernel.
#
#   bench/profile_b1.sh MODEL.gguf
#   env: BUILD (build), PROFILE_BASELINE (a second build of ours, e.g. of the commit before
#        a change, profiled in the same run between ours and llama.cpp: before and after in
#        one run), PROFILE_TOKENS (96: decode steps per engine), PROFILE_THREADS (2),
#        PROFILE_MIN (0.5: percent), PROFILE_OUT ($BENCH_DIR/profile/<date>: perf data, JSON),
#        BENCH_DIR (var/bench), NODE (node), PERF (perf)
#
# Ours: `bench/decode MODEL --device cpu --prompt 1 --batches 1`; llama.cpp:
# bench/llama_bench.mjs with the same (needs `make llama-ref`; without node or the package its
# half says so and ours still runs). Both load the model inside the profile, so loading shows
# (ours: page faults; llama.cpp: its Q4_K repack) beside the decode; the prefill of the 16
# tokens each decode starts from is a few percent. Not a speed figure: perf's sampling slows
# both a little, and the two run one after the other, not side by side (bench/quant_pair.py
# is the ratio to trust).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/bench_lib.sh"
BUILD=${BUILD:-build}
BENCH_DIR=${BENCH_DIR:-var/bench}
tokens=${PROFILE_TOKENS:-96}
threads=${PROFILE_THREADS:-2}
min=${PROFILE_MIN:-0.5}
out=${PROFILE_OUT:-$BENCH_DIR/profile/$(date -u +%Y%m%dT%H%M%SZ)}
PERF=${PERF:-perf}

if [ $# -ne 1 ] || [ ! -f "$1" ]; then
    echo "usage: bench/profile_b1.sh MODEL.gguf (a GGUF file both engines can run)" >&2
    exit 2
fi
model=$1
if ! command -v "$PERF" >/dev/null 2>&1; then
    echo "profile_b1: '$PERF' not found (Debian: linux-perf)" >&2
    exit 1
fi
decode="$BUILD/bench/decode"
if [ ! -x "$decode" ]; then
    echo "profile_b1: $decode is missing: run make first" >&2
    exit 1
fi
mkdir -p "$out" || exit 1

machine_header "bench/profile_b1.sh $model (tokens $tokens, threads $threads); data in $out"

# $1 label, $2 perf data: the symbols at or above $min percent of the samples
top() {
    echo
    echo "$1 (perf report -i $2 --no-children --sort dso,sym):"
    "$PERF" report -i "$2" --no-children --sort dso,sym --stdio --percent-limit "$min" \
        2>/dev/null | grep -E '^ +[0-9.]+%' | sed 's/^ */  /' | cut -c1-120
}

# $1 JSON (bench/decode's or llama_bench's figures): the batch-1 decode tokens/s
decode_rate() {
    python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
rate = [f["tokens_per_s"] for f in d.get("figures", [])
        if f.get("phase") == "decode" and f.get("batch") == 1]
bw, step = d.get("read_bandwidth_gbps"), d.get("weight_bytes_per_step")
print(f"decode batch 1: {rate[0]:.2f} tok/s" if rate else "decode batch 1: -", end="")
if rate and step:
    print(f", {rate[0] * step / 1e9:.1f} GB/s of weights", end="")
print(f" (read bandwidth measured in the run: {bw:.1f} GB/s)" if bw else "")
EOF
}

# $1 name (of the files in $out), $2 label, then the command: record it, print its top and rate
profile() {
    local name=$1 label=$2
    shift 2
    "$PERF" record -q -e cpu-clock -F 1999 -g -o "$out/$name.perf" -- "$@" \
        --json "$out/$name.json" > "$out/$name.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "profile_b1: $label failed (exit $rc), see $out/$name.log" >&2
        exit 1
    fi
    top "$label" "$out/$name.perf"
    echo "  $(decode_rate "$out/$name.json")"
}

profile ours ours "$decode" "$model" --device cpu --threads "$threads" --prompt 1 \
    --tokens "$tokens" --batches 1
if [ -n "${PROFILE_BASELINE:-}" ]; then
    if [ ! -x "$PROFILE_BASELINE/bench/decode" ]; then
        echo "profile_b1: $PROFILE_BASELINE/bench/decode is missing (PROFILE_BASELINE)" >&2
        exit 1
    fi
    profile baseline "baseline $PROFILE_BASELINE" "$PROFILE_BASELINE/bench/decode" "$model" \
        --device cpu --threads "$threads" --prompt 1 --tokens "$tokens" --batches 1
fi
llama_why=$(llama_missing)
if [ -n "$llama_why" ]; then
    echo
    echo "llama.cpp: skipped ($llama_why)"
else
    profile llama llama.cpp "${NODE:-node}" "$here/llama_bench.mjs" "$model" --threads "$threads" \
        --prompt 1 --tokens "$tokens" --batches 1
fi
echo
echo "inside a kernel: $PERF annotate -i $out/ours.perf --stdio -s SYMBOL"
