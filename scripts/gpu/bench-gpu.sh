#!/usr/bin/env bash
# `make bench-gpu`: throughput of a CUDA-graph decode-like loop and an eager small-kernel loop,
# untraced / agent preloaded but dormant / traced at graph level / at nodes level / under
# torch.profiler, interleaved repetitions in one run. Usage: bash bench-gpu.sh DIST [OUT] [REPS] [SECONDS]
set -u
D=$(cd "${1:-.gpu}" && pwd); OUT=${2:-${OUT:-/tmp/pm-bench-gpu}}; REPS=${3:-3}; SECS=${4:-4}
mkdir -p "$OUT"; cd "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > gpu.txt
date -u +%FT%TZ >> gpu.txt
: > results.jsonl
for rep in $(seq 1 "$REPS"); do
  for loopsize in graph:small graph:8b eager:small; do
    loop=${loopsize%%:*}; size=${loopsize##*:}; tag=$loop-$size
    for mode in untraced dormant dormant-armgraph graph lean nodes torchprof; do
      sess="$OUT/s-$tag-$mode-$rep"
      case $mode in
        untraced)  line=$($PY "$D/bench.py" --loop $loop --size $size --seconds $SECS) ;;
        dormant)   line=$(LD_PRELOAD="$D/libprofilemate.so" $PY "$D/bench.py" --loop $loop --size $size --seconds $SECS) ;;
        # dormant, but with CUDA-graph tracing armed at cuInit (what a later graph-level attach needs)
        dormant-armgraph) line=$(LD_PRELOAD="$D/libprofilemate.so" PROFILEMATE_ARM=graph $PY "$D/bench.py" --loop $loop --size $size --seconds $SECS) ;;
        # graph level with only kernel and graph-trace records (no copies, memsets, API records)
        lean)      line=$(PROFILEMATE_KINDS=0x03 "$D/profilemate-trace" run --detail graph --agent "$D/libprofilemate.so" --no-pyhook --no-ebpf --no-bundle -o "$sess" -- \
                       $PY "$D/bench.py" --loop $loop --size $size --seconds $SECS 2>/dev/null | tail -1) ;;
        graph|nodes) line=$("$D/profilemate-trace" run --detail $mode --agent "$D/libprofilemate.so" --no-pyhook --no-ebpf --no-bundle -o "$sess" -- \
                       $PY "$D/bench.py" --loop $loop --size $size --seconds $SECS 2>/dev/null | tail -1) ;;
        torchprof) line=$($PY "$D/bench.py" --loop $loop --size $size --seconds $SECS --torch-profiler) ;;
      esac
      recs=0
      if [ -d "$sess" ]; then recs=$($PY -c "import json,glob,sys; m=json.load(open(glob.glob('$sess/session_*/metadata.json')[0])); print(sum(s['records'] for s in m['streams']))"); fi
      echo "{\"rep\": $rep, \"loop\": \"$tag\", \"mode\": \"$mode\", \"records\": $recs, \"r\": $line}" | tee -a results.jsonl
      rm -rf "$sess"
    done
  done
done
$PY "$D/bench_report.py" results.jsonl gpu.txt | tee bench.md
