#!/usr/bin/env bash
# gpu_suite_emu.sh — what `make gpu-suite-emu` runs: a DRY RUN of bench/gpu_suite.sh on
# tests/cuemu, the CPU emulation of CUDA, to check the suite's glue (bash, paths, JSON keys, the
# Python scripts, each section's verdict logic) before a rare GPU session. It is NOT a
# measurement: every figure it prints comes from the emulation and is meaningless; never record
# one as a GPU figure (the summary opens and closes with EMULATED DRY RUN).
#
# It builds $EMU_BUILD with CUEMU=1 (make's emu build), bundles it into $EMU_BUILD/bundle (never
# .bundle, the real CUDA bundle), runs every section on the tiny preset, then judges the run:
#   * expected here, and accepted only for these reasons: section 1 FAILs its targets (emulated
#     figures of a tiny model), section 5 FAILs because compute-sanitizer is absent;
#   * any other failed section, a loader row that was not measured, or a Python traceback or
#     bash error in any log fails the dry run.
# About two minutes on two cores once built. Not part of `make test`.
#
#   bench/gpu_suite_emu.sh        env: EMU_BUILD (build-emu), PYTHON (/usr/bin/python3: numpy)
set -uo pipefail

EMU_BUILD=${EMU_BUILD:-build-emu}
PYTHON=${PYTHON:-/usr/bin/python3}
OUT_DIR=$EMU_BUILD/suite
SUITE_OUT=$OUT_DIR/out
BUNDLE_DIR=$EMU_BUILD/bundle

mkdir -p "$EMU_BUILD"
make --no-print-directory BUILD="$EMU_BUILD" CUEMU=1 -j"$(nproc)" all >"$OUT_DIR.build.log" 2>&1 ||
    { tail -20 "$OUT_DIR.build.log"; echo "gpu-suite-emu: the emulated build failed"; exit 1; }
bench/gpu_bundle.sh "$EMU_BUILD" "$BUNDLE_DIR" || { echo "gpu-suite-emu: bundling failed"; exit 1; }
grep -q '^cuemu: *yes' "$BUNDLE_DIR/BUILD_INFO" ||
    { echo "gpu-suite-emu: $BUNDLE_DIR is not an emulated bundle"; exit 1; }

rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
BUNDLE=$BUNDLE_DIR SUITE_MODELS=tiny SUITE_OUT=$SUITE_OUT SUITE_BUDGET_S=900 \
    NEXUS_GPU_DIR=$OUT_DIR/models PYTHON=$PYTHON SUITE_SECTIONS="1 2 3 4 5" OUT= \
    bench/gpu_suite.sh 2>&1 | tee "$OUT_DIR/suite.log"

summary=$SUITE_OUT/summary.txt
problems=()
status() { awk -v s="$1." '$1 == s {print $3}' "$OUT_DIR/suite.log" | tail -1; }
[ "$(status 0)" = ok ] || problems+=("section 0 (environment) did not pass")
for n in 2 3 4; do
    [ "$(status "$n")" = ok ] || problems+=("section $n: $(status "$n")")
done
if [ "$(status 1)" != ok ]; then
    grep -q '^verdict tiny: cold FAIL' "$summary" && ! grep -qE '^tiny +(not measured|error)' "$summary" ||
        problems+=("section 1 failed for another reason than its targets")
fi
if [ "$(status 5)" != ok ]; then
    grep -q '^sanitizers: FAIL (compute-sanitizer not found' "$summary" ||
        problems+=("section 5 failed for another reason than a missing compute-sanitizer")
fi
grep -q '^EMULATED DRY RUN' "$summary" || problems+=("the summary does not say EMULATED DRY RUN")
# (0-environment/torch.txt holds the import error of the torch probe: no torch here)
broken=$(grep -rlE 'Traceback \(most recent call last\)|unbound variable|command not found|syntax error' \
    "$OUT_DIR/suite.log" "$SUITE_OUT" 2>/dev/null | grep -v '/0-environment/torch\.txt$' | tr '\n' ' ')
[ -z "$broken" ] || problems+=("a traceback or bash error in: $broken")

echo
if [ ${#problems[@]} -gt 0 ]; then
    printf 'gpu-suite-emu: FAIL: %s\n' "${problems[@]}"
    exit 1
fi
echo "gpu-suite-emu: the suite's glue ran end to end on the CPU emulation (sections 1 and 5 failed" \
    "only as expected here); logs under $SUITE_OUT. Not GPU figures."
