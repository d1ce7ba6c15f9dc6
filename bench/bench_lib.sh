# bench_lib.sh — shell helpers shared by the scripts that run ours beside llama.cpp
# (bench/run_quant.sh, bench/run_grammar_llama.sh, bench/profile_b1.sh); sourced, not run.

# The machine, date, build and command, as the header of a run's output ($1: the command line).
machine_header() {
    echo "date:     $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpus:     $(nproc) x $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
    echo "memory:   $(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
    echo "build:    $(git -C "$(dirname "${BASH_SOURCE[0]}")/.." rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "command:  $1"
}

# Why llama.cpp cannot run here (node or node-llama-cpp missing), or nothing when it can.
llama_missing() {
    if ! command -v "${NODE:-node}" >/dev/null 2>&1; then
        echo "node is not installed"
    elif [ ! -f "${LLAMA_REF_DIR:-$(dirname "${BASH_SOURCE[0]}")/../.tools/llama-ref}/node_modules/node-llama-cpp/package.json" ]; then
        echo "node-llama-cpp is not installed (make llama-ref)"
    fi
}

# CPU time other processes took over one second, in % of all CPUs: llama.cpp's threads wait
# for each other at every op's barrier by spinning, so its multi-threaded figures collapse
# (several-fold) when another process holds a core, more than ours do.
cpu_busy() {
    local a b a1 a2 a3 a4 a5 a6 a7 a8 b1 b2 b3 b4 b5 b6 b7 b8
    read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ < /proc/stat 2>/dev/null || { echo "?"; return; }
    sleep 1
    read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ < /proc/stat
    a=$((a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8)) b=$((b1 + b2 + b3 + b4 + b5 + b6 + b7 + b8))
    echo $(( (b - a - (b4 - a4) - (b5 - a5)) * 100 / (b - a > 0 ? b - a : 1) ))
}
