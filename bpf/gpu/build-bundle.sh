#!/bin/sh
# Build what the GPU host needs to run the eBPF GPU tests and benchmarks (no Go or cc there).
# usage: bpf/gpu/build-bundle.sh OUTDIR      (from the repository root)
# OUTDIR/tracer/{tracer.test,testdata/} ; OUTDIR/bpf/gpu/ ; OUTDIR/bpf/testdata/libcuda.so.1 (fake)
set -eu
out=${1:?usage: build-bundle.sh OUTDIR}
mkdir -p "$out/tracer" "$out/bpf/testdata"
CGO_ENABLED=0 go test -c -o "$out/tracer/tracer.test" ./tracer/
cp -r tracer/testdata "$out/tracer/"
cp -r bpf/gpu "$out/bpf/"
cc -shared -fPIC -O0 -fno-omit-frame-pointer -fcf-protection=none -Wl,-soname,libcuda.so.1 \
	-o "$out/bpf/testdata/libcuda.so.1" bpf/testdata/fakecuda.c
echo "bundle in $out: see docs/notes-ebpf.md (GPU runs)"
