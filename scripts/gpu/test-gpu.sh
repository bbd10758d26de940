#!/usr/bin/env bash
# `make test-gpu`: real CUDA and CUPTI against torch.profiler on the same workload.
# Usage: bash test-gpu.sh DIST [OUT]  (DIST = what `make gpu-dist` staged)
set -u
D=$(cd "${1:-.gpu}" && pwd); OUT=${2:-${OUT:-/tmp/pm-test-gpu}}
mkdir -p "$OUT"; cd "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee gpu.txt
echo "date: $(date -u +%FT%TZ)" | tee -a gpu.txt
$PY "$D/workload.py" --torch-profiler torchprof.json || exit 1
for lvl in graph nodes; do
  rm -rf "sess-$lvl"
  "$D/profilemate-trace" run --detail $lvl --agent "$D/libprofilemate.so" --no-pyhook -o "sess-$lvl" -- \
    $PY "$D/workload.py" --expect "expect-$lvl.json" || { echo "traced run ($lvl) failed"; exit 1; }
done
$PY "$D/compare.py" expect-graph.json expect-nodes.json torchprof.json sess-graph/session_*/ sess-nodes/session_*/ "$D/pyhook" | tee compare.md
rc=${PIPESTATUS[0]}
# eBPF on real libcuda and torch: vLLM-shaped phases must get exactly their launches.
if [ -x "$D/ebpf/tracer/tracer.test" ]; then
  (cd "$D/ebpf/tracer" && PROFILEMATE_GPU=1 PROFILEMATE_GPU_DIR="$D/ebpf/bpf/gpu" PROFILEMATE_GPU_PYTHON=$(command -v $PY) \
    PROFILEMATE_FAKECUDA="$D/ebpf/bpf/testdata/libcuda.so.1" ./tracer.test -test.run TestGPUPhases -test.v) 2>&1 | tee ebpf-gpu.txt
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
# eBPF cost per probed launch and an eager torch loop with and without the tracer.
if [ -x "$D/ebpf/tracer/tracer.test" ] && [ -n "${EBPF_BENCH:-}" ]; then
  (cd "$D/ebpf/tracer" && PROFILEMATE_GPU=1 PROFILEMATE_GPU_DIR="$D/ebpf/bpf/gpu" PROFILEMATE_GPU_PYTHON=$(command -v $PY) \
    PROFILEMATE_FAKECUDA="$D/ebpf/bpf/testdata/libcuda.so.1" ./tracer.test -test.run '^$' -test.bench 'GPUEager|ProbedLaunch' -test.benchtime 1x) 2>&1 | tee ebpf-bench.txt
fi
exit $rc
