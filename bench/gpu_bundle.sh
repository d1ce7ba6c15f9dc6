#!/usr/bin/env bash
# gpu_bundle.sh — what `make gpu-bundle` runs after `make all` (with CUDA): gather a folder,
# .bundle/, that runs on a GPU machine which has none of our Debian packages and no network:
# nexusctl, nexusd, the bench and test binaries (tool_logits, test_cuda_engine, ...), and every
# shared library they load from outside glibc (libjansson, libxxhash, libcmocka, libstdc++ when
# dynamic, ...) in .bundle/lib. cuBLAS is not bundled: the CUDA backend dlopens the GPU
# machine's own (gpu_suite.sh section 0 finds it). The suite's Python scripts (bench/gpu_*.py,
# tests/ref_forward.py) travel with the working tree. Carry .bundle
# to that machine and run bench/gpu_suite.sh there, which sets LD_LIBRARY_PATH=.bundle/lib.
#
#   bench/gpu_bundle.sh BUILD [OUT]     # OUT: the folder to write (default $BUNDLE or .bundle)
#
# A build of the CPU emulation (make BUILD=build-emu CUEMU=1 all) bundles too, into another
# folder (make gpu-suite-emu: build-emu/bundle); BUILD_INFO then says "cuemu: yes" and gpu_suite.sh
# runs as a dry run of its own glue, never a source of GPU figures.
set -euo pipefail

BUILD=${1:-build}
BUNDLE=${2:-${BUNDLE:-.bundle}}
MAX_BUNDLE_BYTES=$((48 * 1024 * 1024)) # the carry limit is 64 MiB; keep well under it

# glibc's own libraries exist on every Linux machine and must match its kernel and loader.
is_glibc() {
    case $(basename "$1") in
        linux-vdso.so* | ld-linux*.so* | libc.so* | libm.so* | libpthread.so* | libdl.so* | \
            librt.so* | libresolv.so* | libutil.so* | libmvec.so* | libanl.so*) return 0 ;;
    esac
    return 1
}

[ -x "$BUILD/nexusctl" ] || { echo "gpu-bundle: $BUILD/nexusctl is missing; run make all" >&2; exit 1; }
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/lib" "$BUNDLE/bench" "$BUNDLE/tests"
cp "$BUILD/nexusctl" "$BUNDLE/"
[ -x "$BUILD/nexusd" ] && cp "$BUILD/nexusd" "$BUNDLE/" # section 4 (swap) starts a real daemon
for f in "$BUILD"/bench/* "$BUILD"/tests/*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    cp "$f" "$BUNDLE/$(basename "$(dirname "$f")")/"
done

binaries=("$BUNDLE/nexusctl" "$BUNDLE/nexusd" "$BUNDLE"/bench/* "$BUNDLE"/tests/*)
for bin in "${binaries[@]}"; do
    [ -f "$bin" ] || continue
    if ldd "$bin" | grep 'not found' >/dev/null; then # not -q: pipefail and SIGPIPE
        echo "gpu-bundle: $bin has unresolved libraries:" >&2
        ldd "$bin" | grep 'not found' >&2
        exit 1
    fi
    ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
        is_glibc "$lib" || cp -Ln "$lib" "$BUNDLE/lib/" 2>/dev/null || true
    done
done

# The C++ runtime goes apart, into lib-cxx: the GPU machine's own (newer) one must win for
# every program started under the suite's LD_LIBRARY_PATH (compute-sanitizer, nvidia-smi, ...);
# gpu_suite.sh adds lib-cxx only where the machine has no libstdc++.so.6.
mkdir -p "$BUNDLE/lib-cxx"
for lib in libstdc++.so.6 libgcc_s.so.1; do
    [ -f "$BUNDLE/lib/$lib" ] && mv "$BUNDLE/lib/$lib" "$BUNDLE/lib-cxx/"
done

if [ "$(du -sb "$BUNDLE" | cut -f1)" -gt "$MAX_BUNDLE_BYTES" ]; then
    echo "gpu-bundle: over $((MAX_BUNDLE_BYTES >> 20)) MiB, stripping debug info"
    for bin in "${binaries[@]}"; do [ -f "$bin" ] && strip --strip-debug "$bin"; done
fi

{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "built:  $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m)"
    echo "cuda:   $(grep -q dev_cuda.o <(ar t "$BUILD/libnxloader.a" 2>/dev/null) && echo yes || echo no)"
    # the CPU emulation of tests/cuemu linked in instead of CUDA's runtime (a dry-run bundle)
    echo "cuemu:  $(grep -qa 'cuemu (CPU emulation)' "$BUNDLE/nexusctl" && echo yes || echo no)"
} >"$BUNDLE/BUILD_INFO"

bytes=$(du -sb "$BUNDLE" | cut -f1)
echo "gpu-bundle: $BUNDLE: $(find "$BUNDLE" -type f | wc -l) files, $((bytes / 1024 / 1024)) MiB" \
    "(limit 64 MiB); libraries: $(ls "$BUNDLE/lib" | tr '\n' ' ')"
if [ "$bytes" -gt "$MAX_BUNDLE_BYTES" ]; then
    echo "gpu-bundle: still over $((MAX_BUNDLE_BYTES >> 20)) MiB" >&2
    exit 1
fi
grep -q '^cuda:   yes' "$BUNDLE/BUILD_INFO" ||
    echo "gpu-bundle: warning: this build has no CUDA backend (nvcc not found, or CUDA=0)" >&2
