/* Per-architecture kernel types, generated with bpftool from the BTF of the kernel named in
 * include/VERSIONS. CO-RE relocations make the programs independent of the running kernel. */
#if defined(__TARGET_ARCH_x86)
#include "vmlinux/x86/vmlinux.h"
#else
#error "no vmlinux.h for this architecture: see include/update.sh"
#endif
