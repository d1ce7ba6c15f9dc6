#!/usr/bin/env bash
# long_run.sh — the long fuzz runs whose figures tests/fuzz/README.md records: each named
# target in turn, one process on one core at the lowest priority, until RUNS executions or
# its share of the time left before END (a `date +%s`, default one hour from now), whichever
# comes first. Each grows var/fuzz/<target>/ (ignored; seeded from tests/fuzz/corpus/) and
# prints one tab-separated line: target, executions, seconds, corpus files, corpus bytes,
# cov, ft, findings. Findings are left under var/fuzz/artifacts/.
# Usage: BUILD=build RUNS=10000000 END=$(date -d 08:35 +%s) tests/fuzz/long_run.sh fuzz_proto ...
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build}
runs=${RUNS:-10000000}
end=${END:-$(( $(date +%s) + 3600 ))}
out=var/fuzz
mkdir -p "$out/artifacts"
left=$#
printf 'target\texecs\tseconds\tfiles\tbytes\tcov\tft\tfindings\n'
for target in "$@"; do
    share=$(( (end - $(date +%s)) / left ))
    left=$(( left - 1 ))
    [ "$share" -lt 30 ] && share=30
    corpus=$out/$target
    mkdir -p "$corpus"
    cp -n tests/fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null
    log=$out/$target.log
    start=$(date +%s)
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 nice -n 19 \
        "$build/fuzz/$target" "$corpus" -runs="$runs" -max_total_time="$share" -max_len=8192 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$target-" >"$log" 2>&1
    rc=$?
    seconds=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -nE 's/.*cov: ([0-9]+) ft: ([0-9]+).*/\1\t\2/p')
    files=$(ls "$corpus" | wc -l)
    bytes=$(cat "$corpus"/* 2>/dev/null | wc -c)
    findings=$(ls "$out/artifacts" | grep -c "^$target-")
    [ $rc -ne 0 ] && findings="$findings (exit $rc)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "${execs:-?}" "$seconds" "$files" "$bytes" \
        "${cov:-?	?}" "$findings"
done
