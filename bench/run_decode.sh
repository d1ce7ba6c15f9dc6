#!/usr/bin/env bash
# run_decode.sh — the `decode` part of the benchmarks: synthesize qwen3 tiny and 0.6b (bf16)
# into $BENCH_DIR when missing (same names as bench/run.sh: qwen3-<preset>-bf16), then run
# bench/decode on each: prefill and decode tokens/s at batch 1, 8, 32 beside the fraction of
# the memory read bandwidth measured in the same run. Figures go to bench/RESULTS.md (Decode section).
#
#   BUILD=build BENCH_DIR=var/bench bench/run_decode.sh
#   env: DECODE_MODELS ("tiny 0.6b"), DECODE_THREADS (empty: one per core),
#        DECODE_ARGS_tiny / DECODE_ARGS_0_6b (extra bench/decode options per preset)
set -euo pipefail

BUILD=${BUILD:-build}
BENCH_DIR=${BENCH_DIR:-var/bench}
DECODE_MODELS=${DECODE_MODELS:-"tiny 0.6b"}
NEXUSCTL=$BUILD/nexusctl
DECODE=$BUILD/bench/decode
# A 0.6B decode step at batch 32 is ~40 GFLOP: keep the token counts small on small machines.
DECODE_ARGS_tiny=${DECODE_ARGS_tiny:-"--prompt 128 --tokens 64 --batches 1,8,32"}
DECODE_ARGS_0_6b=${DECODE_ARGS_0_6b:-"--prompt 128 --tokens 16 --batches 1,8,32"}

model_ready() {
    [ -f "$1/config.json" ] && "$NEXUSCTL" model inspect "$1" --summary >/dev/null 2>&1
}

echo "== machine"
echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"
echo "cpus:    $(nproc) x $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
echo "memory:  $(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
echo "build:   $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

for preset in $DECODE_MODELS; do
    dir=$BENCH_DIR/qwen3-$preset-bf16
    if ! model_ready "$dir"; then
        rm -rf "$dir"
        mkdir -p "$BENCH_DIR"
        echo "decode: synthesizing qwen3 $preset (bf16) into $dir"
        "$NEXUSCTL" model synth --arch qwen3 --preset "$preset" --dtype bf16 --out "$dir" >/dev/null
    fi
    var=DECODE_ARGS_${preset//./_}
    threads=()
    [ -n "${DECODE_THREADS:-}" ] && threads=(--threads "$DECODE_THREADS")
    echo
    echo "== decode qwen3 $preset: $DECODE $dir ${threads[*]} ${!var}"
    # shellcheck disable=SC2086
    "$DECODE" "$dir" "${threads[@]}" ${!var} --json "$BENCH_DIR/decode-qwen3-$preset.json"
done
