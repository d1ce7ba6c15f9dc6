#!/usr/bin/env bash
# prepare_quant.sh — the GGUF files bench/run_quant.sh compares us and llama.cpp on, made the
# way a user makes them: qwen3 0.6b and 4b shapes synthesized as bf16 safetensors (the same
# folders bench/run.sh uses), then `nexusctl model quantize` into $QUANT_DIR as
# qwen3-<preset>-<type>.gguf. Each file is made once and kept; a file that does not validate
# is made again.
#
#   BUILD=build BENCH_DIR=var/bench bench/prepare_quant.sh
#   env: QUANT_PRESETS ("0.6b 4b"), QUANT_TYPES ("f16 bf16 q8_0 q4_0 q4_k_m"),
#        QUANT_DIR ($BENCH_DIR/gguf)
set -euo pipefail

BUILD=${BUILD:-build}
BENCH_DIR=${BENCH_DIR:-var/bench}
QUANT_DIR=${QUANT_DIR:-$BENCH_DIR/gguf}
QUANT_PRESETS=${QUANT_PRESETS:-"0.6b 4b"}
QUANT_TYPES=${QUANT_TYPES:-"f16 bf16 q8_0 q4_0 q4_k_m"}
NEXUSCTL=$BUILD/nexusctl

valid() { "$NEXUSCTL" model inspect "$1" --summary >/dev/null 2>&1; }

mkdir -p "$QUANT_DIR"
for preset in $QUANT_PRESETS; do
    src=$BENCH_DIR/qwen3-$preset-bf16
    if ! { [ -f "$src/config.json" ] && valid "$src"; }; then
        rm -rf "$src"
        echo "prepare_quant: synthesizing qwen3 $preset (bf16) into $src"
        "$NEXUSCTL" model synth --arch qwen3 --preset "$preset" --dtype bf16 --out "$src"
    fi
    for type in $QUANT_TYPES; do
        out=$QUANT_DIR/qwen3-$preset-$type.gguf
        if [ -f "$out" ] && valid "$out"; then
            continue
        fi
        echo "prepare_quant: $out"
        "$NEXUSCTL" model quantize "$src" "$out" --type "$type"
    done
done
