#!/usr/bin/env bash
# run_grammar_llama.sh — what JSON-schema constrained decoding costs, ours beside llama.cpp's,
# on the same GGUF files, on the CPU: each engine's decode tokens/s with the schema against
# the same run without it, at batch 1 and 8, and ours against llama.cpp constrained. The two
# alternate (ours, llama.cpp, then the other way round) for several rounds, same thread count,
# same file, same schema (grammar_decode's built-in one, written to the run's folder); each
# cell is the median of the rounds. Prints the machine, date and command, then a markdown table
# to paste into bench/RESULTS.md.
#
#   bench/run_grammar_llama.sh [MODEL.gguf ...]
#     no argument: $BENCH_DIR/gguf/qwen3-0.6b-{bf16,q4_k_m}.gguf (bench/prepare_quant.sh's)
#   env: BUILD (build), BENCH_DIR (var/bench), GRAMMAR_ROUNDS (3: processes per side),
#        GRAMMAR_INNER (2: unconstrained/constrained pairs inside each process, best kept),
#        GRAMMAR_THREADS (2), GRAMMAR_TOKENS (32: timed decode steps per figure),
#        GRAMMAR_SCHEMA (grammar_decode --print-schema), GRAMMAR_OUT ($BENCH_DIR/grammar/<date>:
#        every run's JSON and the log), NODE (node), PYTHON (python3)
#
# Ours is `grammar_decode MODEL --threads T --tokens N --batches 1,8 --rounds I --json F`;
# llama.cpp is bench/llama_grammar.mjs with the same arguments (node-llama-cpp's
# createGrammarForJsonSchema; needs `make llama-ref`; without it its columns say so). Both
# sample at temperature 1, seeded, from the whole distribution, and restart a sequence whose
# output ended from a one-token prompt, so the batch stays full.
#
# How tokens are counted, the same on both sides: every token appended to a sequence's output
# in the timed steps (end-of-generation ids are not output). Ours appends tokens the grammar
# forces without sampling them (several per step); they count, as a client sees them, and the
# steps/s ratio beside it is the engine's pace without that help. llama.cpp has no such
# fast-forward: at most one token per sequence per step, so its tokens/s ratio is its steps/s
# ratio less the restarts.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-build}
BENCH_DIR=${BENCH_DIR:-var/bench}
GRAMMAR_ROUNDS=${GRAMMAR_ROUNDS:-3}
GRAMMAR_INNER=${GRAMMAR_INNER:-2}
GRAMMAR_THREADS=${GRAMMAR_THREADS:-2}
GRAMMAR_TOKENS=${GRAMMAR_TOKENS:-32}
GRAMMAR_OUT=${GRAMMAR_OUT:-$BENCH_DIR/grammar/$(date -u +%Y%m%dT%H%M%SZ)}
NODE=${NODE:-node}
PYTHON=${PYTHON:-python3}
OURS=$BUILD/bench/grammar_decode
LLAMA=$here/llama_grammar.mjs
command_line="bench/run_grammar_llama.sh $*"
. "$here/bench_lib.sh"

models=("$@")
if [ $# -eq 0 ]; then
    models=("$BENCH_DIR/gguf/qwen3-0.6b-bf16.gguf" "$BENCH_DIR/gguf/qwen3-0.6b-q4_k_m.gguf")
fi
for m in "${models[@]}"; do
    [ -f "$m" ] || { echo "run_grammar_llama: $m: no such file (bench/prepare_quant.sh makes it)"; exit 1; }
done
[ -x "$OURS" ] || { echo "run_grammar_llama: $OURS is not built (make)"; exit 1; }
llama_why=$(llama_missing)
[ -z "$llama_why" ] || echo "run_grammar_llama: llama.cpp skipped: $llama_why"
mkdir -p "$GRAMMAR_OUT" || exit 1
log=$GRAMMAR_OUT/run.log
: > "$log"
schema=$GRAMMAR_OUT/schema.json
if [ -n "${GRAMMAR_SCHEMA:-}" ]; then
    cp "$GRAMMAR_SCHEMA" "$schema" || exit 1
else
    "$OURS" --print-schema > "$schema" || exit 1
fi

echo "== machine"
machine_header "$command_line"
echo "settings: $GRAMMAR_ROUNDS rounds x $GRAMMAR_INNER pairs, $GRAMMAR_THREADS threads each," \
     "$GRAMMAR_TOKENS decode steps, batches 1 and 8; schema $schema; JSON in $GRAMMAR_OUT"
echo "cpu busy: $(cpu_busy)% of $(nproc) cpus in the second before the rounds (ideally ~0)"

run_ours() { # model json-file
    "$OURS" "$1" --threads "$GRAMMAR_THREADS" --tokens "$GRAMMAR_TOKENS" --batches 1,8 \
        --rounds "$GRAMMAR_INNER" --schema "$schema" --json "$2" >>"$log" 2>&1
}
run_llama() { # model json-file; llama.cpp's sampling on as many pool threads as it decodes with
    UV_THREADPOOL_SIZE=$GRAMMAR_THREADS "$NODE" "$LLAMA" "$1" --threads "$GRAMMAR_THREADS" \
        --tokens "$GRAMMAR_TOKENS" --batches 1,8 --rounds "$GRAMMAR_INNER" --schema "$schema" \
        --json "$2" >/dev/null 2>>"$log"
}

for round in $(seq 1 "$GRAMMAR_ROUNDS"); do
    for i in "${!models[@]}"; do
        m=${models[$i]}
        sides=(ours llama)
        [ $((round % 2)) = 0 ] && sides=(llama ours)
        for side in "${sides[@]}"; do
            out=$GRAMMAR_OUT/m$i-r$round-$side.json
            if [ "$side" = ours ]; then
                echo "== round $round/$GRAMMAR_ROUNDS ours $m" >>"$log"
                run_ours "$m" "$out" || { rm -f "$out"; echo "run_grammar_llama: ours failed on $m (round $round), see $log"; }
            elif [ -z "$llama_why" ]; then
                echo "== round $round/$GRAMMAR_ROUNDS llama.cpp $m" >>"$log"
                run_llama "$m" "$out" || { rm -f "$out"; echo "run_grammar_llama: llama.cpp failed on $m (round $round), see $log"; }
            fi
        done
    done
    echo "round $round of $GRAMMAR_ROUNDS done (cpu busy after it: $(cpu_busy)%)"
done

printf '%s\n' "${models[@]}" > "$GRAMMAR_OUT/models.txt"
"$PYTHON" - "$GRAMMAR_OUT" "$GRAMMAR_ROUNDS" "$llama_why" <<'EOF'
import json, os, statistics, sys

out_dir, rounds, llama_why = sys.argv[1], int(sys.argv[2]), sys.argv[3]
models = [line.strip() for line in open(os.path.join(out_dir, "models.txt")) if line.strip()]

def load(i, r, side):
    try:
        with open(os.path.join(out_dir, f"m{i}-r{r}-{side}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def cell(doc, batch, kind, key):
    for f in (doc or {}).get("figures", []):
        if f.get("batch") == batch:
            return f[kind][key]
    return None

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def num(x):
    return "-" if x is None else f"{x:,.1f}"

def pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"

def ratio_each(docs, batch, key):  # each round's constrained / unconstrained, then the median
    return med([cell(d, batch, "schema", key) / cell(d, batch, "free", key)
                for d in docs if cell(d, batch, "free", key)])

rows, detail, about, vocab_note = [], [], None, []
for i, model in enumerate(models):
    ours = [load(i, r, "ours") for r in range(1, rounds + 1)]
    llama = [load(i, r, "llama") for r in range(1, rounds + 1)]
    ours_ok, llama_ok = [d for d in ours if d], [d for d in llama if d]
    about = about or (llama_ok[0].get("llama") if llama_ok else None)
    desc = llama_ok[0].get("description", "") if llama_ok else ""
    ftype = " ".join(desc.split(" ")[2:]) or "?"
    if ours_ok:
        vocab_note.append(f"  {os.path.basename(model)}: tokenizer {ours_ok[0].get('tokenizer_vocab')} tokens (ours)"
                          + (f", {llama_ok[0].get('vocab')} in the GGUF's token list (llama.cpp)" if llama_ok else ""))
    for batch in (1, 8):
        o_free = med([cell(d, batch, "free", "tok_s") for d in ours_ok])
        o_con = med([cell(d, batch, "schema", "tok_s") for d in ours_ok])
        l_free = med([cell(d, batch, "free", "tok_s") for d in llama_ok])
        l_con = med([cell(d, batch, "schema", "tok_s") for d in llama_ok])
        rows.append([os.path.basename(model), ftype, str(batch), num(o_free), num(o_con),
                     pct(ratio_each(ours_ok, batch, "tok_s")), pct(ratio_each(ours_ok, batch, "steps_s")),
                     num(l_free), num(l_con), pct(ratio_each(llama_ok, batch, "tok_s")),
                     "-" if o_con is None or not l_con else f"{o_con / l_con:.2f}"])
        for side, docs in (("ours", ours), ("llama.cpp", llama)):
            detail.append(f"  {os.path.basename(model):32s} b{batch} {side:9s} free/schema tok/s: " + "  ".join(
                "-" if d is None else f"{cell(d, batch, 'free', 'tok_s'):.1f}/{cell(d, batch, 'schema', 'tok_s'):.1f}"
                f" (restarts {cell(d, batch, 'schema', 'restarts')})" for d in docs))

print()
if about:
    print(f"llama.cpp: node-llama-cpp {about.get('node_llama_cpp')}, llama.cpp release "
          f"{about.get('llama_cpp_release')}, prebuilt CPU backend '{about.get('cpu_variant')}', "
          "JSON schema through createGrammarForJsonSchema")
else:
    print(f"llama.cpp: not run ({llama_why or 'no result'})")
print(f"medians of {rounds} rounds; tokens/s; ratio = constrained / unconstrained of the same engine "
      "(each round's, then the median); ours/llama = constrained tokens/s, ours over llama.cpp's")
print()
head = ["model", "type", "batch", "ours free", "ours schema", "ours ratio", "ours step ratio",
        "llama.cpp free", "llama.cpp schema", "llama.cpp ratio", "schema ours/llama"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
print("vocabularies:")
print("\n".join(vocab_note))
print()
print("every round:")
print("\n".join(detail))
EOF
