/* mock_event.h — private interface between fakecuda.c (libcuda.so.1) and
 * mockcupti.c (libcupti.so.13): the fake driver tells the mock CUPTI what the
 * "GPU" did so it can write activity records. Test-only. */
#ifndef MOCK_EVENT_H
#define MOCK_EVENT_H
#include <stdint.h>

enum { MOCK_EV_LAUNCH = 1, MOCK_EV_GRAPH = 2, MOCK_EV_MEMCPY = 3, MOCK_EV_MEMSET = 4, MOCK_EV_SYNC = 5, MOCK_EV_INSTANTIATE = 6 };
#define MOCK_MAX_NODES 16

struct mock_event {
	int type;
	uint32_t cbid;         /* driver API cbid of the call */
	uint32_t stream;       /* stream id */
	const char *name;      /* kernel name (stable pointer) */
	int grid[3], block[3];
	int shmem;
	int cooperative;
	int zero_ts;           /* simulate a kernel without timestamps */
	uint32_t graph_id;
	int nnodes;
	const char *nodes[MOCK_MAX_NODES];
	uint64_t bytes;
	uint8_t copy_kind, src_kind, dst_kind;
	uint32_t value;
	uint32_t sync_type;    /* 1 event, 3 stream, 4 context */
	uint32_t event_id;
};

typedef void (*mockcupti_event_fn)(const struct mock_event *);
#endif
