#!/usr/bin/env bash
# Stage a real vLLM release for the GPU machine (no internet there, 64 MiB per command).
#
#   scripts/gpu/vllm/prepare.sh [VERSION]        (default 0.26.0; writes .gpu/vllm/)
#
# vLLM 0.26.0 is the newest release whose torch pin (2.11.0) matches the H100's torch
# (PyPI metadata: 0.20.0–0.26.0 pin torch==2.11.0, 0.27.0+ pin 2.13/2.14). Its wheel is
# 304 MB; what travels is:
#   * its Python sources (no tests of ours, nothing patched), plus vllm/third_party's Python;
#   * its compiled ops _C_stable_libtorch and _moe_C_stable_libtorch (built for torch 2.11 and
#     CUDA 13, as the H100's torch is) with the device code an sm_90 GPU never loads zeroed by
#     prune_fatbin.py (79 + 48 MB -> 15 + 14.5 MB after zstd); the small cumem/fs_io/spinloop ops;
#   * FlashAttention 3 (_vllm_fa3_C, 153 MB of sm_90 code that xz shrinks to 8 MB): vLLM's
#     CUDA platform refuses to import its attention layers without FA2 or FA3, though the runs
#     use the Triton attention backend; not carried: FA2 (305 MB, sm_80 + PTX) and FlashMLA;
#   * the pure-Python and cp312 wheels the H100 venv lacks (deps-VERSION.txt, found by importing
#     the engine, model runner, Llama/Mixtral and Triton attention modules in a Python 3.12 venv
#     that mirrors the H100's freeze, docs/h100-environment.md), installed into the same folder.
# Result: .gpu-vllm/site.tar.xz (about 40 MB); `make gpu-carry` packs it for the device.
set -euo pipefail
VERSION="${1:-0.26.0}"
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
CACHE="${PM_CACHE:-$HOME/.cache/profilemate}/vllm-gpu-$VERSION"
DEPS="$ROOT/scripts/gpu/vllm/deps-$VERSION.txt"
OUT="$ROOT/.gpu-vllm"
PY="${PYTHON:-python3}"
[ -f "$DEPS" ] || { echo "no dependency list $DEPS for vLLM $VERSION" >&2; exit 2; }
mkdir -p "$CACHE/wheels" "$OUT"
if ! ls "$CACHE"/vllm-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "downloading vllm $VERSION (about 300 MB)" >&2
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.12 -d "$CACHE" "vllm==$VERSION"
fi
WHL=$(ls "$CACHE"/vllm-"$VERSION"-*.whl | head -1)
PLAT=()
for p in manylinux_2_31_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64 any; do PLAT+=(--platform "$p"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none -d "$CACHE/wheels" -r "$DEPS"
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
(cd "$SITE" && unzip -q "$WHL" 'vllm/*' "vllm-$VERSION.dist-info/*" -x '*.so' 'vllm/third_party/*' 'vllm/vllm-rs' \
  && unzip -q "$WHL" 'vllm/third_party/__init__.py' 'vllm/third_party/pynvml.py' \
       'vllm/third_party/triton_kernels/*' 'vllm/third_party/flash_linear_attention/*' \
  && unzip -q "$WHL" 'vllm/cumem_allocator.abi3.so' 'vllm/fs_io_C.abi3.so' 'vllm/spinloop.abi3.so' \
       'vllm/_C_stable_libtorch.abi3.so' 'vllm/_moe_C_stable_libtorch.abi3.so' \
       'vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so')
for so in _C_stable_libtorch _moe_C_stable_libtorch; do
  "$PY" "$ROOT/scripts/gpu/vllm/prune_fatbin.py" --keep-sm "${PM_KEEP_SM:-90}" \
    "$SITE/vllm/$so.abi3.so" "$SITE/vllm/$so.pruned" 2>&1 | tail -1 >&2
  mv "$SITE/vllm/$so.pruned" "$SITE/vllm/$so.abi3.so"
done
while read -r req; do
  name=${req%%==*}; ver=${req##*==}
  w=$(ls "$CACHE/wheels/" | grep -i "^${name}-${ver}-" | head -1)
  [ -n "$w" ] || { echo "wheel for $req not downloaded" >&2; exit 1; }
  (cd "$SITE" && unzip -q -o "$CACHE/wheels/$w")
done < "$DEPS"
printf 'vllm %s staged by prepare.sh on %s; sm_%s device code only\n' "$VERSION" "$(date -u +%FT%TZ)" "${PM_KEEP_SM:-90}" > "$SITE/PROVENANCE"
tar -C "$SITE" -cf - . | xz -T1 --lzma2=preset=9e,dict=256MiB > "$OUT/site.tar.xz"  # 2.5 MB smaller than -9: the carry is tight
echo "$OUT/site.tar.xz: $(du -m "$OUT/site.tar.xz" | cut -f1) MiB" >&2
