#!/usr/bin/env bash
# Dormant cost by arming mode, and attach to a running (dormant) torch process on real CUDA.
# Usage: bash dormant-attach.sh DIST OUT [REPS] [SECONDS]
set -u
D=$(cd "${1:-.gpu}" && pwd); OUT=${2:-/tmp/pm-dormant}; REPS=${3:-3}; SECS=${4:-2}
mkdir -p "$OUT"; cd "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > gpu.txt; date -u +%FT%TZ >> gpu.txt
: > results.jsonl
for rep in $(seq 1 "$REPS"); do
  for mode in untraced dormant dormant-light; do
    case $mode in
      untraced) line=$($PY "$D/bench.py" --loop graph --size 8b --seconds $SECS) ;;
      dormant) line=$(LD_PRELOAD="$D/libprofilemate.so" $PY "$D/bench.py" --loop graph --size 8b --seconds $SECS) ;;
      dormant-light) line=$(LD_PRELOAD="$D/libprofilemate.so" PROFILEMATE_ARM=light $PY "$D/bench.py" --loop graph --size 8b --seconds $SECS) ;;
    esac
    echo "{\"rep\": $rep, \"loop\": \"graph-8b\", \"mode\": \"$mode\", \"records\": 0, \"r\": $line}" | tee -a results.jsonl
  done
done
$PY "$D/bench_report.py" results.jsonl gpu.txt | tee dormant.md
# Attach: a dormant process, then a 3 s graph-level capture, with eBPF.
LD_PRELOAD="$D/libprofilemate.so" $PY "$D/bench.py" --loop graph --size small --seconds 14 > attach-target.json 2> attach-target.err &
tp=$!
sleep 6
"$D/profilemate-trace" attach --pid $tp --duration 3s -o "$OUT/attach" 2>&1 | tail -8
wait $tp; echo "target exit code $?"; cat attach-target.json; tail -3 attach-target.err
s=$(ls -d "$OUT"/attach/session_*/ | head -1)
$PY - "$s" <<'PY'
import csv, json, sys
s = sys.argv[1]
m = json.load(open(s + "/metadata.json"))
print("streams:", [(x["file"], x["records"], x["producer_state"], x.get("messages")) for x in m["streams"]])
rows = list(csv.DictReader(open(s + "/gpu_kernels.csv")))
print("kernel names:", len(rows), "kernels:", sum(int(r["count"]) for r in rows), "in graphs:", sum(int(r["graph_count"]) for r in rows))
PY
