#!/usr/bin/env bash
# attach --inject=ptrace on real CUDA: a torch process started with nothing preloaded gets the
# agent and the hook, is captured for a few seconds at graph level, and is detached; twice.
# Each complete step in each window must have exactly torch.profiler's kernel counts per name for
# one step (measured in a separate process); the first-enable time the agent publishes and the
# workload's steps/s before, during and after each attach are printed. PASS/FAIL lines; exit 1 on
# any FAIL.
# Usage: bash inject-check.sh DIST [OUT]   (DIST = what `make gpu-dist` staged; needs root)
set -u
D=$(cd "${1:-.gpu}" && pwd); OUT=${2:-${OUT:-/tmp/pm-inject-check}}
PY=${PYTHON:-/opt/torch/.venv/bin/python}
SECS=${SECS:-4}
rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee gpu.txt
echo "date: $(date -u +%FT%TZ)" | tee -a gpu.txt
rc=0
$PY "$D/inject_workload.py" --profile-step expect.json || { echo "FAIL torch.profiler reference run"; exit 1; }
# The target: nothing of ours in its environment.
env -u LD_PRELOAD -u PYTHONPATH -u CUDA_INJECTION64_PATH $PY "$D/inject_workload.py" --serve steps.log --seconds 90 > workload.out 2>&1 &
wp=$!
for _ in $(seq 1 240); do grep -q '^READY' workload.out && break; sleep 0.5; done
grep -q '^READY' workload.out || { echo "FAIL workload did not start"; cat workload.out; kill $wp; exit 1; }
sleep 4   # steady state before the first attach
if grep -q profilemate /proc/$wp/maps; then echo "FAIL the workload already maps profilemate"; rc=1; fi
for cycle in 1 2; do
  t0=$(date +%s.%N)
  "$D/profilemate-trace" attach --pid $wp --inject ptrace --detail graph --duration ${SECS}s --no-ebpf --no-bundle \
    -o "$OUT/c$cycle" 2>&1 | tee attach$cycle.txt
  arc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  sleep 3.5   # steps after the detach
  if [ "$arc" != 0 ]; then echo "FAIL cycle $cycle: attach exited $arc"; rc=1; continue; fi
  $PY "$D/inject_check.py" expect.json "$(ls -d "$OUT"/c$cycle/session_*/ | head -1)" "$D/pyhook" steps.log "$t0" "$t1" "cycle $cycle" || rc=1
done
touch steps.log.stop
wait $wp; wrc=$?
tail -1 workload.out
if [ "$wrc" = 0 ]; then echo "PASS workload exited normally after two attach/detach cycles"; else echo "FAIL workload exit code $wrc"; rc=1; fi
[ $rc = 0 ] && echo "PASS inject-check" || echo "FAIL inject-check"
exit $rc
