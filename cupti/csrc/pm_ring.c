#define _GNU_SOURCE
#include "pm_ring.h"

#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

uint64_t pm_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int pm_ring_create(struct pm_ring *r, const char *name, uint32_t source, uint64_t data_size)
{
	char nm[64] = "profilemate-";
	memset(r, 0, sizeof(*r));
	r->fd = -1;
	if (data_size < 64 || (data_size & (data_size - 1)))
		return -1;
	strncat(nm, name, sizeof(nm) - strlen(nm) - 1);
	int fd = (int)memfd_create(nm, MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t total = PM_RING_HEADER_SIZE + (size_t)data_size;
	if (ftruncate(fd, (off_t)total) != 0) {
		close(fd);
		return -1;
	}
	void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		close(fd);
		return -1;
	}
	r->hdr = (struct pm_ring_hdr *)m;
	r->data = (uint8_t *)m + PM_RING_HEADER_SIZE;
	r->data_size = data_size;
	r->map_size = total;
	r->fd = fd;
	r->hdr->version = 1;
	r->hdr->header_size = PM_RING_HEADER_SIZE;
	r->hdr->data_size = data_size;
	r->hdr->pid = (uint32_t)getpid();
	r->hdr->source = source;
	r->hdr->created_ns = pm_now_ns();
	__atomic_store_n(&r->hdr->producer_state, PM_STATE_INIT, __ATOMIC_RELEASE);
	/* The magic last: a tracer scanning /proc/PID/fd can open the memfd from memfd_create on;
	 * until the magic is there it retries (ring.ErrNotReady) instead of reading a half header. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	memcpy(r->hdr->magic, "PMRING\0\1", 8);
	return 0;
}

#if defined(__x86_64__) || defined(__i386__)
#define pm_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define pm_cpu_relax() __asm__ __volatile__("yield")
#else
#define pm_cpu_relax() ((void)0)
#endif

static void lock(struct pm_ring *r)
{
	while (__atomic_exchange_n(&r->lock, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&r->lock, __ATOMIC_RELAXED))
			pm_cpu_relax();
}
static void unlock(struct pm_ring *r) { __atomic_store_n(&r->lock, 0, __ATOMIC_RELEASE); }

static int reserve(struct pm_ring *r, uint64_t n, uint64_t *posp)
{
	struct pm_ring_hdr *h = r->hdr;
	uint64_t head = h->head; /* only writers (under the lock) change head */
	uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
	uint64_t pos = head & (r->data_size - 1);
	uint64_t contig = r->data_size - pos, need = n, pad = 0;
	if (n > contig) {
		pad = contig;
		need += pad;
	}
	if (n > r->data_size || head - tail > r->data_size || need > r->data_size - (head - tail)) {
		__atomic_store_n(&h->records_dropped, h->records_dropped + 1, __ATOMIC_RELAXED);
		__atomic_store_n(&h->bytes_dropped, h->bytes_dropped + n, __ATOMIC_RELAXED);
		return 0;
	}
	if (pad) {
		uint32_t ph[2] = {0, (uint32_t)pad};
		memcpy(r->data + pos, ph, 8);
		pos = 0;
	}
	*posp = pos;
	return (int)need;
}

static void commit(struct pm_ring *r, uint64_t need)
{
	struct pm_ring_hdr *h = r->hdr;
	__atomic_store_n(&h->records_written, h->records_written + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&h->head, h->head + need, __ATOMIC_RELEASE);
}

int pm_ring_write(struct pm_ring *r, const void *rec, uint32_t size)
{
	if (!r->hdr || size < 8 || (size & 7))
		return 0;
	uint64_t pos;
	lock(r);
	int need = reserve(r, size, &pos);
	if (need) {
		memcpy(r->data + pos, rec, size);
		commit(r, (uint64_t)need);
	}
	unlock(r);
	return need != 0;
}

int pm_ring_write2(struct pm_ring *r, void *fixed, uint32_t fixed_size, const void *tail, uint32_t tail_len)
{
	if (!r->hdr || fixed_size < 8 || (fixed_size & 7) || tail_len > (1u << 20))
		return 0;
	uint32_t size = (fixed_size + tail_len + 7u) & ~7u;
	((uint32_t *)fixed)[1] = size;
	uint64_t pos;
	lock(r);
	int need = reserve(r, size, &pos);
	if (need) {
		memcpy(r->data + pos, fixed, fixed_size);
		if (tail_len)
			memcpy(r->data + pos + fixed_size, tail, tail_len);
		memset(r->data + pos + fixed_size + tail_len, 0, size - fixed_size - tail_len);
		commit(r, (uint64_t)need);
	}
	unlock(r);
	return need != 0;
}

void pm_ring_close(struct pm_ring *r)
{
	if (r->hdr)
		munmap(r->hdr, r->map_size);
	if (r->fd >= 0)
		close(r->fd);
	r->hdr = NULL;
	r->data = NULL;
	r->fd = -1;
}
