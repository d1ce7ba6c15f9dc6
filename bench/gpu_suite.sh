#!/usr/bin/env bash
# gpu_suite.sh — every GPU measurement in ONE command, for a GPU machine that has no Debian
# packages of ours and no network. Run from the repo root with .bundle carried (make gpu-bundle
# builds it here): it points LD_LIBRARY_PATH at .bundle/lib, checks the GPU and that the
# binaries start, then runs numbered sections; each writes logs and JSON under $SUITE_OUT and
# adds lines to the summary printed at the end.
#
#   bench/gpu_suite.sh                      # everything, under ~9 minutes
#   SUITE_MODELS="0.6b" bench/gpu_suite.sh  # a quick pass
#
# env: SUITE_OUT (default $OUT if set, else /tmp/nexus-gpu-suite), NEXUS_GPU_DIR (checkpoints,
# default /tmp/nexus-gpu, on local disk), SUITE_MODELS ("0.6b 4b 8b"), SUITE_BUDGET_S (530: the
# whole suite must fit a 10-minute command), SUITE_REPEAT (3), SUITE_REPEAT_8B (1).
#
# Sections: 0. environment, 1. loader. Later issues add theirs (correctness, decode, swap,
# sanitizers) as new numbered sections: a function section_N_name, called from main at the
# bottom, writing under $SUITE_OUT/N-name/ and appending its lines to $SUMMARY.
set -uo pipefail # not -e: a failing section is reported and the next one still runs

BUNDLE=${BUNDLE:-.bundle}
SUITE_OUT=${SUITE_OUT:-${OUT:-/tmp/nexus-gpu-suite}}
NEXUS_GPU_DIR=${NEXUS_GPU_DIR:-/tmp/nexus-gpu}
SUITE_MODELS=${SUITE_MODELS:-"0.6b 4b 8b"}
SUITE_BUDGET_S=${SUITE_BUDGET_S:-530}
SUITE_REPEAT=${SUITE_REPEAT:-3}
SUITE_REPEAT_8B=${SUITE_REPEAT_8B:-1}
PYTHON=${PYTHON:-python3}

export LD_LIBRARY_PATH="$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
NEXUSCTL=$BUNDLE/nexusctl
LOADER_BENCH=$BUNDLE/bench/loader
SUMMARY=$SUITE_OUT/summary.txt
FAILED_SECTIONS=()
HAVE_TORCH=0

heading() { printf '\n==== %s  (t=%ss of %ss)\n' "$1" "$SECONDS" "$SUITE_BUDGET_S"; }
seconds_left() { echo $((SUITE_BUDGET_S - SECONDS)); }
note() { echo "$*" | tee -a "$SUMMARY"; }

# Run a step with the time that is left (less a margin for the summary); log to a file.
# step NAME LOG CMD...  -> the command's status (124 when it ran out of time)
step() {
    local name=$1 log=$2
    shift 2
    local left=$(($(seconds_left) - 15))
    if [ "$left" -le 5 ]; then
        note "skipped: $name (out of time)"
        return 124
    fi
    echo "-- $name (up to ${left}s; log $log)"
    timeout --kill-after=10 "$left" "$@" >"$log" 2>&1
    local rc=$?
    [ "$rc" -eq 124 ] && note "timed out: $name after ${left}s"
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && { echo "   failed (exit $rc), last lines:"; tail -5 "$log"; }
    return $rc
}

# --- 0. environment ---------------------------------------------------------------------------
section_0_environment() {
    heading "0. environment"
    local dir=$SUITE_OUT/0-environment
    mkdir -p "$dir"
    if ! nvidia-smi >"$dir/nvidia-smi.txt" 2>&1; then
        note "environment: nvidia-smi failed; no usable GPU"
        cat "$dir/nvidia-smi.txt"
        return 1
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current \
        --format=csv,noheader | tee "$dir/gpu.txt"
    { nproc; free -g; lscpu | grep 'Model name'; df -h "$(dirname "$NEXUS_GPU_DIR")"; } >"$dir/host.txt" 2>&1
    cat "$BUNDLE/BUILD_INFO" 2>/dev/null
    local bin
    for bin in "$NEXUSCTL" "$LOADER_BENCH"; do
        if [ ! -x "$bin" ]; then
            note "environment: $bin is missing (run make gpu-bundle and carry .bundle)"
            return 1
        fi
        if ldd "$bin" | grep 'not found'; then
            note "environment: $bin cannot find its libraries"
            return 1
        fi
    done
    "$NEXUSCTL" --help >/dev/null || { note "environment: nexusctl does not start"; return 1; }
    "$LOADER_BENCH" >/dev/null 2>&1
    [ $? -eq 2 ] || { note "environment: $LOADER_BENCH does not start"; return 1; }
    if "$PYTHON" -c 'import torch, safetensors; assert torch.cuda.is_available()' 2>"$dir/torch.txt"; then
        HAVE_TORCH=1
    else
        note "environment: no torch with CUDA; the torch load_file baseline is skipped"
    fi
    note "environment: $(head -1 "$dir/gpu.txt"); $(nproc) cpus; $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
}

# --- 1. loader --------------------------------------------------------------------------------
# Synthesize each checkpoint (once), run the loader bench on it with --device cuda, then the
# torch load_file baseline on the same files, one model at a time so that a model that does
# not fit the time still leaves the smaller ones measured.
synthesize() {
    local preset=$1 dir=$2 log=$3
    if [ -f "$dir/config.json" ] && "$NEXUSCTL" model inspect "$dir" --summary >/dev/null 2>&1; then
        return 0
    fi
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    step "synthesize qwen3 $preset" "$log" \
        "$NEXUSCTL" model synth --arch qwen3 --preset "$preset" --dtype bf16 --out "$dir"
}

section_1_loader() {
    heading "1. loader"
    local dir=$SUITE_OUT/1-loader preset failures=0
    mkdir -p "$dir" "$NEXUS_GPU_DIR"
    for preset in $SUITE_MODELS; do
        local model=$NEXUS_GPU_DIR/qwen3-$preset-bf16 repeat=$SUITE_REPEAT
        [ "$preset" = 8b ] && repeat=$SUITE_REPEAT_8B
        local start=$SECONDS
        if ! synthesize "$preset" "$model" "$dir/synth-$preset.log"; then
            failures=$((failures + 1))
            continue
        fi
        echo "   synthesized in $((SECONDS - start))s"
        if step "loader bench $preset" "$dir/loader-$preset.log" \
            "$LOADER_BENCH" "$model" --device cuda --repeat "$repeat" --json "$dir/loader-$preset.json"; then
            cat "$dir/loader-$preset.log"
        else
            failures=$((failures + 1))
        fi
        if [ "$HAVE_TORCH" = 1 ]; then
            step "torch load_file $preset" "$dir/torch-$preset.log" \
                "$PYTHON" bench/st_torch_baseline.py "$model" --repeat "$repeat" \
                --json "$dir/torch-$preset.json" || failures=$((failures + 1))
        fi
    done
    loader_table "$dir" | tee -a "$SUMMARY"
    [ "$failures" -eq 0 ]
}

# One table over the models: ours against the physical limits and against torch.
loader_table() {
    "$PYTHON" - "$1" $SUITE_MODELS <<'PY'
import json, os, sys
out, presets = sys.argv[1], sys.argv[2:]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def pct(a, b): return f"{100 * a / b:.0f}%" if a and b else "-"
def gb(x): return f"{x:.2f}" if x else "-"
def times(a, b): return f"{a / b:.1f}x" if a and b else "-"
head = ("model", "GB", "rep", "cold ours", "disk lim", "%", "warm ours", "H2D lim", "%",
        "host tier", "%", "torch cold", "torch warm", "x torch c/w")
fmt = "{:<6} {:>6} {:>3} {:>9} {:>8} {:>4} {:>9} {:>8} {:>4} {:>9} {:>4} {:>10} {:>10} {:>12}"
print("\nloader, GB/s (median of rep runs; ours/limit in %; targets: cold >= 90% of the disk limit,")
print("warm or host tier >= 90% of pinned H2D, >= 4x torch safetensors load_file)")
print(fmt.format(*head))
verdicts = []
for p in presets:
    bench, torch = load(f"loader-{p}.json"), load(f"torch-{p}.json")
    if not bench or not bench.get("models"):
        print(f"{p:<6} not measured")
        continue
    m = bench["models"][0]
    if m.get("error") and not m["rows"]["cold_ours"]["measured"]:
        print(f"{p:<6} error: {m['error']}")
        continue
    r = {k: v["gbps"] for k, v in m["rows"].items()}
    tc = torch["cold"]["gbps"] if torch else 0
    tw = torch["warm"]["gbps"] if torch else 0
    warm_best = max(r["warm_ours"], r["host_tier_ours"])
    print(fmt.format(p, f"{m['data_bytes'] / 1e9:.1f}", m["repeat"], gb(r["cold_ours"]),
                     gb(r["cold_limit"]), pct(r["cold_ours"], r["cold_limit"]), gb(r["warm_ours"]),
                     gb(r["copy_limit"]), pct(r["warm_ours"], r["copy_limit"]),
                     gb(r["host_tier_ours"]), pct(r["host_tier_ours"], r["copy_limit"]), gb(tc),
                     gb(tw), f"{times(r['cold_ours'], tc)}/{times(warm_best, tw)}"))
    ok = lambda c: "PASS" if c else "FAIL"
    verdict = (f"{p}: cold {ok(r['cold_limit'] and r['cold_ours'] >= 0.9 * r['cold_limit'])}, "
               f"warm {ok(r['copy_limit'] and warm_best >= 0.9 * r['copy_limit'])}")
    if torch:
        verdict += (f", vs torch cold {ok(tc and r['cold_ours'] >= 4 * tc)}"
                    f" warm {ok(tw and warm_best >= 4 * tw)}")
    else:
        verdict += ", vs torch: not measured"
    if m.get("error"):
        verdict += f" (error: {m['error']})"
    verdicts.append(verdict)
for v in verdicts:
    print("verdict " + v)
PY
}

# --- main -------------------------------------------------------------------------------------
main() {
    mkdir -p "$SUITE_OUT"
    : >"$SUMMARY"
    echo "gpu suite: output under $SUITE_OUT, checkpoints under $NEXUS_GPU_DIR, budget ${SUITE_BUDGET_S}s"
    if ! section_0_environment; then
        FAILED_SECTIONS+=("0. environment")
    else
        section_1_loader || FAILED_SECTIONS+=("1. loader")
        # later sections go here: section_2_correctness, section_3_decode, section_4_swap, ...
    fi
    heading "summary"
    cat "$SUMMARY"
    echo "gpu suite: done in ${SECONDS}s; logs and JSON under $SUITE_OUT"
    if [ ${#FAILED_SECTIONS[@]} -gt 0 ]; then
        echo "gpu suite: failed sections: ${FAILED_SECTIONS[*]}"
        return 1
    fi
}

# Run when executed; when sourced (to test a section's table), only define the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
