#!/usr/bin/env bash
# run_daemon.sh — the daemon benchmarks: bench/route (routing overhead of nexusd against a raw
# ZeroMQ round trip) and bench/swap.py (100 agents on a mix of models in a pool that holds a
# fraction of them, cost policy against LRU). Each starts its own nexusd in a temporary home
# (tests/daemon_util.py), on loopback, CPU backend, and stops it by pid. Figures go to
# bench/RESULTS.md (Orchestrator section) by hand, with the machine line printed first.
#
#   BUILD=build bench/run_daemon.sh            env: ROUTE_COUNT (2000), SWAP_TASKS (1000)
set -euo pipefail
BUILD=$(cd "${BUILD:-build}" && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
ROUTE_COUNT=${ROUTE_COUNT:-2000}
SWAP_TASKS=${SWAP_TASKS:-1000}
here=$(cd "$(dirname "$0")" && pwd)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
     "$(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)"
echo "== route"
NEXUS_BUILD=$BUILD ROUTE_COUNT=$ROUTE_COUNT $PYTHON - "$here/../tests" <<'PY'
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import daemon_util as du
d = du.Daemon([du.agent("trivial", "tq", generation={"max_tokens": 1},
                        limits={"queue": 100000})])
try:
    d.start()
    r = subprocess.run([os.path.join(du.BUILD, "bench", "route"), "--endpoint", d.endpoint,
                        "--agent", "trivial", "--count", os.environ["ROUTE_COUNT"]],
                       timeout=300)
    d.stop()
    sys.exit(r.returncode)
finally:
    d.close()
PY
echo "== swap"
NEXUS_BUILD=$BUILD $PYTHON "$here/swap.py" --tasks "$SWAP_TASKS"
