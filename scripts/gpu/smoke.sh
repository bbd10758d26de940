#!/usr/bin/env bash
# First contact with real CUDA: run smoke.py under the tracer at both detail levels and print
# the derived files. Usage: bash smoke.sh DIST OUT
set -u
D=${1:-.gpu}; OUT=${2:-/tmp/pm-smoke}
mkdir -p "$OUT"
for lvl in graph nodes; do
  echo "=== detail $lvl"
  PROFILEMATE_DEBUG=1 timeout 120 "$D/profilemate-trace" run --detail $lvl --agent "$D/libprofilemate.so" --no-pyhook -o "$OUT/$lvl" -- python3 "$(dirname "$0")/smoke.py"
  echo "rc=$?"
  s=$(ls -d "$OUT/$lvl"/session_*/ | head -1)
  for f in metadata.json gpu_kernels.csv cuda_graph_usage.csv; do echo "--- $f"; cut -c1-220 "$s/$f" | head -30; done
done
