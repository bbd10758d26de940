/* pm_ring.h — C producer of the shared-memory ring (docs/record-format.md).
 * Mirrors the header table there and internal/ring/ring.go (offsets asserted). */
#ifndef PM_RING_H
#define PM_RING_H

#include <stddef.h>
#include <stdint.h>

struct pm_ring_hdr {
	char magic[8];                  /* 0 "PMRING\0\1" */
	uint32_t version;               /* 8 */
	uint32_t header_size;           /* 12 */
	uint64_t data_size;             /* 16 */
	uint32_t pid;                   /* 24 */
	uint32_t source;                /* 28 */
	uint64_t created_ns;            /* 32 */
	uint32_t producer_state;        /* 40 */
	uint32_t producer_flags;        /* 44 */
	uint8_t _pad0[16];              /* 48 */
	uint32_t control_enable;        /* 64 */
	uint32_t control_detail;        /* 68 */
	uint32_t control_seq;           /* 72 */
	uint32_t control_ack;           /* 76 */
	uint64_t consumer_heartbeat_ns; /* 80 */
	uint32_t sample_every;          /* 88 */
	uint8_t _pad1[4];               /* 92 */
	uint64_t first_enable_ns;       /* 96: how long the first (late-arming) enable blocked */
	uint64_t late_start_ns;         /* 104: CLOCK_MONOTONIC of pm_inject_start (0: started by cuInit) */
	uint8_t _pad1b[16];             /* 112 */
	uint64_t head;                  /* 128 */
	uint64_t records_written;       /* 136 */
	uint64_t records_dropped;       /* 144 */
	uint64_t bytes_dropped;         /* 152 */
	uint64_t source_dropped;        /* 160 */
	uint64_t last_flush_ns;         /* 168 */
	uint8_t _pad2[16];              /* 176 */
	uint64_t tail;                  /* 192 */
};
_Static_assert(__builtin_offsetof(struct pm_ring_hdr, producer_flags) == 44, "producer_flags");
_Static_assert(__builtin_offsetof(struct pm_ring_hdr, control_enable) == 64, "control_enable");
_Static_assert(__builtin_offsetof(struct pm_ring_hdr, consumer_heartbeat_ns) == 80, "heartbeat");
_Static_assert(__builtin_offsetof(struct pm_ring_hdr, sample_every) == 88, "sample_every");
_Static_assert(__builtin_offsetof(struct pm_ring_hdr, first_enable_ns) == 96, "first_enable_ns");
_Static_assert(__builtin_offsetof(struct pm_ring_hdr, late_start_ns) == 104, "late_start_ns");
_Static_assert(__builtin_offsetof(struct pm_ring_hdr, head) == 128, "head");
_Static_assert(__builtin_offsetof(struct pm_ring_hdr, last_flush_ns) == 168, "last_flush_ns");
_Static_assert(__builtin_offsetof(struct pm_ring_hdr, tail) == 192, "tail");

#define PM_RING_HEADER_SIZE 4096u
enum { PM_SRC_CUPTI = 1, PM_SRC_PYHOOK = 2 };
enum { PM_STATE_INIT = 0, PM_STATE_RUNNING = 1, PM_STATE_EXITED = 2, PM_STATE_PASSIVE = 3, PM_STATE_FAILED = 4, PM_STATE_DETACHED = 5 };
enum { PM_PFLAG_ARMED_AT_INIT = 1u << 0, PM_PFLAG_LATE_START = 1u << 1 };

struct pm_ring {
	struct pm_ring_hdr *hdr;
	uint8_t *data;
	uint64_t data_size;
	size_t map_size;
	int fd;
	volatile int lock; /* spinlock: writers hold it only to copy bytes */
};

/* Creates memfd "profilemate-<name>" of header + data_size (power of two). 0 on success. */
int pm_ring_create(struct pm_ring *r, const char *name, uint32_t source, uint64_t data_size);
/* Appends one framed record (rec->size bytes; size a multiple of 8). Returns 1 written, 0 dropped. */
int pm_ring_write(struct pm_ring *r, const void *rec, uint32_t size);
/* Appends a record made of a fixed part and a tail (pads to 8). The fixed part's
 * header size field is set here. */
int pm_ring_write2(struct pm_ring *r, void *fixed, uint32_t fixed_size, const void *tail, uint32_t tail_len);
void pm_ring_close(struct pm_ring *r);
uint64_t pm_now_ns(void);

#endif
