#!/usr/bin/env bash
# run_quant.sh — our engine beside llama.cpp on the same GGUF files, on the CPU: prefill
# tokens/s of a 128-token prompt, decode tokens/s at batch 1 and the aggregate at batch 8,
# each the median of several rounds in which the two alternate (ours, llama.cpp, then the
# other way round), same thread count, same file. Prints the machine, date and command, then a
# markdown table to paste into bench/RESULTS.md, with the physical limit beside it: the weight
# bytes a decode step reads and the memory read bandwidth bench/decode measures in the same
# run, whose quotient bounds decode tokens/s at batch 1 (batch 8 reads them once per 8 tokens).
#
#   bench/run_quant.sh [MODEL.gguf | OURS=MODEL.gguf ...]
#     MODEL.gguf        both engines run the file
#     OURS=MODEL.gguf   ours runs OURS (a model folder, or another file), llama.cpp the GGUF:
#                       e.g. a safetensors folder beside the GGUF made from it
#     no argument       the default set in $QUANT_DIR (what `nexusctl model quantize` makes):
#                       qwen3-{0.6b,4b}-{f16,bf16,q8_0,q4_0,q4_k_m}.gguf, missing ones named
#   env: BUILD (build), BENCH_DIR (var/bench), QUANT_DIR ($BENCH_DIR/gguf), QUANT_ROUNDS (3),
#        QUANT_THREADS (2), QUANT_PROMPT (128), QUANT_TOKENS (32: decode steps per figure),
#        QUANT_OUT ($BENCH_DIR/quant/<date>: every run's JSON), NODE (node), PYTHON (python3),
#        QUANT_HUGEPAGES (off: ours on 4 KiB pages, as nexusd by default; on: `bench/decode
#        --hugepages on`, the weights collapsed into 2 MiB pages; both: ours twice a round,
#        4 KiB then 2 MiB, and the table gains the 2 MiB decode columns),
#        QUANT_BATCHES (1,8; 1 alone makes a round shorter, for more rounds of batch 1)
#
# Ours is `bench/decode MODEL --device cpu --threads T --prompt P --tokens N --batches 1,8
# --json F`; llama.cpp is bench/llama_bench.mjs (needs `make llama-ref`; without node or the
# package its columns say so and ours still run). Ratios are ours / llama.cpp: above 1, ours
# is faster. A side that fails on a file shows '-' and its error goes to the run's log.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-build}
BENCH_DIR=${BENCH_DIR:-var/bench}
QUANT_DIR=${QUANT_DIR:-$BENCH_DIR/gguf}
QUANT_ROUNDS=${QUANT_ROUNDS:-3}
QUANT_THREADS=${QUANT_THREADS:-2}
QUANT_PROMPT=${QUANT_PROMPT:-128}
QUANT_TOKENS=${QUANT_TOKENS:-32}
QUANT_OUT=${QUANT_OUT:-$BENCH_DIR/quant/$(date -u +%Y%m%dT%H%M%SZ)}
QUANT_HUGEPAGES=${QUANT_HUGEPAGES:-off}
QUANT_BATCHES=${QUANT_BATCHES:-1,8}
NODE=${NODE:-node}
PYTHON=${PYTHON:-python3}
DECODE=$BUILD/bench/decode
LLAMA_BENCH=$here/llama_bench.mjs
command_line="bench/run_quant.sh $*"
. "$here/bench_lib.sh"

# --- the models: pairs "ours<TAB>gguf" --------------------------------------------------------
pairs=()
if [ $# -eq 0 ]; then
    for preset in 0.6b 4b; do
        for type in f16 bf16 q8_0 q4_0 q4_k_m; do
            f=$QUANT_DIR/qwen3-$preset-$type.gguf
            if [ -f "$f" ]; then pairs+=("$f"$'\t'"$f")
            else echo "run_quant: missing $f (make it with nexusctl model quantize)"; fi
        done
    done
else
    for arg in "$@"; do
        case $arg in
            *=*) pairs+=("${arg%%=*}"$'\t'"${arg#*=}") ;;
            *) pairs+=("$arg"$'\t'"$arg") ;;
        esac
    done
fi
case $QUANT_HUGEPAGES in
    off|on|both) ;;
    *) echo "run_quant: QUANT_HUGEPAGES must be off, on or both, not '$QUANT_HUGEPAGES'"; exit 1 ;;
esac
if [ ${#pairs[@]} -eq 0 ]; then
    echo "run_quant: no model to run"
    exit 1
fi
for p in "${pairs[@]}"; do
    ours=${p%%$'\t'*} gguf=${p#*$'\t'}
    [ -e "$ours" ] || { echo "run_quant: $ours: no such file or folder"; exit 1; }
    [ -f "$gguf" ] || { echo "run_quant: $gguf: no such file"; exit 1; }
done

# --- which sides can run ---------------------------------------------------------------------
ours_ok=1 llama_ok=1 llama_why=$(llama_missing)
[ -x "$DECODE" ] || { echo "run_quant: $DECODE is not built (make)"; ours_ok=0; }
[ -z "$llama_why" ] || llama_ok=0
[ $llama_ok = 1 ] || echo "run_quant: llama.cpp skipped: $llama_why"
if [ $ours_ok = 0 ] && [ $llama_ok = 0 ]; then exit 1; fi
mkdir -p "$QUANT_OUT" || exit 1
log=$QUANT_OUT/run.log
: > "$log"

echo "== machine"
machine_header "$command_line"
echo "settings: $QUANT_ROUNDS rounds, $QUANT_THREADS threads each, prompt $QUANT_PROMPT," \
     "$QUANT_TOKENS decode steps, batches $QUANT_BATCHES; ours' pages: $QUANT_HUGEPAGES" \
     "(hugepages); JSON in $QUANT_OUT"

echo "cpu busy: $(cpu_busy)% of $(nproc) cpus in the second before the rounds (ideally ~0)"

run_ours() { # ours-model json-file on|off
    "$DECODE" "$1" --device cpu --threads "$QUANT_THREADS" --prompt "$QUANT_PROMPT" \
        --tokens "$QUANT_TOKENS" --batches "$QUANT_BATCHES" --hugepages "$3" --json "$2" >>"$log" 2>&1
}
run_llama() { # gguf json-file
    "$NODE" "$LLAMA_BENCH" "$1" --threads "$QUANT_THREADS" --prompt "$QUANT_PROMPT" \
        --tokens "$QUANT_TOKENS" --batches "$QUANT_BATCHES" --json "$2" >/dev/null 2>>"$log"
}

# --- the rounds: every model each round, the two engines alternating -----------------------
for round in $(seq 1 "$QUANT_ROUNDS"); do
    for i in "${!pairs[@]}"; do
        p=${pairs[$i]}
        ours=${p%%$'\t'*} gguf=${p#*$'\t'}
        case $QUANT_HUGEPAGES in
            both) sides=(ours ours2m llama); [ $((round % 2)) = 0 ] && sides=(llama ours2m ours) ;;
            *) sides=(ours llama); [ $((round % 2)) = 0 ] && sides=(llama ours) ;;
        esac
        for side in "${sides[@]}"; do
            out=$QUANT_OUT/m$i-r$round-$side.json
            if [ "${side#ours}" != "$side" ] && [ $ours_ok = 1 ]; then
                pages=$QUANT_HUGEPAGES
                [ "$pages" = both ] && { [ "$side" = ours2m ] && pages=on || pages=off; }
                echo "== round $round/$QUANT_ROUNDS $side (hugepages $pages) $ours" >>"$log"
                run_ours "$ours" "$out" "$pages" || { rm -f "$out"; echo "run_quant: ours failed on $ours (round $round, hugepages $pages), see $log"; }
            elif [ "$side" = llama ] && [ $llama_ok = 1 ]; then
                echo "== round $round/$QUANT_ROUNDS llama.cpp $gguf" >>"$log"
                run_llama "$gguf" "$out" || { rm -f "$out"; echo "run_quant: llama.cpp failed on $gguf (round $round), see $log"; }
            fi
        done
    done
    echo "round $round of $QUANT_ROUNDS done (cpu busy after it: $(cpu_busy)%)"
done

# --- the table --------------------------------------------------------------------------------
printf '%s\n' "${pairs[@]}" > "$QUANT_OUT/models.tsv"
"$PYTHON" - "$QUANT_OUT" "$QUANT_ROUNDS" "$llama_why" "$QUANT_HUGEPAGES" <<'EOF'
import json, os, statistics, sys

out_dir, rounds, llama_why, hugepages = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
both = hugepages == "both"
pairs = [line.rstrip("\n").split("\t") for line in open(os.path.join(out_dir, "models.tsv")) if line.strip()]

def load(i, r, side):
    path = os.path.join(out_dir, f"m{i}-r{r}-{side}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def figure(doc, phase, batch):
    for f in (doc or {}).get("figures", []):
        if f.get("phase") == phase and f.get("batch") == batch:
            return f.get("tokens_per_s")
    return None

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def num(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"

def ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}"

def gib(n):
    return "-" if not n else f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

KEYS = [("prefill", 1), ("decode", 1), ("decode", 8)]
rows, detail, notes, about = [], [], [], None
for i, (ours_path, gguf) in enumerate(pairs):
    docs = {s: [load(i, r, s) for r in range(1, rounds + 1)] for s in ("ours", "ours2m", "llama")}
    llama_docs = [d for d in docs["llama"] if d]
    ours_docs = [d for d in docs["ours"] if d]
    about = about or (llama_docs[0].get("llama") if llama_docs else None)
    desc = llama_docs[0].get("description", "") if llama_docs else ""
    parts = desc.split(" ")
    ftype = " ".join(parts[2:]) if len(parts) > 2 else "?"
    # the weight bytes one decode step reads: llama.cpp's count from the GGUF's tensors, else ours
    wbytes = med([d.get("weight_bytes_per_step") for d in llama_docs]) or \
             med([d.get("weight_bytes_per_step") for d in ours_docs])
    bw = med([d.get("read_bandwidth_gbps") for d in ours_docs])
    bound = bw * 1e9 / wbytes if bw and wbytes else None
    cells = {}
    for key in KEYS:
        o = med([figure(d, *key) for d in ours_docs])
        l = med([figure(d, *key) for d in llama_docs])
        cells[key] = (o, l)
        detail.append((os.path.basename(gguf), f"{key[0]} b{key[1]}",
                       [num(figure(d, *key)) for d in docs["ours"]],
                       [num(figure(d, *key)) for d in docs["llama"]]))
    name = os.path.basename(gguf) if ours_path == gguf else f"{os.path.basename(gguf)} (ours: {ours_path})"
    if llama_docs:  # what llama.cpp set up, and whether every step was one llama_decode
        ctx = llama_docs[0].get("context", {})
        checks = [f.get("batch_check", {}).get("one_decode_per_step") for d in llama_docs for f in d["figures"]]
        notes.append(f"  {os.path.basename(gguf)}: flash attention {'on' if ctx.get('flash_attention_used') else 'off'}, "
                     f"weights {'repacked for this CPU' if ctx.get('weights_repacked') else 'as stored'}, "
                     f"KV {llama_docs[0].get('kv_type')}; one llama_decode per step: "
                     + ("yes" if all(c is True for c in checks) else f"NOT CONFIRMED {checks}"))
    row = [name, ftype] + [c for key in KEYS for c in (num(cells[key][0]), num(cells[key][1]),
                                                       ratio(*cells[key]))]
    if both:  # the same decode figures with the weights on 2 MiB pages
        ours2m_docs = [d for d in docs["ours2m"] if d]
        for key in KEYS[1:]:
            o2 = med([figure(d, *key) for d in ours2m_docs])
            row += [num(o2), ratio(o2, cells[key][1]), ratio(o2, cells[key][0])]
            detail.append((os.path.basename(gguf), f"{key[0]} b{key[1]} 2M",
                           [num(figure(d, *key)) for d in docs["ours2m"]], []))
    rows.append(row + [gib(wbytes), num(bw, 2), num(bound)])

print()
if about:
    print(f"llama.cpp: node-llama-cpp {about.get('node_llama_cpp')}, llama.cpp release "
          f"{about.get('llama_cpp_release')}, prebuilt CPU backend '{about.get('cpu_variant')}'")
else:
    print(f"llama.cpp: not run ({llama_why or 'no result'})")
print(f"ours on {'4 KiB pages (2M columns: 2 MiB pages, same rounds)' if both else ('2 MiB' if hugepages == 'on' else '4 KiB') + ' pages'}; "
      f"medians of {rounds} rounds; tokens/s; ratio = ours / llama.cpp (above 1: ours is faster); "
      "bound = memory read bandwidth / weight bytes per decode step (batch 1; batch 8 reads them "
      "once for 8 tokens)")
print()
head = ["model", "type", "prefill ours", "llama.cpp", "ratio", "decode b1 ours", "llama.cpp", "ratio",
        "decode b8 ours", "llama.cpp", "ratio"]
if both:
    head += ["b1 ours 2M", "/llama.cpp", "/4K", "b8 ours 2M", "/llama.cpp", "/4K"]
head += ["weights/step", "mem GB/s", "b1 bound tok/s"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|")
for r in rows:
    print("| " + " | ".join(r) + " |")
if notes:
    print()
    print("llama.cpp's settings (from its log):")
    print("\n".join(notes))
print()
print("every round (ours | llama.cpp):")
for name, what, o, l in detail:
    print(f"  {name:40s} {what:11s} {' '.join(f'{x:>9s}' for x in o)} | {' '.join(f'{x:>9s}' for x in l)}")
EOF
