#!/usr/bin/env bash
# Real vLLM on a GPU machine, profiled by profilemate-trace (issue #7).
#
#   bash scripts/gpu/vllm/e2e-vllm.sh [STAGE ...]      (from the repository root; `make e2e-vllm`)
#
# Needs .gpu-carry/ from `make gpu-carry` (dist.tar.xz: the CLI, agent, hook, eBPF objects and GPU
# scripts; site.tar.xz: vLLM and the wheels the GPU venv lacks, from scripts/gpu/vllm/prepare.sh).
# Stages (default: all but tp2):
#   smoke     one untraced engine start and a short load: does vLLM run here at all
#   run       `profilemate-trace run` at graph and at nodes detail, dense model; every file checked
#   run-graph the same at graph detail only
#   attach    engine started with the agent and hook preloaded and dormant; attach --pid at graph,
#             then again at nodes
#   moe       `run` at graph detail with the Mixtral-style MoE model
#   overhead  one engine per mode, same load: untraced, dormant, graph, nodes, torch.profiler;
#             output tokens/s and p50 time per output token, from vLLM's own request stats
#   tp2       `run` with tensor parallelism 2 (needs two GPUs)
# Everything lands in $PM_E2E_OUT (default /tmp/pm-e2e/out); each stage prints PASS/FAIL lines and the
# numbers that go into docs/benchmarks.md.
set -u
ROOT=$(pwd)
W=${PM_E2E_WORK:-/tmp/pm-e2e}
OUT=${PM_E2E_OUT:-$W/out}   # not the device tool's $OUT: results are copied there selectively (PM_E2E_RESULTS)
PY=${PYTHON:-/opt/torch/.venv/bin/python}
STAGES=${*:-smoke run attach moe overhead}
mkdir -p "$W" "$OUT"
unpack() { # tar.xz -> dir, once per content
  local src=$1 dst=$2 sum
  sum=$(cksum < "$src" | cut -d' ' -f1)
  if [ "$(cat "$dst/.stamp" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$dst" && mkdir -p "$dst"
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2], filter="fully_trusted")' "$src" "$dst" || exit 1
    echo "$sum" > "$dst/.stamp"
  fi
}
t0=$(date +%s)
# PM_E2E_DIST / PM_E2E_SITE: use an unpacked dist (a `make gpu-dist` .gpu/) or vLLM site instead
# of .gpu-carry/ (a dry run of the stages' plumbing uses a stub vllm_load.py this way).
D=${PM_E2E_DIST:-$W/dist}
SITE=${PM_E2E_SITE:-$W/site}
[ -n "${PM_E2E_DIST:-}" ] || unpack "$ROOT/.gpu-carry/dist.tar.xz" "$D"
[ -n "${PM_E2E_SITE:-}" ] || unpack "$ROOT/.gpu-carry/site.tar.xz" "$SITE"
echo "unpacked in $(( $(date +%s) - t0 )) s: $(cat "$SITE/PROVENANCE" 2>/dev/null || echo "site $SITE")"
PMT=$D/profilemate-trace
V=$D/vllm
export PYTHONPATH=$SITE
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-INFO} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
date -u +%FT%TZ | tee -a "$OUT/gpu.txt"
LOAD=(--requests "${PM_E2E_REQUESTS:-300}")

check() { # session dir, vLLM's result json, label
  "$PY" "$V/check_session.py" --label "$3" "$1" "$2" 2>&1 | tee -a "$OUT/checks.txt"
}
last_session() { ls -dt "$1"/session_*/ 2>/dev/null | head -1; }

for st in $STAGES; do
  echo "=== stage $st ($(date -u +%T))"
  case $st in
  smoke)
    "$PY" "$V/vllm_load.py" --model dense --requests 64 --out "$OUT/smoke.json" > "$OUT/smoke.log" 2>&1
    rc=$?; grep -E 'RESULT|Error|error' "$OUT/smoke.log" | tail -15
    [ $rc -eq 0 ] && echo "PASS smoke" || { echo "FAIL smoke rc=$rc"; tail -40 "$OUT/smoke.log"; exit 1; }
    ;;
  run|run-graph)
    dets="graph nodes"; [ $st = run-graph ] && dets=graph
    for det in $dets; do
      "$PMT" run --detail $det -o "$OUT/run-$det" -- "$PY" "$V/vllm_load.py" --model dense "${LOAD[@]}" \
        --out "$OUT/run-$det.json" > "$OUT/run-$det.log" 2>&1
      echo "run $det: rc=$?"; grep -E 'RESULT|profilemate|drop' "$OUT/run-$det.log" | tail -6
      check "$(last_session "$OUT/run-$det")" "$OUT/run-$det.json" "run-$det"
    done
    ;;
  attach)
    for det in graph nodes; do
      rm -f "$W/go"
      LD_PRELOAD=$D/libprofilemate.so PYTHONPATH=$D/pyhook:$SITE PROFILEMATE_PYHOOK_SPILL=0 \
        "$PY" "$V/vllm_load.py" --model dense "${LOAD[@]}" --wait-attach "$W/go" --hold 14 \
        --out "$OUT/attach-$det.json" > "$OUT/attach-$det.log" 2>&1 &
      tp=$!
      for _ in $(seq 1 240); do grep -q '^READY' "$OUT/attach-$det.log" && break; sleep 0.5; done
      touch "$W/go"; sleep 2
      "$PMT" attach --pid $tp --duration 8s --detail $det -o "$OUT/attach-$det-s" 2>&1 | tail -6
      wait $tp; echo "attach $det: target rc=$?"
      grep -E 'RESULT' "$OUT/attach-$det.log" | tail -1
      check "$(last_session "$OUT/attach-$det-s")" "$OUT/attach-$det.json" "attach-$det"
    done
    ;;
  moe)
    "$PMT" run --detail graph -o "$OUT/moe" -- "$PY" "$V/vllm_load.py" --model moe "${LOAD[@]}" \
      --out "$OUT/moe.json" > "$OUT/moe.log" 2>&1
    echo "moe: rc=$?"; grep -E 'RESULT' "$OUT/moe.log" | tail -1
    check "$(last_session "$OUT/moe")" "$OUT/moe.json" "moe"
    ;;
  overhead)
    : > "$OUT/overhead.jsonl"
    for mode in ${PM_E2E_MODES:-untraced dormant graph nodes torchprof}; do
      j=$OUT/ovh-$mode.json
      case $mode in
        untraced) "$PY" "$V/vllm_load.py" --model dense "${LOAD[@]}" --out "$j" > "$OUT/ovh-$mode.log" 2>&1 ;;
        dormant) LD_PRELOAD=$D/libprofilemate.so PYTHONPATH=$D/pyhook:$SITE PROFILEMATE_PYHOOK_SPILL=0 \
                   "$PY" "$V/vllm_load.py" --model dense "${LOAD[@]}" --out "$j" > "$OUT/ovh-$mode.log" 2>&1 ;;
        graph|nodes) "$PMT" run --detail $mode --no-bundle -o "$OUT/ovh-$mode" -- "$PY" "$V/vllm_load.py" --model dense \
                   "${LOAD[@]}" --out "$j" > "$OUT/ovh-$mode.log" 2>&1 ;;
        torchprof) "$PY" "$V/vllm_load.py" --model dense "${LOAD[@]}" --torch-profiler "$OUT/torchprof" --out "$j" \
                   > "$OUT/ovh-$mode.log" 2>&1 ;;
      esac
      echo "{\"mode\": \"$mode\", \"r\": $(cat "$j" 2>/dev/null || echo null)}" >> "$OUT/overhead.jsonl"
      "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], "tok/s", r["output_tokens_per_s"], "p50 TPOT ms", r["tpot_p50_ms"], "preempt", r["preemptions"])' "$j" $mode \
        || { echo "FAIL overhead $mode"; tail -20 "$OUT/ovh-$mode.log"; }
    done
    ;;
  rotate)
    # Overhead inside one engine: the same load PM_E2E_REPS times per mode, modes interleaved.
    # untraced and torch.profiler (vLLM's start/stop_profile around each load) get an engine
    # each; dormant/graph/nodes share one engine started with the agent and hook preloaded,
    # with `attach` at graph or nodes for the loads of those modes. Per-load results in
    # rotate.jsonl; scripts/gpu/vllm/rotate_report.py summarises them.
    R=${PM_E2E_REPS:-3}
    : > "$OUT/rotate.jsonl"
    for proc in untraced torchprof preloaded; do
      sync=$W/sync-$proc; rm -rf "$sync"; mkdir -p "$sync"
      n=$R; modes=($proc); [ $proc = preloaded ] && { n=$((3 * R)); modes=(dormant graph nodes); }
      args=(--model dense "${LOAD[@]}" --rounds $n --round-sync "$sync" --out "$OUT/rot-$proc.json")
      case $proc in
        untraced) "$PY" "$V/vllm_load.py" "${args[@]}" > "$OUT/rot-$proc.log" 2>&1 & ;;
        torchprof) "$PY" "$V/vllm_load.py" "${args[@]}" --torch-profiler "$W/torchprof-rot" > "$OUT/rot-$proc.log" 2>&1 & ;;
        preloaded) LD_PRELOAD=$D/libprofilemate.so PYTHONPATH=$D/pyhook:$SITE PROFILEMATE_PYHOOK_SPILL=0 \
                     "$PY" "$V/vllm_load.py" "${args[@]}" > "$OUT/rot-$proc.log" 2>&1 & ;;
      esac
      tp=$!
      for i in $(seq 0 $((n - 1))); do
        for _ in $(seq 1 1200); do grep -q "^ROUND $i\$" "$OUT/rot-$proc.log" && break; kill -0 $tp 2>/dev/null || break; sleep 0.25; done
        grep -q "^ROUND $i\$" "$OUT/rot-$proc.log" || { echo "FAIL rotate $proc: round $i never came"; tail -20 "$OUT/rot-$proc.log"; break; }
        mode=${modes[$((i % ${#modes[@]}))]}
        [ $mode = dormant ] && [ $i -gt 0 ] && mode=after-detach   # CUPTI was armed by an earlier attach
        ap=
        if [ $mode = graph ] || [ $mode = nodes ]; then
          "$PMT" attach --pid $tp --detail $mode --no-bundle -o "$W/rot-attach" > "$OUT/rot-attach-$i.log" 2>&1 &
          ap=$!
          sleep 6   # eBPF load, ring discovery, enable
        fi
        touch "$sync/go.$i"
        for _ in $(seq 1 1200); do [ -f "$sync/res.$i.json" ] && break; kill -0 $tp 2>/dev/null || break; sleep 0.1; done
        if [ -n "$ap" ]; then kill -INT $ap; wait $ap; fi
        echo "{\"mode\": \"$mode\", \"r\": $(cat "$sync/res.$i.json" 2>/dev/null || echo null)}" | tee -a "$OUT/rotate.jsonl"
      done
      wait $tp
    done
    "$PY" "$V/rotate_report.py" "$OUT/rotate.jsonl" | tee "$OUT/rotate.md"
    ;;
  tp2)
    "$PMT" run --detail graph -o "$OUT/tp2" -- "$PY" "$V/vllm_load.py" --model dense --tp 2 "${LOAD[@]}" \
      --out "$OUT/tp2.json" > "$OUT/tp2.log" 2>&1
    echo "tp2: rc=$?"; grep -E 'RESULT' "$OUT/tp2.log" | tail -1
    check "$(last_session "$OUT/tp2")" "$OUT/tp2.json" "tp2"
    ;;
  *) echo "unknown stage $st"; exit 2 ;;
  esac
done
echo "=== done in $(( $(date +%s) - t0 )) s"
# PM_E2E_RESULTS=DIR: one DIR/e2e-results.tar.xz (the device tool returns few files) with what
# docs/benchmarks.md and testdata/ need: logs, vLLM results, checks, metadata and the bundles.
if [ -n "${PM_E2E_RESULTS:-}" ]; then
  mkdir -p "$PM_E2E_RESULTS"
  (cd "$OUT" && tar -cf - $(ls *.log *.json *.jsonl *.txt 2>/dev/null) \
     $(ls */session_*/metadata.json */session_*.tar.zst 2>/dev/null)) | xz -6 -T0 > "$PM_E2E_RESULTS/e2e-results.tar.xz"
  ls -la "$PM_E2E_RESULTS"
fi
