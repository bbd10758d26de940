/* mockcupti.c — a stand-in libcupti.so.13 for tests without a GPU.
 *
 * Exports the cupti* functions the agent uses with CUPTI's real semantics as far
 * as the agent can observe them: one subscriber (39 for the second), activity
 * kinds enabled per kind, per-cbid API enables, the timestamp callback, SYSTEM
 * thread ids, buffers requested from the client and handed back on FlushAll,
 * records written in the REAL layouts of the emulated version (Kernel10 216 B for
 * 130001, Kernel9 208 B for 24; Memcpy6 96 / Memcpy5 88; Synchronization2 56 /
 * Synchronization 40; GraphTrace2 56; API 40; Overhead3 56; Memset4 88) and walked
 * by cuptiActivityGetNextRecord from a private size table, as the real one does.
 *
 * Environment: MOCK_CUPTI_VERSION (default 130001), MOCK_CUPTI_BUSY=<holder>
 * (subscribe returns 39 naming <holder>), MOCK_CUPTI_GARBAGE=N (after every N
 * records insert a record of an unknown kind), MOCK_CUPTI_DROPS=N (report N
 * CUPTI-side dropped records once), MOCK_CUPTI_NO_TSCB=1 (the timestamp callback is refused,
 * as on WSL), MOCK_CUPTI_FORCED_FLUSH_HANG_MS=N (a forced flush sleeps N ms first, as one
 * waiting on a stuck GPU would), MOCK_CUPTI_ENABLE_STALL_MS=N (the first enable of
 * CONCURRENT_KERNEL sleeps N ms, as the real one does while it instruments the modules already
 * loaded), MOCK_CUPTI_LOG=1 (trace calls to stderr).
 * cuptiActivityEnableAndDump(DEVICE|CONTEXT) writes one Device5 (184 B) / Context3 (32 B) record
 * for the one fake device and context; cuptiFinalize counts its calls (mockcupti_finalized).
 * Like the real 13.0U1, a graph launched with GRAPH_TRACE on that was instantiated while it
 * was off crashes the process (abort, with a line on stderr).
 *
 * Private hook for fakecuda.c: mockcupti_event(const struct mock_event *).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mock_event.h"

#define EXPORT __attribute__((visibility("default")))
typedef int CUptiResult;
typedef void (*req_fn)(uint8_t **, size_t *, size_t *);
typedef void (*comp_fn)(void *, uint32_t, uint8_t *, size_t, size_t);
typedef uint64_t (*ts_fn)(void);

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int subscribers;
static req_fn g_req;
static comp_fn g_comp;
static ts_fn g_ts;
static int g_tid_system;
static uint8_t kinds[64];
static uint8_t drv_api[1024], rt_api[1024];
static uint8_t *cur_buf;
static size_t cur_size, cur_used;
static uint32_t next_corr = 1;
static uint64_t gpu_free_at[64];
static uint64_t pending_drops;
static uint64_t rec_count;
static int inited;
static uint32_t g_version = 130001;
static int g_garbage;
static int g_log;
static const char *g_busy;
static uint64_t stat_records, stat_requests, stat_completions;

#define KIND_UNKNOWN_GARBAGE 0x7fff0001u

static void mock_init(void)
{
	if (inited)
		return;
	inited = 1;
	const char *v = getenv("MOCK_CUPTI_VERSION");
	if (v && *v)
		g_version = (uint32_t)strtoul(v, NULL, 10);
	v = getenv("MOCK_CUPTI_GARBAGE");
	if (v && *v)
		g_garbage = atoi(v);
	v = getenv("MOCK_CUPTI_DROPS");
	if (v && *v)
		pending_drops = strtoull(v, NULL, 10);
	g_busy = getenv("MOCK_CUPTI_BUSY");
	if (g_busy && !*g_busy)
		g_busy = NULL;
	g_log = getenv("MOCK_CUPTI_LOG") != NULL;
}

#define LOG(...) do { if (g_log) fprintf(stderr, "[mockcupti] " __VA_ARGS__); } while (0)

static size_t rec_size(uint32_t kind)
{
	int v13 = g_version >= 130000;
	switch (kind) {
	case 10: case 3: return v13 ? 216 : 208;
	case 1: return g_version >= 26 ? 96 : 88;
	case 2: return 88;
	case 4: case 5: return 40;
	case 17: return 56;
	case 38: return v13 ? 56 : 40;
	case 51: return 56;
	case 8: return 184;
	case 9: return 32;
	case KIND_UNKNOWN_GARBAGE: return 48;
	}
	return 0;
}

static uint64_t now_ts(void)
{
	if (g_ts)
		return g_ts();
	struct timespec t; /* CUPTI's default clock is CLOCK_REALTIME */
	clock_gettime(CLOCK_REALTIME, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static uint32_t thread_id(void)
{
	if (g_tid_system)
		return (uint32_t)syscall(SYS_gettid);
	return (uint32_t)(uintptr_t)pthread_self();
}

static void complete_locked(void)
{
	if (!cur_buf)
		return;
	uint8_t *b = cur_buf;
	size_t sz = cur_size, used = cur_used;
	cur_buf = NULL;
	cur_used = cur_size = 0;
	stat_completions++;
	if (g_comp) {
		pthread_mutex_unlock(&mu);
		g_comp(NULL, 0, b, sz, used);
		pthread_mutex_lock(&mu);
	}
}

/* Returns space for one record of kind (zeroed) or NULL (counted as CUPTI drop). */
static uint8_t *alloc_rec_locked(uint32_t kind)
{
	size_t n = rec_size(kind);
	if (g_garbage && kind != KIND_UNKNOWN_GARBAGE && ++rec_count % (uint64_t)g_garbage == 0) {
		uint8_t *gr = alloc_rec_locked(KIND_UNKNOWN_GARBAGE);
		if (gr) {
			uint32_t k = KIND_UNKNOWN_GARBAGE;
			memcpy(gr, &k, 4);
			memset(gr + 4, 0xA5, 44);
		}
	}
	if (cur_buf && cur_used + n > cur_size)
		complete_locked();
	if (!cur_buf) {
		if (!g_req) {
			pending_drops++;
			return NULL;
		}
		uint8_t *b = NULL;
		size_t sz = 0, maxrec = 0;
		stat_requests++;
		pthread_mutex_unlock(&mu);
		g_req(&b, &sz, &maxrec);
		pthread_mutex_lock(&mu);
		if (!b || sz < n) {
			pending_drops++;
			return NULL;
		}
		if (cur_buf) { /* another thread installed one meanwhile: complete ours empty */
			pthread_mutex_unlock(&mu);
			if (g_comp)
				g_comp(NULL, 0, b, sz, 0);
			pthread_mutex_lock(&mu);
		} else {
			cur_buf = b;
			cur_size = sz;
			cur_used = 0;
		}
		if (cur_used + n > cur_size) {
			pending_drops++;
			return NULL;
		}
	}
	uint8_t *r = cur_buf + cur_used;
	memset(r, 0, n);
	cur_used += n;
	stat_records++;
	return r;
}

#define PUT(p, off, type, val) do { type v_ = (type)(val); memcpy((p) + (off), &v_, sizeof v_); } while (0)

static void put_api_locked(int runtime, uint32_t cbid, uint64_t s, uint64_t e, uint32_t corr, uint32_t tid)
{
	uint32_t kind = runtime ? 5 : 4;
	/* As observed on CUPTI 13.0U1 (H200): API records need the DRIVER/RUNTIME kind; enabling the
	 * kind switches every cbid on, cuptiActivityEnable*Api(cbid, 0) then switches single ones
	 * off; per-cbid enables without the kind produce nothing. */
	int on = kinds[kind] && (runtime ? rt_api[cbid & 1023] : drv_api[cbid & 1023]);
	if (!on)
		return;
	uint8_t *r = alloc_rec_locked(kind);
	if (!r)
		return;
	PUT(r, 0, uint32_t, kind);
	PUT(r, 4, uint32_t, cbid);
	PUT(r, 8, uint64_t, s);
	PUT(r, 16, uint64_t, e);
	PUT(r, 24, uint32_t, getpid());
	PUT(r, 28, uint32_t, tid);
	PUT(r, 32, uint32_t, corr);
	PUT(r, 36, uint32_t, 0);
}

static uint64_t dur_for(const char *name)
{
	uint64_t h = 1469598103934665603ull;
	for (const char *p = name; p && *p; p++)
		h = (h ^ (uint8_t)*p) * 1099511628211ull;
	return 3000 + h % 40000; /* 3..43 µs, deterministic per name */
}

static void put_kernel_locked(const struct mock_event *ev, const char *name, int gx, int gy, int gz, int bx,
			      int by, int bz, uint64_t start, uint64_t end, uint32_t corr, uint32_t graph_id,
			      uint64_t node_id)
{
	uint8_t *r = alloc_rec_locked(10);
	if (!r)
		return;
	PUT(r, 0, uint32_t, 10);
	PUT(r, 6, uint16_t, 32 + (uint16_t)(strlen(name) % 64));
	PUT(r, 16, uint64_t, start);
	PUT(r, 24, uint64_t, end);
	PUT(r, 32, uint64_t, end);
	PUT(r, 40, uint32_t, 0);
	PUT(r, 44, uint32_t, 1);
	PUT(r, 48, uint32_t, ev->stream);
	PUT(r, 52, int32_t, gx);
	PUT(r, 56, int32_t, gy);
	PUT(r, 60, int32_t, gz);
	PUT(r, 64, int32_t, bx);
	PUT(r, 68, int32_t, by);
	PUT(r, 72, int32_t, bz);
	PUT(r, 76, int32_t, 1024);
	PUT(r, 80, int32_t, ev->shmem);
	PUT(r, 92, uint32_t, corr);
	PUT(r, 96, int64_t, (int64_t)corr * 10);
	PUT(r, 104, const char *, name); /* CUPTI-owned pointer; stable for the process */
	PUT(r, 136, uint8_t, ev->cooperative ? 1 : 0);
	PUT(r, 144, uint64_t, node_id);
	PUT(r, 156, uint32_t, graph_id);
	if (g_version >= 130000)
		PUT(r, 208, uint8_t, 0);
}

static uint8_t gt_at_instantiate[1024]; /* graph id -> GRAPH_TRACE was on when it was instantiated */

EXPORT void mockcupti_event(const struct mock_event *ev)
{
	pthread_mutex_lock(&mu);
	mock_init();
	if (ev->type == MOCK_EV_INSTANTIATE) {
		gt_at_instantiate[ev->graph_id & 1023] = kinds[51];
		pthread_mutex_unlock(&mu);
		return;
	}
	if (ev->type == MOCK_EV_GRAPH && kinds[51] && !gt_at_instantiate[ev->graph_id & 1023]) {
		/* CUPTI 13.0U1 on an H200: SIGSEGV inside libcupti under cuGraphLaunch when GRAPH_TRACE
		 * was enabled after the graph was instantiated (docs/notes-agent.md) */
		fprintf(stderr, "[mockcupti] GRAPH_TRACE enabled after graph %u was instantiated: real CUPTI 13.0U1 crashes here\n",
			ev->graph_id);
		abort();
	}
	uint32_t tid = thread_id();
	uint64_t api_s = now_ts();
	uint32_t corr = next_corr++;
	uint32_t st = ev->stream & 63;
	uint64_t gpu = api_s + 2000;
	if (gpu < gpu_free_at[st])
		gpu = gpu_free_at[st];
	switch (ev->type) {
	case MOCK_EV_LAUNCH: {
		uint64_t d = dur_for(ev->name);
		if (kinds[10] || kinds[3])
			put_kernel_locked(ev, ev->name, ev->grid[0], ev->grid[1], ev->grid[2], ev->block[0], ev->block[1],
					  ev->block[2], ev->zero_ts ? 0 : gpu, ev->zero_ts ? 0 : gpu + d, corr, 0, 0);
		gpu_free_at[st] = gpu + d;
		break;
	}
	case MOCK_EV_GRAPH: {
		uint64_t t = gpu;
		if (kinds[51]) {
			for (int i = 0; i < ev->nnodes; i++)
				t += dur_for(ev->nodes[i]) + 500;
			uint8_t *r = alloc_rec_locked(51);
			if (r) {
				PUT(r, 0, uint32_t, 51);
				PUT(r, 4, uint32_t, corr);
				PUT(r, 8, uint64_t, gpu);
				PUT(r, 16, uint64_t, t);
				PUT(r, 24, uint32_t, 0);
				PUT(r, 28, uint32_t, ev->graph_id);
				PUT(r, 32, uint32_t, 1);
				PUT(r, 36, uint32_t, ev->stream);
				PUT(r, 48, uint32_t, 0);
				PUT(r, 52, uint32_t, 1);
			}
		} else if (kinds[10] || kinds[3]) {
			for (int i = 0; i < ev->nnodes; i++) {
				uint64_t d = dur_for(ev->nodes[i]);
				put_kernel_locked(ev, ev->nodes[i], 128, 1, 1, 256, 1, 1, t, t + d, corr, ev->graph_id,
						  ((uint64_t)ev->graph_id << 32) | (uint64_t)(i + 1));
				t += d + 500;
			}
		} else {
			for (int i = 0; i < ev->nnodes; i++)
				t += dur_for(ev->nodes[i]) + 500;
		}
		gpu_free_at[st] = t;
		break;
	}
	case MOCK_EV_MEMCPY:
	case MOCK_EV_MEMSET: {
		uint64_t d = 1000 + ev->bytes / 20; /* ~20 GB/s */
		int isset = ev->type == MOCK_EV_MEMSET;
		uint32_t kind = isset ? 2 : 1;
		if (kinds[kind]) {
			uint8_t *r = alloc_rec_locked(kind);
			if (r) {
				PUT(r, 0, uint32_t, kind);
				if (isset) {
					PUT(r, 4, uint32_t, ev->value);
					PUT(r, 48, uint16_t, 1);
					PUT(r, 50, uint16_t, 3);
				} else {
					PUT(r, 4, uint8_t, ev->copy_kind);
					PUT(r, 5, uint8_t, ev->src_kind);
					PUT(r, 6, uint8_t, ev->dst_kind);
					PUT(r, 7, uint8_t, 1);
				}
				PUT(r, 8, uint64_t, ev->bytes);
				PUT(r, 16, uint64_t, gpu);
				PUT(r, 24, uint64_t, gpu + d);
				PUT(r, 32, uint32_t, 0);
				PUT(r, 36, uint32_t, 1);
				PUT(r, 40, uint32_t, ev->stream);
				PUT(r, 44, uint32_t, corr);
			}
		}
		gpu_free_at[st] = gpu + d;
		break;
	}
	case MOCK_EV_SYNC: {
		uint64_t end = now_ts();
		uint64_t wait_until = gpu_free_at[st];
		if (ev->sync_type == 4)
			for (int i = 0; i < 64; i++)
				if (gpu_free_at[i] > wait_until)
					wait_until = gpu_free_at[i];
		if (wait_until > end)
			end = wait_until;
		if (kinds[38]) {
			uint8_t *r = alloc_rec_locked(38);
			if (r) {
				PUT(r, 0, uint32_t, 38);
				PUT(r, 4, uint32_t, ev->sync_type);
				PUT(r, 8, uint64_t, api_s + 300);
				PUT(r, 16, uint64_t, end);
				PUT(r, 24, uint32_t, corr);
				PUT(r, 28, uint32_t, 1);
				PUT(r, 32, uint32_t, ev->sync_type == 3 ? ev->stream : 0xffffffffu);
				PUT(r, 36, uint32_t, ev->sync_type == 1 ? ev->event_id : 0xffffffffu);
			}
		}
		break;
	}
	}
	uint64_t api_e = now_ts();
	if (api_e <= api_s)
		api_e = api_s + 1;
	put_api_locked(0, ev->cbid, api_s, api_e, corr, tid);
	pthread_mutex_unlock(&mu);
}

/* Test introspection. */
EXPORT void mockcupti_stats(uint64_t *records, uint64_t *requests, uint64_t *completions)
{
	pthread_mutex_lock(&mu);
	*records = stat_records;
	*requests = stat_requests;
	*completions = stat_completions;
	pthread_mutex_unlock(&mu);
}

/* ---- CUPTI API ---- */

EXPORT CUptiResult cuptiGetVersion(uint32_t *v)
{
	mock_init();
	if (!v)
		return 1;
	*v = g_version;
	return 0;
}

typedef struct {
	size_t structSize;
	const char *subscriberName;
	char *oldSubscriberName;
	size_t oldSubscriberSize;
} SubParams;
static char holder_name[128];

static void *mock_worker(void *arg)
{
	(void)arg;
	for (;;)
		sleep(1000);
	return NULL;
}

EXPORT CUptiResult cuptiSubscribe_v2(void **sub, void *cb, void *ud, SubParams *p)
{
	(void)cb;
	(void)ud;
	pthread_mutex_lock(&mu);
	mock_init();
	if (p && p->structSize < sizeof(SubParams)) {
		pthread_mutex_unlock(&mu);
		return 1;
	}
	if (g_busy || subscribers) {
		if (p && p->oldSubscriberName && p->oldSubscriberSize)
			snprintf(p->oldSubscriberName, p->oldSubscriberSize, "%s", g_busy ? g_busy : holder_name);
		pthread_mutex_unlock(&mu);
		LOG("subscribe -> 39\n");
		return 39;
	}
	subscribers = 1;
	static int worker_started; /* like the real CUPTI: a worker thread at the first subscribe; it inherits
				    * the caller's name (the agent must not make it look like its own) */
	if (!worker_started && !getenv("MOCK_CUPTI_NO_WORKER")) {
		worker_started = 1;
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		pthread_create(&t, &a, mock_worker, NULL);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		pthread_attr_destroy(&a);
	}
	snprintf(holder_name, sizeof holder_name, "CUPTI for %s", p && p->subscriberName ? p->subscriberName : "unnamed");
	*sub = (void *)(uintptr_t)0x50b;
	pthread_mutex_unlock(&mu);
	LOG("cuptiSubscribe -> 0\n");
	return 0;
}

EXPORT CUptiResult cuptiSubscribe(void **sub, void *cb, void *ud) { return cuptiSubscribe_v2(sub, cb, ud, NULL); }

EXPORT CUptiResult cuptiUnsubscribe(void *sub)
{
	(void)sub;
	pthread_mutex_lock(&mu);
	subscribers = 0;
	pthread_mutex_unlock(&mu);
	return 0;
}

EXPORT CUptiResult cuptiActivityRegisterCallbacks(req_fn r, comp_fn c)
{
	if (!r || !c)
		return 1;
	LOG("cuptiActivityRegisterCallbacks\n");
	pthread_mutex_lock(&mu);
	g_req = r;
	g_comp = c;
	pthread_mutex_unlock(&mu);
	return 0;
}

EXPORT CUptiResult cuptiActivityRegisterTimestampCallback(ts_fn f)
{
	if (!f)
		return 1;
	if (getenv("MOCK_CUPTI_NO_TSCB"))
		return 39; /* as on WSL */
	g_ts = f;
	return 0;
}

EXPORT CUptiResult cuptiSetThreadIdType(uint32_t t)
{
	if (t > 1)
		return 1;
	g_tid_system = t == 1;
	return 0;
}

EXPORT CUptiResult cuptiActivitySetAttribute(uint32_t attr, size_t *sz, void *val)
{
	(void)attr;
	if (!sz || !val)
		return 1;
	return 0;
}

static int kind_ok(uint32_t k)
{
	return k == 1 || k == 2 || k == 3 || k == 4 || k == 5 || k == 8 || k == 9 || k == 10 || k == 17 || k == 38 || k == 51;
}

EXPORT CUptiResult cuptiActivityEnable(uint32_t k)
{
	if (!kind_ok(k))
		return 21;
	static int ck_stalled;
	const char *stall = getenv("MOCK_CUPTI_ENABLE_STALL_MS");
	if (k == 10 && stall && *stall && !__atomic_exchange_n(&ck_stalled, 1, __ATOMIC_ACQ_REL))
		usleep((useconds_t)strtoul(stall, NULL, 10) * 1000);
	pthread_mutex_lock(&mu);
	kinds[k] = 1;
	if (k == 4)
		memset(drv_api, 1, sizeof drv_api);
	if (k == 5)
		memset(rt_api, 1, sizeof rt_api);
	pthread_mutex_unlock(&mu);
	LOG("enable %u\n", k);
	return 0;
}

EXPORT CUptiResult cuptiActivityDisable(uint32_t k)
{
	if (!kind_ok(k))
		return 21;
	pthread_mutex_lock(&mu);
	kinds[k] = 0;
	pthread_mutex_unlock(&mu);
	LOG("disable %u\n", k);
	return 0;
}

EXPORT CUptiResult cuptiActivityEnableDriverApi(uint32_t cbid, uint8_t en)
{
	if (cbid >= 1024)
		return 1;
	drv_api[cbid] = en;
	return 0;
}

EXPORT CUptiResult cuptiActivityEnableRuntimeApi(uint32_t cbid, uint8_t en)
{
	if (cbid >= 1024)
		return 1;
	rt_api[cbid] = en;
	return 0;
}

EXPORT CUptiResult cuptiActivityFlushAll(uint32_t flag)
{
	const char *hang = getenv("MOCK_CUPTI_FORCED_FLUSH_HANG_MS");
	if ((flag & 1) && hang && *hang)
		usleep((useconds_t)strtoul(hang, NULL, 10) * 1000);
	pthread_mutex_lock(&mu);
	if (cur_buf && cur_used)
		complete_locked();
	pthread_mutex_unlock(&mu);
	return 0;
}

EXPORT CUptiResult cuptiActivityGetNextRecord(uint8_t *buf, size_t valid, void **rec)
{
	if (!buf || !rec)
		return 1;
	size_t off = 0;
	if (*rec) {
		uint8_t *p = *rec;
		uint32_t k;
		memcpy(&k, p, 4);
		off = (size_t)(p - buf) + rec_size(k);
	}
	if (off + 4 > valid) {
		*rec = NULL;
		return 12; /* CUPTI_ERROR_MAX_LIMIT_REACHED */
	}
	uint32_t k;
	memcpy(&k, buf + off, 4);
	size_t n = rec_size(k);
	if (!n || off + n > valid) {
		*rec = NULL;
		return 12;
	}
	*rec = buf + off;
	return 0;
}

EXPORT CUptiResult cuptiActivityGetNumDroppedRecords(void *ctx, uint32_t stream, size_t *dropped)
{
	(void)ctx;
	(void)stream;
	if (!dropped)
		return 1;
	pthread_mutex_lock(&mu);
	mock_init();
	*dropped = (size_t)pending_drops;
	pending_drops = 0;
	pthread_mutex_unlock(&mu);
	return 0;
}

EXPORT CUptiResult cuptiGetResultString(CUptiResult r, const char **s)
{
	(void)r;
	if (s)
		*s = "mock";
	return 0;
}

static const char mock_device_name[] = "Mock GPU H100";

EXPORT CUptiResult cuptiActivityEnableAndDump(uint32_t k)
{
	if (k != 8 && k != 9)
		return kind_ok(k) ? cuptiActivityEnable(k) : 21;
	pthread_mutex_lock(&mu);
	mock_init();
	kinds[k] = 1;
	uint8_t *r = alloc_rec_locked(k);
	if (r) {
		PUT(r, 0, uint32_t, k);
		if (k == 8) {
			PUT(r, 16, uint64_t, 80ull << 30);
			PUT(r, 44, uint32_t, 132);
			PUT(r, 104, uint32_t, 9);
			PUT(r, 108, uint32_t, 0);
			PUT(r, 112, uint32_t, 0);
			PUT(r, 136, const char *, mock_device_name);
		} else {
			PUT(r, 4, uint32_t, 1);
			PUT(r, 8, uint32_t, 0);
		}
	}
	pthread_mutex_unlock(&mu);
	LOG("enable-and-dump %u\n", k);
	return 0;
}

static int finalized;
EXPORT int mockcupti_finalized(void) { return __atomic_load_n(&finalized, __ATOMIC_RELAXED); }
EXPORT CUptiResult cuptiFinalize(void)
{
	__atomic_add_fetch(&finalized, 1, __ATOMIC_RELAXED);
	LOG("cuptiFinalize\n");
	return 0;
}

EXPORT CUptiResult cuptiGetTimestamp(uint64_t *t)
{
	if (!t)
		return 1;
	*t = now_ts();
	return 0;
}
