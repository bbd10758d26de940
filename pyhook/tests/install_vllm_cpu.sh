#!/usr/bin/env bash
# Install a real vLLM into a venv for the pyhook's CPU tests (no GPU needed).
#
#   pyhook/tests/install_vllm_cpu.sh [VERSION] [VENV]
#     VERSION default 0.33.0 (newest pinned); VENV default ${PM_VLLM_VENV_BASE:-$HOME/.cache/profilemate}/vllm-<VERSION>
#
# Route (measured on a 2-core box, PyPI only, download.pytorch.org unreachable):
#   * vllm wheel with --no-deps (~340 MB): its full dependency set pulls flashinfer, cutlass,
#     tilelang, ... that the scheduler never imports.
#   * the torch version vllm pins, WITH its dependencies: PyPI only has the CUDA build, whose
#     import needs the nvidia-* runtime libraries even on a CPU-only machine (~3 GB installed).
#     A CPU-only torch would be far smaller but is only on download.pytorch.org.
#   * then only the Python packages that importing vllm.v1.core.sched.scheduler,
#     vllm.v1.core.kv_cache_manager, vllm.v1.cudagraph_dispatcher and vllm.v1.engine.core
#     needs (found by importing and installing what is missing, at most 40 rounds).
# Prints the venv's python path on the last line.
set -euo pipefail
VERSION="${1:-0.33.0}"
VENV="${2:-${PM_VLLM_VENV_BASE:-$HOME/.cache/profilemate}/vllm-$VERSION}"
PY="${PYTHON:-python3}"
t0=$(date +%s)
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, sys; sys.exit(vllm.__version__ != '$VERSION')" 2>/dev/null \
   && [ -f "$VENV/.pm-ok" ]; then
  echo "reusing $VENV" >&2
  echo "$VENV/bin/python"; exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip >/dev/null
"$PIP" install -q --no-deps "vllm==$VERSION"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
META=$(ls -d "$SITE"/vllm-"$VERSION".dist-info)/METADATA
TORCH=$(grep -E '^Requires-Dist: torch[ =<>]' "$META" | head -1 | sed -E 's/^Requires-Dist: //; s/;.*//; s/ //g')
echo "torch requirement: ${TORCH:-torch}" >&2
"$PIP" install -q "${TORCH:-torch}" "setuptools>=77.0.3"
# light Python deps vLLM's config/scheduler import path needs (versions from vllm's metadata)
want=(pydantic msgspec pyzmq cachetools psutil regex cloudpickle blake3 transformers huggingface_hub
      prometheus_client pyyaml tqdm requests einops py-cpuinfo setproctitle sentencepiece pybase64 cbor2
      aiohttp openai openai-harmony pillow uvloop xgrammar fastapi partial-json-parser llguidance numpy)
reqs=()
for w in "${want[@]}"; do
  line=$(grep -iE "^Requires-Dist: ${w//-/[-_]}([ =<>!\[;]|$)" "$META" | head -1 | sed -E 's/^Requires-Dist: //; s/;.*//' || true)
  reqs+=("${line:-$w}")
done
"$PIP" install -q "${reqs[@]}" 2>&1 | grep -v -E "requires|dependency resolver|incompatible" >&2 || true
CHECK="import vllm.v1.core.sched.scheduler, vllm.v1.core.kv_cache_manager, vllm.v1.cudagraph_dispatcher, vllm.v1.engine.core, vllm.model_executor.models.llama"
for i in $(seq 1 40); do
  err=$("$VENV/bin/python" -c "$CHECK" 2>&1 >/dev/null || true)
  m=$(printf '%s' "$err" | grep -oP "No module named '\K[^'.]+" | grep -v '^vllm$' | tail -1 || true)
  [ -z "$m" ] && break
  case "$m" in
    cv2) p=opencv-python-headless;; PIL) p=pillow;; yaml) p=pyyaml;; zmq) p=pyzmq;; google) p=protobuf;;
    cpuinfo) p=py-cpuinfo;; openai_harmony) p=openai-harmony;; *) p="$m";;
  esac
  echo "installing missing module $m ($p)" >&2
  "$PIP" install -q "$p" 2>&1 | grep -v -E "requires|dependency resolver|incompatible" >&2 || true
done
"$VENV/bin/python" -c "$CHECK; import vllm; print('vllm', vllm.__version__, 'importable')" 2>&1 | tail -1 >&2
touch "$VENV/.pm-ok"
echo "install took $(( $(date +%s) - t0 )) s, venv size $(du -sh "$VENV" | cut -f1)" >&2
echo "$VENV/bin/python"
