//go:build linux && cgo

package cupti

/*
#cgo CFLAGS: -std=c11 -Wall -Wextra -Werror -I${SRCDIR}/csrc
#define _GNU_SOURCE
#include "csrc/pm_ring.c"
#include <stdlib.h>

static struct pm_ring *pmt_create(uint64_t size) {
	struct pm_ring *r = calloc(1, sizeof *r);
	if (!r) return NULL;
	if (pm_ring_create(r, "cupti", PM_SRC_CUPTI, size) != 0) { free(r); return NULL; }
	return r;
}
static int pmt_write(struct pm_ring *r, uint16_t type, uint32_t fixed, const void *tail, uint32_t tail_len, uint64_t seq) {
	uint8_t buf[64];
	memset(buf, 0, sizeof buf);
	if (fixed < 16 || fixed > sizeof buf) return 0;
	memcpy(buf, &type, 2);
	memcpy(buf + 8, &seq, 8);
	return pm_ring_write2(r, buf, fixed, tail, tail_len);
}
static void pmt_state(struct pm_ring *r, uint32_t s) { __atomic_store_n(&r->hdr->producer_state, s, __ATOMIC_RELEASE); }
static void pmt_close(struct pm_ring *r) { pm_ring_close(r); free(r); }
*/
import "C"

import "unsafe"

// cRing drives the agent's C ring producer (csrc/pm_ring.c) from tests, so the
// Go consumer is tested against the exact C code the agent runs.
type cRing struct{ r *C.struct_pm_ring }

func newCRing(size uint64) (*cRing, error) {
	r := C.pmt_create(C.uint64_t(size))
	if r == nil {
		return nil, ErrNotAvailable
	}
	return &cRing{r: r}, nil
}

// fd is the memfd (open it as /proc/self/fd/N).
func (c *cRing) fd() int { return int(c.r.fd) }

// write appends a record of type typ with a fixed part of fixed bytes (its
// u64 at offset 8 = seq) followed by tail. It reports whether it was written.
func (c *cRing) write(typ uint16, fixed int, tail []byte, seq uint64) bool {
	var p unsafe.Pointer
	if len(tail) > 0 {
		p = C.CBytes(tail)
		defer C.free(p)
	}
	return C.pmt_write(c.r, C.uint16_t(typ), C.uint32_t(fixed), p, C.uint32_t(len(tail)), C.uint64_t(seq)) == 1
}

func (c *cRing) setState(s uint32) { C.pmt_state(c.r, C.uint32_t(s)) }

func (c *cRing) close() { C.pmt_close(c.r) }

const haveCgo = true
