#!/usr/bin/env bash
# gpu_suite.sh — every GPU measurement in ONE command, for a GPU machine that has no Debian
# packages of ours and no network. Run from the repo root with .bundle carried (make gpu-bundle
# builds it here): it points LD_LIBRARY_PATH at .bundle/lib (and cuBLAS), checks the GPU and
# that the binaries start, then runs numbered sections; each writes logs and JSON under $SUITE_OUT and
# adds lines to the summary printed at the end.
#
#   bench/gpu_suite.sh                      # everything, under ~9 minutes
#   SUITE_MODELS="0.6b" bench/gpu_suite.sh  # a quick pass
#   SUITE_SECTIONS="2 5" bench/gpu_suite.sh # some sections only (0, the environment, always runs)
#
# env: SUITE_OUT (default /tmp/nexus-gpu-suite; with OUT set, its summary and a tarball of it
# are copied there), NEXUS_GPU_DIR (checkpoints,
# default /tmp/nexus-gpu, on local disk), SUITE_MODELS ("0.6b 4b 8b"; any presets of nexusctl
# model synth: tiny, 0.6b, 4b, 8b), BUNDLE (.bundle; a bundle of the CPU emulation makes the
# run a dry run of this script's glue: make gpu-suite-emu), SUITE_SECTIONS
# ("1 2 3 4 5"), SUITE_BUDGET_S (530: the whole suite must fit a 10-minute command),
# SUITE_REPEAT (3), SUITE_REPEAT_8B (1), SUITE_DECODE_TOKENS (64).
#
# Sections: 0. environment (GPU, bundle, cuBLAS on LD_LIBRARY_PATH, torch), 1. loader,
# 2. correctness (logits and greedy tokens against transformers), 3. decode (tokens/s against
# the roofline and transformers' generate; Q4_K_M and Q8_0 GGUF files of 0.6b and 4b against
# the roofline of their quantized bytes), 4. swap (time to first token from disk, host tier
# and resident through nexusd), 5. sanitizers (compute-sanitizer memcheck and racecheck on the
# CUDA tests). Each is a function section_N_name writing under $SUITE_OUT/N-name/ and appending
# its lines to $SUMMARY. Time: each section gets a share of what is left when it starts
# (SECTION_SHARE below, among the sections still to run), so an overrun shrinks the later ones
# instead of killing the last; a step that does not fit its section prints "skipped".
set -uo pipefail # not -e: a failing section is reported and the next one still runs

BUNDLE=${BUNDLE:-.bundle}
# Under $OUT only 8 files come back: the suite works in SUITE_OUT and, when OUT is set, leaves
# there summary.txt and suite-logs.tar.gz (every log and JSON) alone.
SUITE_OUT=${SUITE_OUT:-/tmp/nexus-gpu-suite}
NEXUS_GPU_DIR=${NEXUS_GPU_DIR:-/tmp/nexus-gpu}
SUITE_MODELS=${SUITE_MODELS:-"0.6b 4b 8b"}
SUITE_BUDGET_S=${SUITE_BUDGET_S:-530}
SUITE_REPEAT=${SUITE_REPEAT:-3}
SUITE_REPEAT_8B=${SUITE_REPEAT_8B:-1}
SUITE_SECTIONS=${SUITE_SECTIONS:-"1 2 3 4 5"}
SUITE_DECODE_TOKENS=${SUITE_DECODE_TOKENS:-64}
PYTHON=${PYTHON:-python3}

# Python (torch) keeps the machine's own libraries: the bundle's libstdc++ and friends are for
# our binaries only. Our binaries get NEXUS_LD_LIBRARY_PATH (the bundle + cuBLAS), which the
# Python scripts also pass to the binaries they start.
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
if [ -n "$ORIG_LD_LIBRARY_PATH" ]; then
    PY=(env "LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH" PYTHONUNBUFFERED=1 "$PYTHON")
else
    PY=(env -u LD_LIBRARY_PATH PYTHONUNBUFFERED=1 "$PYTHON")
fi
BUNDLE_LIBS=$(realpath -m "$BUNDLE/lib")
# The bundle's C++ runtime (lib-cxx) only where the machine has none: a newer one must win.
# (Not grep -q: under pipefail its early exit kills ldconfig with SIGPIPE now and then, and the
# pipeline's 141 read as "no libstdc++".)
if ! ldconfig -p 2>/dev/null | grep 'libstdc++\.so\.6 ' >/dev/null; then
    BUNDLE_LIBS="$BUNDLE_LIBS:$(realpath -m "$BUNDLE/lib-cxx")"
fi
export NEXUS_LD_LIBRARY_PATH="$BUNDLE_LIBS${ORIG_LD_LIBRARY_PATH:+:$ORIG_LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH=$NEXUS_LD_LIBRARY_PATH
NEXUSCTL=$BUNDLE/nexusctl
NEXUSD=$BUNDLE/nexusd
LOADER_BENCH=$BUNDLE/bench/loader
DECODE_BENCH=$BUNDLE/bench/decode
TOOL_LOGITS=$BUNDLE/tests/tool_logits
SUMMARY=$SUITE_OUT/summary.txt
# A bundle of the CPU emulation (bench/gpu_bundle.sh on a CUEMU=1 build; make gpu-suite-emu):
# the suite then checks its own glue (no nvidia-smi, no cuBLAS to find); its figures are
# meaningless, and the summary opens and closes saying so.
EMULATED=0
if grep -q '^cuemu: *yes' "$BUNDLE/BUILD_INFO" 2>/dev/null; then
    EMULATED=1
    # the loader bench's CUDA pool alone is 4.5 GiB (its 4 GiB copy-limit buffer): more than
    # the emulated device's default 4 GiB (an H100 has 80)
    export NX_CUEMU_VRAM_MB=${NX_CUEMU_VRAM_MB:-8192}
fi
FAILED_SECTIONS=()
SECTION_ROWS=()
HAVE_TORCH=0
SECTION_END=0 # $SECONDS at which the running section's share ends (0: no section running)
# (3 took 5 points from 1, 4 and 5 when it gained the quantized runs: a guess until a GPU run
# says how long each section takes)
declare -A SECTION_SHARE=([1]=38 [2]=10 [3]=30 [4]=13 [5]=9)
declare -A SECTION_NAME=([1]=loader [2]=correctness [3]=decode [4]=swap [5]=sanitizers)
declare -A SECTION_MIN_S=([1]=30 [2]=30 [3]=30 [4]=30 [5]=20) # below this: skipped (time)

heading() { printf '\n==== %s  (t=%ss of %ss)\n' "$1" "$SECONDS" "$SUITE_BUDGET_S"; }
seconds_left() { echo $((SUITE_BUDGET_S - SECONDS)); }
# Seconds left to the running section: its share, never past the suite's budget less 15 s.
section_left() {
    local left=$(($(seconds_left) - 15))
    if [ "$SECTION_END" -gt 0 ] && [ $((SECTION_END - SECONDS)) -lt "$left" ]; then
        left=$((SECTION_END - SECONDS))
    fi
    echo "$left"
}
note() { echo "$*" | tee -a "$SUMMARY"; }

# Run a step with the time that is left to its section; log to a file.
# step NAME LOG CMD...  -> the command's status (124 when it ran out of time)
step() {
    local name=$1 log=$2
    shift 2
    local left
    left=$(section_left)
    if [ "$left" -le 5 ]; then
        note "skipped (time): $name"
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
    if [ "$EMULATED" = 1 ]; then
        note "environment: EMULATED bundle ($BUNDLE/BUILD_INFO: cuemu: yes): a dry run of the suite's glue on tests/cuemu, the CPU emulation of CUDA; no figure of this run is a GPU figure"
        echo "cuemu (CPU emulation), not a GPU" >"$dir/gpu.txt"
    elif ! nvidia-smi >"$dir/nvidia-smi.txt" 2>&1; then
        note "environment: nvidia-smi failed; no usable GPU"
        cat "$dir/nvidia-smi.txt"
        return 1
    else
        nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current \
            --format=csv,noheader | tee "$dir/gpu.txt"
    fi
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
    if [ "$EMULATED" = 1 ]; then
        note "environment: cuBLAS: the emulation's own (linked in)"
    else
        find_cublas "$dir"
    fi
    local extra
    for extra in "$NEXUSD" "$DECODE_BENCH" "$TOOL_LOGITS"; do
        [ -x "$extra" ] || note "environment: $extra is missing from the bundle; sections using it fail"
    done
    # gpu_correctness.py needs numpy (with or without torch); PYTHON picks another interpreter
    "${PY[@]}" -c 'import numpy' 2>/dev/null ||
        note "environment: $PYTHON has no numpy: section 2's logits comparison cannot run (set PYTHON)"
    if "${PY[@]}" -c 'import torch, safetensors; assert torch.cuda.is_available()' 2>"$dir/torch.txt"; then
        HAVE_TORCH=1
    else
        note "environment: no torch with CUDA; the torch load_file baseline is skipped"
    fi
    note "environment: $(head -1 "$dir/gpu.txt"); $(nproc) cpus; $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
}

# The CUDA backend dlopens libcublas.so.13 (and it libcublasLt.so.13): from the machine's CUDA
# install or from torch's nvidia wheels, whichever has it; their folder joins the binaries'
# LD_LIBRARY_PATH. A machine without it is noted (the CUDA engine then fails to start).
find_cublas() {
    local dir=$1 found="" cand
    local candidates=("${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64
        /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64)
    # torch's wheels: nvidia/cublas/lib (CUDA 12 layout) or nvidia/cu13/lib (CUDA 13 layout)
    while IFS= read -r cand; do candidates+=("$cand"); done < <("${PY[@]}" - <<'PY' 2>/dev/null
import glob, os
roots = []
try:
    import nvidia.cublas as c
    roots += [os.path.dirname(c.__file__ or "")] + list(getattr(c, "__path__", []))
except Exception:
    pass
try:
    import nvidia
    roots += list(nvidia.__path__)
except Exception:
    pass
seen = set()
for r in roots:
    for lib in glob.glob(os.path.join(r, "**", "libcublas.so.13*"), recursive=True):
        d = os.path.dirname(lib)
        if d not in seen:
            seen.add(d)
            print(d)
PY
    )
    for cand in "${candidates[@]}"; do
        if [ -e "$cand/libcublas.so.13" ] && [ -e "$cand/libcublasLt.so.13" ]; then
            found=$cand
            break
        fi
    done
    if [ -z "$found" ]; then
        found=$(ldconfig -p 2>/dev/null | awk '/libcublas\.so\.13 / {print $NF; exit}')
        [ -n "$found" ] && found=$(dirname "$found")
    fi
    printf '%s\n' "${candidates[@]}" >"$dir/cublas-candidates.txt"
    if [ -n "$found" ]; then
        NEXUS_LD_LIBRARY_PATH="$BUNDLE_LIBS:$found${ORIG_LD_LIBRARY_PATH:+:$ORIG_LD_LIBRARY_PATH}"
        export NEXUS_LD_LIBRARY_PATH LD_LIBRARY_PATH=$NEXUS_LD_LIBRARY_PATH
        note "environment: cuBLAS 13 from $found"
    else
        note "environment: libcublas.so.13 not found (searched: $(tr '\n' ' ' <"$dir/cublas-candidates.txt")); the CUDA engine cannot start"
    fi
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
                "${PY[@]}" bench/st_torch_baseline.py "$model" --repeat "$repeat" \
                --json "$dir/torch-$preset.json" || failures=$((failures + 1))
        fi
    done
    # the table exits 1 when a model was not measured or missed a target (as sections 2-4 do)
    loader_table "$dir" | tee -a "$SUMMARY" || failures=$((failures + 1))
    [ "$failures" -eq 0 ]
}

# One table over the models: ours against the physical limits and against torch.
loader_table() {
    # shellcheck disable=SC2086 # one argument per preset
    "${PY[@]}" - "$1" $SUITE_MODELS <<'PY'
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
verdicts, failed = [], False
for p in presets:
    bench, torch = load(f"loader-{p}.json"), load(f"torch-{p}.json")
    if not bench or not bench.get("models"):
        print(f"{p:<6} not measured")
        failed = True
        continue
    m = bench["models"][0]
    if m.get("error") and not m["rows"]["cold_ours"]["measured"]:
        print(f"{p:<6} error: {m['error']}")
        failed = True
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
sys.exit(1 if failed or any("FAIL" in v or "error" in v for v in verdicts) else 0)
PY
}

# The synthesized checkpoint of a preset, made now when section 1 did not run (or could not).
# model_dir PRESET -> prints its folder; fails when it cannot be made in the time left.
model_dir() {
    local preset=$1 log_dir=$2 model=$NEXUS_GPU_DIR/qwen3-$1-bf16
    mkdir -p "$NEXUS_GPU_DIR"
    synthesize "$preset" "$model" "$log_dir/synth-$preset.log" >&2 || return 1
    echo "$model"
}

# The tests of test_cuda_engine or test_pick that a log says were skipped: a skipped GPU test
# means no GPU was seen. test_cuda_engine's test_cuda_pool_fails_cleanly_without_gpu skips on
# every machine that has one, so it is left out.
gpu_tests_skipped() {
    grep -E '^\[  SKIPPED \] test_' "$1" 2>/dev/null | awk '{print $4}' |
        grep -v '_without_gpu$' | sort -u | tr '\n' ' ' | sed 's/ $//'
}

# --- 2. correctness --------------------------------------------------------------------------
# Random Qwen3 and Llama models built and saved by transformers; our logits (tool_logits) and
# greedy tokens against transformers' in float32 on the same bf16 weights, on cuda and cpu.
# Without torch, synthesized tiny models against the numpy reference (tests/ref_forward.py).
section_2_correctness() {
    heading "2. correctness"
    local dir=$SUITE_OUT/2-correctness reference=hf
    mkdir -p "$dir"
    if [ "$HAVE_TORCH" != 1 ]; then
        reference=numpy
        note "correctness: no torch with CUDA: tiny synthesized models against the numpy reference instead of transformers"
    fi
    # the CUDA backend against the CPU backend, and the GPU pick kernel against the CPU sampler
    local t trc tfail=0 skipped
    for t in test_cuda_engine test_pick; do
        if [ ! -x "$BUNDLE/tests/$t" ]; then
            note "correctness $t: not in the bundle; FAIL"
            tfail=1
            continue
        fi
        step "$t" "$dir/$t.log" "$BUNDLE/tests/$t"
        trc=$?
        skipped=$(gpu_tests_skipped "$dir/$t.log")
        if [ "$trc" -eq 0 ] && [ -z "$skipped" ]; then
            note "correctness $t: PASS ($(grep -c '^\[       OK' "$dir/$t.log") tests)"
        else
            note "correctness $t: FAIL (exit $trc; log $dir/$t.log)"
            [ -n "$skipped" ] && note "     skipped (no GPU seen?): $skipped"
            grep -E '^\[  (FAILED|ERROR)|^\[   LINE|[Ff]ailure' "$dir/$t.log" | head -6 | sed 's/^/     /' | tee -a "$SUMMARY"
            tfail=1
        fi
    done
    step "correctness (reference $reference)" "$dir/correctness.log" \
        "${PY[@]}" bench/gpu_correctness.py --bin "$BUNDLE" --work "$NEXUS_GPU_DIR/correctness" \
        --reference "$reference" --devices cuda,cpu --greedy 32 --json "$dir/correctness.json" \
        --summary "$SUMMARY"
    local rc=$?
    [ "$rc" -eq 0 ] || { grep -q '^correctness' "$SUMMARY" || note "correctness: FAIL (exit $rc, see $dir/correctness.log)"; }
    [ "$rc" -eq 0 ] && [ "$tfail" -eq 0 ]
}

# --- 3. decode -------------------------------------------------------------------------------
# The GGUF file of a preset's checkpoint quantized with MIX (q4_k_m, q8_0), made now when
# missing: `nexusctl model quantize` of the bf16 checkpoint (model_dir), not `model synth
# --dtype MIX`, which synthesizes in F32 first (16 GB beside the file for 4b on a 64 GiB disk
# that already holds the bf16 checkpoints) and would not reuse them. The weights differ from
# synth's by the bf16 rounding, which a speed measurement does not see.
# quantized_file PRESET MIX LOG_DIR -> prints the file; fails when it cannot be made in time.
quantized_file() {
    local preset=$1 mix=$2 log_dir=$3 model
    local file=$NEXUS_GPU_DIR/qwen3-$preset-$mix.gguf
    if ! "$NEXUSCTL" model inspect "$file" --summary >/dev/null 2>&1; then
        model=$(model_dir "$preset" "$log_dir") || return 1
        step "quantize $preset to $mix" "$log_dir/quantize-$preset-$mix.log" \
            "$NEXUSCTL" model quantize "$model" "$file" --type "$mix" >&2 || return 1
        tail -1 "$log_dir/quantize-$preset-$mix.log" | sed 's/^/   /' >&2
    fi
    echo "$file"
}

# build/bench/decode --device cuda on each preset (its JSON names the backend), then its
# quantized files (0.6b and 4b), then gpu_decode.py: the roofline from a D2D copy and
# transformers' generate on the same models, one table.
section_3_decode() {
    heading "3. decode"
    local dir=$SUITE_OUT/3-decode preset model failures=0 args=()
    mkdir -p "$dir"
    for preset in $SUITE_MODELS; do
        model=$(model_dir "$preset" "$dir") || { failures=$((failures + 1)); continue; }
        if step "decode bench $preset" "$dir/decode-$preset.log" \
            "$DECODE_BENCH" "$model" --prompt 128 --decode-prompt 16 --tokens "$SUITE_DECODE_TOKENS" \
            --batches 1,8,32 --device cuda --json "$dir/decode-$preset.json"; then
            cat "$dir/decode-$preset.log"
        else
            failures=$((failures + 1))
        fi
        args+=(--model "$preset=$model")
    done
    # Quantized weights (the GPU's quantized GEMV at batches 1 and 8, dequantization to BF16
    # and cuBLAS at 32): Q4_K_M and Q8_0 GGUF files of 0.6b and 4b (tiny in the dry run);
    # gpu_decode.py puts them against the roofline of the bytes they read per step.
    local mix qfile
    for preset in $SUITE_MODELS; do
        case $preset in 0.6b | 4b | tiny) ;; *) continue ;; esac
        for mix in q4_k_m q8_0; do
            if ! qfile=$(quantized_file "$preset" "$mix" "$dir"); then
                failures=$((failures + 1))
                continue
            fi
            if step "decode bench $preset $mix" "$dir/decode-$preset-$mix.log" \
                "$DECODE_BENCH" "$qfile" --prompt 128 --decode-prompt 16 \
                --tokens "$SUITE_DECODE_TOKENS" --batches 1,8,32 --device cuda \
                --json "$dir/decode-$preset-$mix.json"; then
                cat "$dir/decode-$preset-$mix.log"
            else
                failures=$((failures + 1))
            fi
            args+=(--quantized "$preset-$mix=$qfile")
        done
    done
    # The fused RMSNorm (in the QKV and gate-up GEMVs) against the norm as its own kernel
    # (NEXUS_CUDA_FUSE_NORM=0), batch 1, on 0.6b (where a launch saved counts most) and 4b:
    # gpu_decode.py prints the ratio, which says whether the fusion's default is right here.
    local ab
    for ab in $SUITE_MODELS; do
        case $ab in 0.6b | 4b | tiny) ;; *) continue ;; esac
        model=$(model_dir "$ab" "$dir") || continue
        step "decode bench $ab, RMSNorm as its own kernel" "$dir/decode-$ab-unfused.log" \
            env NEXUS_CUDA_FUSE_NORM=0 "$DECODE_BENCH" "$model" --prompt 128 --decode-prompt 16 \
            --tokens "$SUITE_DECODE_TOKENS" --batches 1 --device cuda \
            --json "$dir/decode-$ab-unfused.json" || failures=$((failures + 1))
    done
    # Where the GPU time of batch-1 steps goes, launch by launch (NEXUS_CUDA_PROFILE=1, graphs
    # off; prefill and the sampled row included), on the last preset: its top lines go into
    # the summary, so the next optimisation starts from a measurement.
    local big=${SUITE_MODELS##* }
    if model=$(model_dir "$big" "$dir"); then
        if step "decode bench $big, profiled" "$dir/decode-$big-profile.log" \
            env NEXUS_CUDA_PROFILE=1 "$DECODE_BENCH" "$model" --prompt 16 --decode-prompt 16 \
            --tokens 32 --batches 1 --device cuda; then
            note "decode $big b1, GPU time by launch (graphs off; the 10 largest and the total):"
            grep '^nexus profile:' "$dir/decode-$big-profile.log" | sed -n '2,12p;$p' |
                sed 's/^nexus profile: /  /' | tee -a "$SUMMARY"
        else
            failures=$((failures + 1))
        fi
    fi
    # The same for the largest Q4_K_M file: how the quantized GEMVs' time compares.
    local qbig=""
    for preset in $SUITE_MODELS; do
        case $preset in 0.6b | 4b | tiny) qbig=$preset ;; esac
    done
    if [ -n "$qbig" ] && qfile=$(quantized_file "$qbig" q4_k_m "$dir"); then
        if step "decode bench $qbig q4_k_m, profiled" "$dir/decode-$qbig-q4_k_m-profile.log" \
            env NEXUS_CUDA_PROFILE=1 "$DECODE_BENCH" "$qfile" --prompt 16 --decode-prompt 16 \
            --tokens 32 --batches 1 --device cuda; then
            note "decode $qbig q4_k_m b1, GPU time by launch (graphs off; the 10 largest and" \
                "the total):"
            grep '^nexus profile:' "$dir/decode-$qbig-q4_k_m-profile.log" | sed -n '2,12p;$p' |
                sed 's/^nexus profile: /  /' | tee -a "$SUMMARY"
        else
            failures=$((failures + 1))
        fi
    fi
    [ "$HAVE_TORCH" = 1 ] || args+=(--no-torch)
    local left
    left=$(section_left)
    step "decode table (roofline, transformers generate)" "$dir/table.log" \
        "${PY[@]}" bench/gpu_decode.py --decode-dir "$dir" "${args[@]}" --prompt 16 \
        --tokens "$SUITE_DECODE_TOKENS" --repeat 3 --deadline-s $((left - 10)) \
        --json "$dir/decode-table.json" --summary "$SUMMARY" || failures=$((failures + 1))
    [ "$failures" -eq 0 ]
}

# --- 4. swap ---------------------------------------------------------------------------------
# Time to first token from disk (page cache dropped), the host tier and resident, through a
# real nexusd on cuda; the disk limit comes from section 1's JSON when it ran in this $SUITE_OUT.
section_4_swap() {
    heading "4. swap"
    local dir=$SUITE_OUT/4-swap preset model args=()
    mkdir -p "$dir"
    for preset in $SUITE_MODELS; do
        model=$(model_dir "$preset" "$dir") && args+=(--model "$preset=$model")
    done
    [ ${#args[@]} -gt 0 ] || { note "swap: FAIL (no model could be synthesized)"; return 1; }
    local left
    left=$(section_left)
    step "swap through nexusd" "$dir/swap.log" \
        "${PY[@]}" bench/gpu_swap.py --bin "$BUNDLE" --device cuda "${args[@]}" \
        --work "$NEXUS_GPU_DIR/swap-home" --loader-dir "$SUITE_OUT/1-loader" \
        --deadline-s $((left - 10)) --json "$dir/swap.json" --summary "$SUMMARY"
    local rc=$?
    cp "$NEXUS_GPU_DIR/swap-home/nexusd.log" "$dir/" 2>/dev/null
    return $rc
}

# --- 5. sanitizers ---------------------------------------------------------------------------
# compute-sanitizer memcheck (with leak check) and racecheck on the tests that reach the GPU:
# test_cuda_engine (the CUDA backend), test_pool (its auto device is the CUDA pool on a GPU),
# test_loader (loads through the pool). Most important first, so a short budget keeps those.
find_sanitizer() {
    local cand
    for cand in "$(command -v compute-sanitizer 2>/dev/null)" \
        "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer \
        /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer \
        /opt/nvidia/*/compute-sanitizer /opt/nvidia/*/compute-sanitizer/compute-sanitizer; do
        [ -n "$cand" ] && [ -x "$cand" ] && { echo "$cand"; return 0; }
    done
    return 1
}

section_5_sanitizers() {
    heading "5. sanitizers"
    local dir=$SUITE_OUT/5-sanitizers sanitizer test tool failures=0
    mkdir -p "$dir"
    if ! sanitizer=$(find_sanitizer); then
        note "sanitizers: FAIL (compute-sanitizer not found on PATH or under /usr/local/cuda*, /opt/nvidia)"
        return 1
    fi
    echo "   $sanitizer"
    for test in test_cuda_engine test_pick test_pool test_loader; do
        if [ ! -x "$BUNDLE/tests/$test" ]; then
            note "sanitizers $test: not in the bundle (not built); FAIL"
            failures=$((failures + 1))
        fi
    done
    for run in test_cuda_engine:memcheck test_cuda_engine:racecheck test_pick:memcheck \
        test_pick:racecheck test_pool:memcheck \
        test_pool:racecheck test_loader:memcheck test_loader:racecheck; do
        test=${run%%:*} tool=${run##*:}
        [ -x "$BUNDLE/tests/$test" ] || continue
        local log=$dir/$test-$tool.log report=$dir/$test-$tool.txt extra=()
        [ "$tool" = memcheck ] && extra=(--leak-check full)
        step "$tool $test" "$log" "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
            --log-file "$report" "$BUNDLE/tests/$test"
        local rc=$? errors
        # memcheck ends its report with "ERROR SUMMARY: N errors"; racecheck with "RACECHECK
        # SUMMARY: H hazards displayed (N errors, W warnings)" and no ERROR SUMMARY line
        if [ "$tool" = racecheck ]; then
            errors=$(grep -o 'RACECHECK SUMMARY: [0-9]* hazards\? displayed ([0-9]* error' "$report" \
                2>/dev/null | grep -o '[0-9]* error' | grep -o '[0-9]*' | tail -1)
        else
            errors=$(grep -o 'ERROR SUMMARY: [0-9]* error' "$report" 2>/dev/null | grep -o '[0-9]*' | tail -1)
        fi
        # the CUDA tests skip their GPU cases when they see no GPU: then nothing was checked
        local skipped=""
        case $test in test_cuda_engine | test_pick) skipped=$(gpu_tests_skipped "$log") ;; esac
        if [ "$rc" -eq 124 ] && [ -z "$errors" ]; then
            failures=$((failures + 1)) # step noted the time-out
        elif [ "$rc" -eq 0 ] && [ "${errors:-x}" = 0 ] && [ -n "$skipped" ]; then
            note "sanitizers $test $tool: FAIL (0 errors, but the GPU tests were skipped: $skipped)"
            failures=$((failures + 1))
        elif [ "$rc" -eq 0 ] && [ "${errors:-x}" = 0 ]; then
            note "sanitizers $test $tool: 0 errors PASS$(grep -o '(0 errors, [1-9][0-9]* warnings)' "$report" | tail -1 | sed 's/^/ /')"
        elif [ -z "$errors" ]; then
            note "sanitizers $test $tool: FAIL (exit $rc, no error summary; log $log)"
            tail -5 "$log" "$report" 2>/dev/null | sed 's/^/     /' | tee -a "$SUMMARY"
            failures=$((failures + 1))
        else
            local why="$errors errors"
            [ "$errors" = 0 ] && why="0 sanitizer errors, but the test exited $rc"
            note "sanitizers $test $tool: FAIL ($why); first lines:"
            grep -v 'COMPUTE-SANITIZER' "$report" | head -8 | sed 's/^/     /' | tee -a "$SUMMARY"
            [ "$errors" = 0 ] && tail -5 "$log" | sed 's/^/     /' | tee -a "$SUMMARY"
            failures=$((failures + 1))
        fi
    done
    [ "$failures" -eq 0 ]
}

# One section: its share of the time left, then its function; a row for the final table.
run_section() {
    local n=$1 name=${SECTION_NAME[$1]} total=0 k
    for k in $SUITE_SECTIONS; do
        [ "$k" -ge "$n" ] && [ -n "${SECTION_SHARE[$k]:-}" ] && total=$((total + SECTION_SHARE[$k]))
    done
    local left=$(($(seconds_left) - 15))
    local share=$((left * SECTION_SHARE[$n] / total))
    local start=$SECONDS status
    if [ "$share" -lt "${SECTION_MIN_S[$n]}" ]; then
        heading "$n. $name"
        note "$n. $name: skipped (time: ${share}s of ${left}s left for it)"
        SECTION_ROWS+=("$(printf '%-16s %-16s %6s' "$n. $name" "skipped (time)" 0)")
        return 0
    fi
    SECTION_END=$((SECONDS + share))
    echo "($n. $name: up to ${share}s)"
    if "section_${n}_${name}"; then status=ok; else
        status=FAILED
        FAILED_SECTIONS+=("$n. $name")
    fi
    SECTION_END=0
    SECTION_ROWS+=("$(printf '%-16s %-16s %6s' "$n. $name" "$status" $((SECONDS - start)))")
}

# --- main -------------------------------------------------------------------------------------
main() {
    mkdir -p "$SUITE_OUT"
    : >"$SUMMARY"
    [ "$EMULATED" = 1 ] && note "EMULATED DRY RUN (tests/cuemu, the CPU emulation of CUDA): checks the suite's glue; no figure below is a GPU figure"
    echo "gpu suite: output under $SUITE_OUT, checkpoints under $NEXUS_GPU_DIR, budget ${SUITE_BUDGET_S}s, sections 0 $SUITE_SECTIONS"
    local n
    for n in $SUITE_SECTIONS; do
        [ -n "${SECTION_NAME[$n]:-}" ] || { echo "gpu suite: no section '$n' (1-5)"; return 2; }
    done
    if ! section_0_environment; then
        FAILED_SECTIONS+=("0. environment")
        SECTION_ROWS+=("$(printf '%-16s %-16s %6s' "0. environment" FAILED "$SECONDS")")
    else
        SECTION_ROWS+=("$(printf '%-16s %-16s %6s' "0. environment" ok "$SECONDS")")
        for n in $SUITE_SECTIONS; do
            run_section "$n"
        done
    fi
    heading "summary"
    cat "$SUMMARY"
    printf '\n%-16s %-16s %6s\n' section status seconds
    printf '%s\n' "${SECTION_ROWS[@]}"
    echo "gpu suite: done in ${SECONDS}s; logs and JSON under $SUITE_OUT"
    [ "$EMULATED" = 1 ] && echo "gpu suite: EMULATED DRY RUN: no figure above is a GPU figure"
    if [ -n "${OUT:-}" ] && [ -d "$OUT" ] && [ "$OUT" != "$SUITE_OUT" ]; then
        cp "$SUMMARY" "$OUT/summary.txt"
        tar -czf "$OUT/suite-logs.tar.gz" -C "$(dirname "$SUITE_OUT")" "$(basename "$SUITE_OUT")" &&
            echo "gpu suite: copied summary.txt and suite-logs.tar.gz to $OUT"
    fi
    if [ ${#FAILED_SECTIONS[@]} -gt 0 ]; then
        echo "gpu suite: failed sections: ${FAILED_SECTIONS[*]}"
        return 1
    fi
}

# Run when executed; when sourced (to test a section's table), only define the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
