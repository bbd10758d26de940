// Package bpf holds the eBPF programs of profilemate-trace and their generated Go bindings.
//
// The C sources are in src/, vendored headers in include/ (see include/VERSIONS). The generated
// pmtracer_x86_bpfel.go and its object pmtracer_x86_bpfel.o are committed, so building the Go
// code needs no clang; `make -C bpf generate` rebuilds them and `make -C bpf check` fails when
// the committed files differ from a fresh build (CI).
//
// bpf2go flags:
//   - -cc $(CLANG): the pinned clang (see Makefile; the object differs between clang versions).
//   - -cflags "-O2 -g -Wall -Werror": -O2 is required for the verifier; -g keeps BTF (CO-RE needs it;
//     bpf2go strips DWARF from the committed object but keeps .BTF/.BTF.ext).
//   - -target amd64: uprobes read arguments through PT_REGS_PARMn and the thread pointer through
//     task->thread.fsbase, both per architecture. arm64 is not built yet (no arm64 vmlinux.h here).
//   - -tags linux: the bindings only build on Linux.
//   - -type: the structs user space writes into maps (CPython layout per process, map keys and values).
//   - -I../internal/record/c: pm_records.h, the generated record layouts; BPF samples are records.
package bpf

//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags ${BPF_CFLAGS} -target amd64 -tags linux -type pm_pyconf -type pm_code_key -type pm_code_val -type pm_tstate_key -type pm_counter_key -type pm_counter_val pmTracer src/pm_tracer.bpf.c -- -I./include -I./include/libbpf -I../internal/record/c
