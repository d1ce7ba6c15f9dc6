#!/usr/bin/env bash
# smoke.sh — run each named libFuzzer target briefly on a copy of its committed seed corpus
# (tests/fuzz/corpus/<target>/), so the harnesses keep building and running; `make fuzz-smoke`.
# The copy keeps the committed corpus from growing. A crash, leak, timeout or out-of-memory
# fails the run and leaves the input under $BUILD/fuzz/artifacts/ to reproduce it with
#   $BUILD/fuzz/<target> <that file>
# FUZZ_SMOKE_JOBS targets run at once (default: twice the CPU count, at most 4: CI has two
# cores), each a single process. Two share a core: a smoke proves that a harness builds, reads
# its seeds and runs, not coverage (the long runs, tests/fuzz/long_run.sh, are for that), and
# with a dozen targets a core each would cost CI two minutes.
# Usage: BUILD=build FUZZ_SMOKE_S=20 tests/fuzz/smoke.sh fuzz_proto fuzz_conf ...
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build}
seconds=${FUZZ_SMOKE_S:-20}
cpus=$(nproc 2>/dev/null || echo 1)
jobs=${FUZZ_SMOKE_JOBS:-$(( cpus < 2 ? 2 : 4 ))}
artifacts=$build/fuzz/artifacts
mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/nx-fuzz-smoke-XXXXXX")
trap 'rm -rf "$work"' EXIT

# One target; its report goes to $work/<target>.report, its exit status is the fuzzer's.
smoke() {
    local target=$1 corpus=$work/$1 log=$work/$1.log start rc runs last
    mkdir -p "$corpus"
    cp tests/fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null
    start=$(date +%s)
    # -max_len: our GGUF seeds carry a 4 KiB header; the rest are far smaller
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$build/fuzz/$target" "$corpus" -max_total_time="$seconds" -max_len=8192 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$target-" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')
    if [ $rc -eq 0 ]; then
        echo "fuzz-smoke: $target: ok, ${runs:-?} runs in $(( $(date +%s) - start )) s, ${last:-no coverage line}"
    else
        echo "fuzz-smoke: $target: FAILED (exit $rc); the log's end:"
        tail -40 "$log"
    fi >"$work/$target.report"
    return $rc
}

running=0
for target in "$@"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$(( running - 1 ))
    fi
    smoke "$target" &
    running=$(( running + 1 ))
done
wait
failed=()
for target in "$@"; do
    cat "$work/$target.report"
    grep -q "^fuzz-smoke: $target: ok" "$work/$target.report" || failed+=("$target")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz-smoke: failed: ${failed[*]} (inputs under $artifacts)"
    exit 1
fi
echo "fuzz-smoke: all $# targets ran ${seconds} s each ($jobs at a time) without a finding"
