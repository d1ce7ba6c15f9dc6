#!/usr/bin/env bash
# npm_tool.sh — how every node tool of ours is installed (make llama-ref, openai-client, ajv):
# pinned packages into an ignored folder. Nothing happens when the folder's stamp is there.
# Without node >= 20 and npm (or, with NEED_LINUX_X64=1, off linux-x64) it says why in one line
# and exits 0, so callers skip what needs it. Otherwise npm installs into DIR.tmp, the files
# that prove the install are checked, and the folder is moved into place and stamped: an
# interrupted install never looks finished.
#
#   npm_tool.sh LABEL DIR STAMP 'PKG@VER ...' 'FILE ...' [npm flags...]
#     FILE: paths under DIR that must exist after the install
set -u
label=$1 dir=$2 stamp=$3 packages=$4 checks=$5
shift 5
[ -f "$stamp" ] && exit 0
skip() { echo "$label: skipped: $*"; exit 0; }
command -v node >/dev/null 2>&1 || skip "node is not installed"
command -v npm >/dev/null 2>&1 || skip "npm is not installed"
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' ||
    skip "node $(node --version) is older than 20"
if [ "${NEED_LINUX_X64:-0}" = 1 ] && [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
    skip "only linux-x64's prebuilt CPU binaries are set up, not $(uname -s)-$(uname -m)"
fi
start=$(date +%s)
tmp=$dir.tmp
rm -rf "$tmp" && mkdir -p "$tmp" || exit 1
echo "{\"name\": \"nexus-$label\", \"private\": true}" > "$tmp/package.json" || exit 1
# shellcheck disable=SC2086 # the package list is words
(cd "$tmp" && npm install --no-audit --no-fund --loglevel=error --save-exact "$@" $packages) ||
    exit 1
for f in $checks; do
    [ -f "$tmp/$f" ] || { echo "$label: the install has no $f" >&2; exit 1; }
done
rm -rf "$dir" && mv "$tmp" "$dir" && touch "$stamp" || exit 1
echo "$label: $packages in $dir: $(du -sh "$dir" | cut -f1), $(( $(date +%s) - start )) s"
