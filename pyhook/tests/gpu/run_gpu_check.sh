#!/usr/bin/env bash
# For the lead's GPU batch (device tool): run from the repo root on a GPU machine with vLLM
# importable. Writes sessions under $OUT/prof and prints the verification JSON.
set -u
OUT="${OUT:-/tmp/pm-gpu-out}"
mkdir -p "$OUT/prof"
for kind in dense moe; do
  PYTHONPATH="$PWD/pyhook${PYTHONPATH:+:$PYTHONPATH}" VLLM_PROFILING_DIR="$OUT/prof" \
    PROFILEMATE_PYHOOK_AUTO_EXPORT=0 timeout 900 python3 pyhook/tests/gpu/gpu_check.py run "$kind" \
    > "$OUT/run-$kind.log" 2>&1; echo "run $kind: exit $?"; tail -3 "$OUT/run-$kind.log"
done
python3 pyhook/tests/gpu/gpu_check.py verify "$OUT/prof" | tee "$OUT/verify.json"
