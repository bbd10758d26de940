#!/usr/bin/env bash
# Second, shorter experiment (see docs/notes-agent.md): A) which kind crashes a mid-run enable on
# the graph loop (diagnostic agent build prints the faulting thread's backtrace); B) API records
# with kind + denylist, correlation ids, eager costs; C) graph loop with collection on from cuInit.
# Usage: bash exp2.sh DIST OUT
set -u
D=$(cd "${1:-.gpu}" && pwd); OUT=${2:-/tmp/pm-exp2}; mkdir -p "$OUT"; J="$OUT/exp.jsonl"; : > "$J"
X="$D/cupti-gpu/exp.py"; PY=${PYTHON:-python3}; E="$OUT/stderr.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"; date -u +%FT%TZ | tee -a "$OUT/gpu.txt"
r() { echo "== $*" >>"$E"; timeout 60 env "$@" 2>>"$E" >/dev/null || echo "FAILED($?): $*" | tee -a "$E"; }
for c in def=graph:0xff gt=graph:0x2 ck=nodes:0x1; do
  r LD_PRELOAD=$D/libprofilemate-diag.so PROFILEMATE_KINDS=0xcf PROFILEMATE_DEBUG=1 $PY "$X" --dist "$D" --role agent --label mid --loop graph --configs dormant,$c --reps 1 --seg 0.3 --warm 0.1 --out "$J"
done
r $PY "$X" --dist "$D" --role base --loop eager --configs untraced,torchprof --reps 2 --out "$J"
r LD_PRELOAD=$D/libprofilemate.so PROFILEMATE_KINDS=0xcf PROFILEMATE_RING_KB=131072 PROFILEMATE_MAX_MB=512 $PY "$X" --dist "$D" --role agent --loop eager --configs dormant,def=graph:0xff,ck=graph:0x1,ckdrv=graph:0x41,ckrt=graph:0x81,samp8lean=graph:0x45:8 --reps 2 --out "$J"
r $PY "$X" --dist "$D" --role base --loop graph --configs untraced --reps 2 --out "$J"
for k in 0xff 0x2 0xfc 0x3; do
  r LD_PRELOAD=$D/libprofilemate.so PROFILEMATE_START=graph PROFILEMATE_KINDS=$k $PY "$X" --dist "$D" --role base --label start$k --loop graph --configs untraced --reps 2 --out "$J"
done
r $PY "$X" --dist "$D" --role base --label base2 --loop graph --configs untraced --reps 2 --out "$J"
$PY "$X" --summary "$J" | tee "$OUT/summary.txt"
grep -v 'UserWarning\|_warn_once' "$E" | tail -60
