#!/usr/bin/env bash
# run.sh — what `make bench` runs: synthesize the benchmark checkpoints into $BENCH_DIR when they
# are missing (qwen3 0.6b and 4b, bf16; each is made once and kept), then run the loader bench
# on them (CPU backend unless BENCH_DEVICE says otherwise) and print its tables. The figures go
# to bench/RESULTS.md by hand, with the machine description this script prints first.
#
#   BUILD=build BENCH_DIR=var/bench bench/run.sh
#   env: BENCH_MODELS ("0.6b 4b"), BENCH_DEVICE (cpu), BENCH_REPEAT (3), BENCH_THREADS,
#        BENCH_CHUNK_MIB (both empty: the loader's defaults)
set -euo pipefail

BUILD=${BUILD:-build}
BENCH_DIR=${BENCH_DIR:-var/bench}
BENCH_MODELS=${BENCH_MODELS:-"0.6b 4b"}
BENCH_DEVICE=${BENCH_DEVICE:-cpu}
BENCH_REPEAT=${BENCH_REPEAT:-3}
NEXUSCTL=$BUILD/nexusctl
LOADER_BENCH=$BUILD/bench/loader

# Rough bf16 checkpoint sizes, for the disk-space check before synthesizing.
preset_gb() {
    case $1 in
        tiny) echo 1 ;; 0.6b) echo 2 ;; 4b) echo 9 ;; 8b) echo 17 ;; *) echo 20 ;;
    esac
}

# A checkpoint is complete when its config.json exists and its headers validate.
model_ready() {
    [ -f "$1/config.json" ] && "$NEXUSCTL" model inspect "$1" --summary >/dev/null 2>&1
}

synthesize() {
    local preset=$1 dir=$2
    if model_ready "$dir"; then
        echo "bench: $dir is there, not synthesizing again"
        return
    fi
    mkdir -p "$BENCH_DIR"
    local free_gb need_gb
    free_gb=$(df -P -B1G "$BENCH_DIR" | awk 'NR==2 {print $4}')
    need_gb=$(( $(preset_gb "$preset") + 2 ))
    if [ "$free_gb" -lt "$need_gb" ]; then
        echo "bench: $BENCH_DIR has ${free_gb} GiB free, qwen3 $preset needs about ${need_gb}" >&2
        exit 1
    fi
    rm -rf "$dir"
    echo "bench: synthesizing qwen3 $preset (bf16) into $dir"
    local start=$SECONDS
    "$NEXUSCTL" model synth --arch qwen3 --preset "$preset" --dtype bf16 --out "$dir"
    echo "bench: synthesized in $((SECONDS - start)) s"
}

machine() {
    echo "== machine"
    echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpus:    $(nproc) x $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "memory:  $(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
    echo "disk:    $(df -P -h "$BENCH_DIR" | awk 'NR==2 {print $1 ", " $2 " (" $4 " free)"}'), $(findmnt -n -o FSTYPE -T "$BENCH_DIR")"
    echo "build:   $(git rev-parse --short HEAD 2>/dev/null || echo unknown), device $BENCH_DEVICE"
}

for tool in "$NEXUSCTL" "$LOADER_BENCH"; do
    [ -x "$tool" ] || { echo "bench: $tool is missing; run make first" >&2; exit 1; }
done
mkdir -p "$BENCH_DIR"
models=()
for preset in $BENCH_MODELS; do
    dir=$BENCH_DIR/qwen3-$preset-bf16
    synthesize "$preset" "$dir"
    models+=("$dir")
done

machine
args=(--device "$BENCH_DEVICE" --repeat "$BENCH_REPEAT" --json "$BENCH_DIR/loader.json")
[ -n "${BENCH_THREADS:-}" ] && args+=(--threads "$BENCH_THREADS")
[ -n "${BENCH_CHUNK_MIB:-}" ] && args+=(--chunk-mib "$BENCH_CHUNK_MIB")
echo "== loader: $LOADER_BENCH ${models[*]} ${args[*]}"
"$LOADER_BENCH" "${models[@]}" "${args[@]}"
echo
echo "bench: figures also in $BENCH_DIR/loader.json"
