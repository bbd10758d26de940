#!/bin/sh
# Refresh the vendored headers from the installed libbpf-dev and this machine's kernel BTF.
# Record the versions in VERSIONS. Needs: apt-get install libbpf-dev bpftool.
set -eu
cd "$(dirname "$0")"
cp /usr/include/bpf/bpf_helpers.h /usr/include/bpf/bpf_helper_defs.h /usr/include/bpf/bpf_tracing.h /usr/include/bpf/bpf_core_read.h libbpf/
bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux/x86/vmlinux.h
echo "libbpf: $(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null); bpftool: $(bpftool version | head -1); kernel: $(uname -r)"
