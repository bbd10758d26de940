#!/usr/bin/env bash
# Overhead experiment for the CUPTI agent (see exp.py). Usage: bash exp.sh DIST OUT [REPS] [SEG]
# DIST = `make gpu-dist` output (.gpu). Prints a summary table; raw lines in OUT/exp.jsonl.
set -u
D=$(cd "${1:-.gpu}" && pwd); OUT=${2:-/tmp/pm-exp}; REPS=${3:-3}; SEG=${4:-1.0}
mkdir -p "$OUT"; J="$OUT/exp.jsonl"; : > "$J"
X="$D/cupti-gpu/exp.py"; PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"; date -u +%FT%TZ | tee -a "$OUT/gpu.txt"
AG="LD_PRELOAD=$D/libprofilemate.so PROFILEMATE_KINDS=0xcf PROFILEMATE_RING_KB=131072 PROFILEMATE_MAX_MB=512"  # KINDS set at start: re-read at each control change
GCFG=dormant,def=graph:0xff,def_rb=graph:0xff::rb,ckgt=graph:0x3,gt=graph:0x2,gt_rb=graph:0x2::rb,rest=graph:0xfc,drvapi=graph:0x7f,nosyncovh=graph:0xcf,lean=graph:0x4f,nodes=nodes:0xff,nodes_rb=nodes:0xff::rb,gtwin8=graph:0x1ff:8
ECFG=dormant,def=graph:0xff,ck=graph:0x1,ckdrv=graph:0x41,ckrt=graph:0x81,rest=graph:0xfc,lean=graph:0x4f,nosyncovh=graph:0xcf,samp8=graph:0xff:8,samp8lean=graph:0x4f:8
r() { timeout 100 env "$@" 2>>"$OUT/stderr.txt" || echo "FAILED: $*" | tee -a "$OUT/stderr.txt"; }
for loop in graph eager; do
  C=$GCFG; [ $loop = eager ] && C=$ECFG
  r PYTHONUNBUFFERED=1 $PY "$X" --dist "$D" --role base --loop $loop --configs untraced,torchprof --reps $REPS --seg $SEG --out "$J"
  [ $loop = graph ] && r LD_PRELOAD=$D/libprofilemate.so PROFILEMATE_YIELD=1 $PY "$X" --dist "$D" --role base --label nosub --loop $loop --configs untraced --reps $REPS --seg $SEG --out "$J"
  r $AG $PY "$X" --dist "$D" --role agent --loop $loop --configs $C --reps $REPS --seg $SEG --out "$J"
  r $PY "$X" --dist "$D" --role base --label base2 --loop $loop --configs untraced --reps $REPS --seg $SEG --out "$J"
done
$PY "$X" --summary "$J" | tee "$OUT/summary.txt"
