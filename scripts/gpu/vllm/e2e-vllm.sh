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
#   rotate    the same, modes interleaved inside two engines (untraced/torch.profiler; dormant/
#             graph/graph --no-ebpf/graph --sample-every 10/nodes), PM_E2E_REPS loads per mode
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
    # Overhead inside one engine: the same load repeated, the tracing mode changed between loads,
    # modes interleaved, round 0 a warm-up (Triton compiles, allocator growth) left out.
    # Engine "plain" (nothing of ours): untraced and torch.profiler loads alternate (vLLM's
    #   start/stop_profile around a load; the go file says which).
    # Engine "pre" (agent + hook preloaded, PROFILEMATE_ARM=graph so GRAPH_TRACE is on from cuInit
    #   as under `run`): dormant, then `attach` at graph, graph --no-ebpf, graph --sample-every 10,
    #   nodes. Each attach is waited for (its streams found) before the load starts.
    # Per-load rows in rotate.jsonl (and $PM_E2E_RESULTS/rotate.jsonl as they come, so a cut-off
    # run keeps what it measured); scripts/gpu/vllm/rotate_report.py summarises them.
    R=${PM_E2E_REPS:-3}
    : > "$OUT/rotate.jsonl"
    for proc in ${PM_E2E_ROT_ENGINES:-pre plain}; do
      sync=$W/sync-$proc; rm -rf "$sync"; mkdir -p "$sync"
      case $proc in
        plain) modes=(untraced torchprof) ;;
        pre) modes=(${PM_E2E_ROT_MODES:-dormant graph graph-noebpf graph-s10 nodes}) ;;
      esac
      n=$((1 + R * ${#modes[@]}))
      args=(--model dense "${LOAD[@]}" --rounds $n --round-sync "$sync" --out "$OUT/rot-$proc.json")
      case $proc in
        plain) "$PY" "$V/vllm_load.py" "${args[@]}" --torch-profiler "$W/torchprof-rot" > "$OUT/rot-$proc.log" 2>&1 & ;;
        pre) LD_PRELOAD=$D/libprofilemate.so PYTHONPATH=$D/pyhook:$SITE PROFILEMATE_PYHOOK_SPILL=0 PROFILEMATE_ARM=graph \
               "$PY" "$V/vllm_load.py" "${args[@]}" > "$OUT/rot-$proc.log" 2>&1 & ;;
      esac
      tp=$!
      for i in $(seq 0 $((n - 1))); do
        for _ in $(seq 1 2400); do grep -q "^ROUND $i\$" "$OUT/rot-$proc.log" && break; kill -0 $tp 2>/dev/null || break; sleep 0.25; done
        grep -q "^ROUND $i\$" "$OUT/rot-$proc.log" || { echo "FAIL rotate $proc: round $i never came"; tail -20 "$OUT/rot-$proc.log"; break; }
        mode=warmup; [ $i -gt 0 ] && mode=${modes[$(((i - 1) % ${#modes[@]}))]}
        [ $proc = pre ] && [ $mode = warmup ] && mode=warmup-dormant
        ap=; aflags=()
        case $mode in
          graph) aflags=(--detail graph) ;;
          graph-noebpf) aflags=(--detail graph --no-ebpf) ;;
          graph-s10) aflags=(--detail graph --sample-every 10) ;;
          nodes) aflags=(--detail nodes) ;;
        esac
        if [ ${#aflags[@]} -gt 0 ]; then
          alog=$OUT/rot-attach-$i.log
          "$PMT" attach --pid $tp "${aflags[@]}" --verbose --log-interval 100000000 --no-bundle -o "$W/rot-attach" > "$alog" 2>&1 &
          ap=$!
          # ready: the engine core's streams found (one collector scan finds them all), then
          # time for the enable to be applied
          for _ in $(seq 1 600); do [ "$(grep -c 'stream found' "$alog")" -ge 2 ] && break; kill -0 $ap 2>/dev/null || break; sleep 0.1; done
          sleep 2
          echo "attach $mode ready: $(grep -c 'stream found' "$alog") streams"
        fi
        echo $mode > "$sync/go.tmp" && mv "$sync/go.tmp" "$sync/go.$i"   # whole, or not there
        for _ in $(seq 1 2400); do [ -f "$sync/res.$i.json" ] && break; kill -0 $tp 2>/dev/null || break; sleep 0.1; done
        if [ -n "$ap" ]; then kill -INT $ap; wait $ap; fi
        row="{\"engine\": \"$proc\", \"mode\": \"$mode\", \"r\": $(cat "$sync/res.$i.json" 2>/dev/null || echo null)}"
        echo "$row" >> "$OUT/rotate.jsonl"
        [ -n "${PM_E2E_RESULTS:-}" ] && { mkdir -p "$PM_E2E_RESULTS"; echo "$row" >> "$PM_E2E_RESULTS/rotate.jsonl"; }
        echo "$row" | cut -c1-220
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
