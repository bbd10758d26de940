//go:build ignore

// pm_tracer.bpf.c: attribute libcuda calls of traced processes to the Python phase that made them.
//
// Programs:
//   pm_cuda_entry[_multi]  uprobe on libcuda entry points (launches, graph launches, async copies
//                          and memsets, syncs); the attach cookie says which API and how to read
//                          its arguments (see PM_ARGS_* below and tracer/apis.go).
//   pm_cuda_return[_multi] uretprobe on the sync entry points only: CPU wait time.
//   pm_fork / pm_exec / pm_exit  follow the traced process tree.
//
// Every ring-buffer sample is a framed record of internal/record/schema/ebpf.json, byte for byte,
// so the tracer appends samples to the raw stream unchanged.
//
// The Python side: on each call the program finds the calling thread's PyThreadState (gilstate
// pthread key read through the thread pointer, else the fsbase->tstate map the tracer fills),
// walks at most pm_max_depth frames from the current frame towards the entry frame and stops at
// the first code object that the tracer marked as a phase function in pm_codes. Code objects it
// has not seen before are reported once per process (ebpf_code_seen) so user space can name them.
// Each CPU keeps a small 2-way set-associative cache of what earlier walks on it learnt (pm_chains:
// code object -> phase or not), so a frame whose code it holds needs no pm_codes lookup; its
// answers are exactly the lookups' answers, tagged with the code space (a process image) and
// pm_gen, which user space bumps whenever it changes pm_codes. On 3.11+ the frames come from one
// read of the data stack below the top frame where they lie in it (pm_blocks).
// Never the "current" tstate: PyTorch releases the GIL around the launch.

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_tracing.h"
#include "bpf_core_read.h"
#include "pm_records.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

// Cookie layout: bits 0-15 API id, 16-23 argument layout, 24-31 element size (memsets).
#define PM_ARGS_LAUNCH_STACK9 1 // (f, gx,gy,gz, bx,by,bz, shmem, stream, ...): f=1, stream=9th
#define PM_ARGS_LAUNCH_EX 2     // (const CUlaunchConfig *cfg, f, ...): f=2, stream=cfg->hStream
#define PM_ARGS_GRAPH 3         // (hGraphExec, hStream)
#define PM_ARGS_COPY 4          // (dst, src, bytes, hStream)
#define PM_ARGS_COPY2D 5        // (const CUDA_MEMCPY2D *p, hStream): bytes = WidthInBytes*Height
#define PM_ARGS_MEMSET 6        // (dst, value, N, hStream): bytes = N * elem size
#define PM_ARGS_SYNC_ARG1 7     // sync on arg 1 (stream, event, context)
#define PM_ARGS_SYNC_NONE 8     // cuCtxSynchronize()
#define PM_ARGS_IS_SYNC(a) ((a) >= PM_ARGS_SYNC_ARG1)

// Launch/sync flags (ebpf_launch.flags).
#define PM_F_WALK_LIMIT 1
#define PM_F_NO_TSTATE 2
#define PM_F_READ_FAIL 4
#define PM_F_GILSTATE 8
#define PM_F_NO_PYCONF 16
#define PM_F_CHAIN_KNOWN 32 // every code on the walk was known from earlier walks (pm_chains): no pm_codes lookup
#define PM_F_BLOCK 64       // 3.11+: the data stack below the top frame was read in one block

// Drop reasons (ebpf_drops.reason), index into pm_drops.
#define PM_DROP_RINGBUF 1
#define PM_DROP_READ 2
#define PM_DROP_WALK_LIMIT 3
#define PM_DROP_NO_TSTATE 4
#define PM_DROP_SYNC_FULL 5
#define PM_DROP_MAX 8

#define PM_MAX_DEPTH 96 // hard bound of the frame walk; pm_cfg.max_depth may lower it
#define PM_NONE 0xffffffffu
#define PM_WIN_MAX 80 // bytes of a frame read per step (3.12+: code@0 .. owner@70/74)
#define PM_CHAIN_SETS 128 // code objects remembered per CPU (pm_chains): 128 sets of 2
#define PM_BLOCK 8192       // 3.11+: bytes of the thread's data stack read in one go below the top frame

// Per-process CPython layout, written by the tracer at attach (tracer/pyconf.go mirrors it via bpf2go).
struct pm_pyconf {
	__u32 version;          // 0x030b etc.
	__u32 walk_kind;        // 1: 3.10 PyFrameObject chain, 2: 3.11+ _PyInterpreterFrame chain
	__s32 gilstate_key;     // pthread key of the gilstate binding, -1 if not usable
	__u32 pthread_specific; // offset of specific_1stblock in struct pthread (glibc x86-64: 0x310)
	__u32 tstate_frame;     // tstate -> frame pointer (3.10 frame, 3.11/3.12 cframe, 3.13+ current_frame)
	__u32 cframe_frame;     // cframe -> current_frame, PM_NONE when there is no cframe hop
	__u32 frame_code;       // frame -> code object (f_code / f_executable)
	__u32 frame_prev;       // frame -> previous frame (f_back / previous)
	__u32 frame_owner;      // frame -> owner byte, PM_NONE when absent
	__u32 owner_skip_min;   // skip frames whose owner >= this (C-stack shim / interpreter frames)
	__u64 code_mask;        // mask for tagged f_executable (3.14); ~0 otherwise
	__u32 win_off;          // the walk reads frame[win_off .. win_off+win_len) in one go; the
	__u32 win_len;          // frame_* offsets above lie inside it (win_len <= PM_WIN_MAX)
	__u32 space;            // code-object space: the pid whose exec created this image; a forked
	                        // child shares its parent's space (same code objects, same addresses)
	__u32 pad;
};

struct pm_code_key {
	__u32 space; // pm_pyconf.space
	__u32 pad;
	__u64 code;
};

struct pm_code_val {
	__u16 phase; // 0 = not a phase function
	__u16 flags;
	__u32 pad;
};

struct pm_tstate_key {
	__u32 pid;
	__u32 pad;
	__u64 fsbase;
};

struct pm_counter_key {
	__u32 pid;
	__u16 phase;
	__u16 api;
};

struct pm_counter_val {
	__u64 count;
	__u64 cpu_ns;
	__u64 bytes;
};

// What the walks on one CPU learnt about one code object: tag = code space << 32 | pm_gen at the
// time of the lookup; phase = pm_codes' phase for it (0 = not a phase).
struct pm_chain_ent {
	__u64 code;
	__u64 tag;
	__u16 phase;
	__u16 mru; // in a set's first entry: the way used last (the other one is replaced)
	__u32 pad;
};

struct pm_chain {
	struct pm_chain_ent e[2 * PM_CHAIN_SETS];
};

// The block of the data stack the walk read in one go (3.11+: a thread's frames are pushed one
// above the other in data-stack chunks, so most of a chain lies in the few KiB below the top).
struct pm_block {
	__u8 b[PM_BLOCK];
};

struct pm_sync_state {
	struct pm_rec_ebpf_sync rec;
};

// Load-time settings (rule 11: set through CollectionSpec.Variables before load).
volatile const __u32 pm_max_depth = 64;
volatile const __u32 pm_emit_launches = 1; // 0: counters only, no launch records
// Launch and sync records do not wake the reader until this much data is waiting (the reader
// also polls); a wakeup per record costs microseconds on the launching thread.
volatile const __u32 pm_wakeup_bytes = 256 << 10;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} pm_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);   // tgid (host)
	__type(value, __u32); // 1 = traced
} pm_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct pm_pyconf);
} pm_pyconfs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pm_tstate_key);
	__type(value, __u64);
} pm_tstates SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct pm_code_key);
	__type(value, struct pm_code_val);
} pm_codes SEC(".maps");

// Per-CPU walk memory (see the top of this file), 6 KiB per CPU. A uprobe program runs to the
// end on one CPU, so nothing else writes this CPU's copy meanwhile.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pm_chain);
} pm_chains SEC(".maps");

// Per-CPU data-stack block (see struct pm_block).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pm_block);
} pm_blocks SEC(".maps");

// pm_gen[0]: bumped by user space after every change to pm_codes; invalidates pm_chains.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} pm_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pm_counter_key);
	__type(value, struct pm_counter_val);
} pm_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32); // tid
	__type(value, struct pm_sync_state);
} pm_sync_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PM_DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pm_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);   // tid
	__type(value, __u64); // last miss report, ns
} pm_tstate_missed SEC(".maps");

// Force bpf2go to emit Go types for the structs user space writes.
const struct pm_pyconf *unused_pyconf __attribute__((unused));
const struct pm_code_key *unused_code_key __attribute__((unused));
const struct pm_code_val *unused_code_val __attribute__((unused));
const struct pm_tstate_key *unused_tstate_key __attribute__((unused));
const struct pm_counter_key *unused_counter_key __attribute__((unused));
const struct pm_counter_val *unused_counter_val __attribute__((unused));
// Keep the record layouts in the object's BTF (tracer/spec_test.go checks them against internal/record).
const struct pm_rec_ebpf_launch *unused_rec_launch __attribute__((unused));
const struct pm_rec_ebpf_sync *unused_rec_sync __attribute__((unused));
const struct pm_rec_ebpf_code_seen *unused_rec_code_seen __attribute__((unused));
const struct pm_rec_ebpf_tstate_miss *unused_rec_tstate_miss __attribute__((unused));
const struct pm_rec_ebpf_proc *unused_rec_proc __attribute__((unused));

static __always_inline void pm_drop(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&pm_drops, &reason);
	if (c)
		*c += 1;
}

static __always_inline __u64 pm_wakeup(void)
{
	return bpf_ringbuf_query(&pm_events, BPF_RB_AVAIL_DATA) >= pm_wakeup_bytes ? BPF_RB_FORCE_WAKEUP
										   : BPF_RB_NO_WAKEUP;
}

static __always_inline void pm_hdr(struct pm_rec_hdr *h, __u16 type, __u32 size)
{
	h->type = type;
	h->flags = 0;
	h->size = size;
}

static __always_inline __u64 pm_fsbase(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
#if defined(__TARGET_ARCH_x86)
	return BPF_CORE_READ(t, thread.fsbase);
#elif defined(__TARGET_ARCH_arm64)
	return BPF_CORE_READ(t, thread.uw.tp_value);
#else
	return 0;
#endif
}

struct pm_walk {
	__u64 py_code;
	__u64 phase_code;
	__u16 phase;
	__u16 depth;
	__u16 flags;
};

static __always_inline void pm_tstate_miss(__u32 pid, __u32 tid, __u64 fsbase, __u64 now)
{
	__u64 *last = bpf_map_lookup_elem(&pm_tstate_missed, &tid);
	if (last && now - *last < 1000000000ull)
		return;
	bpf_map_update_elem(&pm_tstate_missed, &tid, &now, BPF_ANY);
	struct pm_rec_ebpf_tstate_miss *r = bpf_ringbuf_reserve(&pm_events, sizeof(*r), 0);
	if (!r) {
		pm_drop(PM_DROP_RINGBUF);
		return;
	}
	pm_hdr(&r->hdr, PM_REC_EBPF_TSTATE_MISS, sizeof(*r));
	r->ts_ns = now;
	r->fsbase = fsbase;
	r->pid = pid;
	r->tid = tid;
	bpf_ringbuf_submit(r, 0);
}

// pm_code_seen handles a code object missing from pm_codes: it tells user space (which names it
// and upgrades it to a phase if it is one) and remembers it as "not a phase", in that order, so a
// code object is never remembered unreported: with the ring buffer full it stays unknown, for a
// later walk to report. Returns 1 when the code object is in pm_codes now.
static __always_inline int pm_code_seen(struct pm_code_key *ck, __u32 pid, __u32 tid, __u64 now)
{
	struct pm_rec_ebpf_code_seen *r = bpf_ringbuf_reserve(&pm_events, sizeof(*r), 0);
	if (!r) {
		pm_drop(PM_DROP_RINGBUF);
		return 0;
	}
	struct pm_code_val nv = {};
	if (bpf_map_update_elem(&pm_codes, ck, &nv, BPF_NOEXIST) != 0) {
		// another thread's walk was first (it reports it), or the map is full
		bpf_ringbuf_discard(r, 0);
		return bpf_map_lookup_elem(&pm_codes, ck) != 0;
	}
	pm_hdr(&r->hdr, PM_REC_EBPF_CODE_SEEN, sizeof(*r));
	r->ts_ns = now;
	r->code = ck->code;
	r->pid = pid;
	r->tid = tid;
	bpf_ringbuf_submit(r, 0);
	return 1;
}

static __always_inline __u64 pm_read_u64(__u64 addr, __u16 *flags)
{
	__u64 v = 0;
	if (bpf_probe_read_user(&v, sizeof(v), (const void *)addr) != 0) {
		*flags |= PM_F_READ_FAIL;
		return 0;
	}
	return v;
}

struct pm_walk_ctx {
	__u32 pid, tid, space, pad;
	__u64 now;
	__u64 frame;
	__u32 code_off, prev_off, owner_off, skip_min, win_off, win_len;
	__u64 mask;
	__u32 emitted;
	__u32 stop;
	__u64 tag;             // code space << 32 | pm_gen
	struct pm_chain *ch;   // this CPU's walk memory
	struct pm_block *blk;  // the data-stack block read below the top frame, or NULL
	__u64 blk_lo;          // its user address (8-aligned); it holds [blk_lo, blk_lo + blk_len)
	__u32 blk_len;
	__u32 pad3;
	__u32 looked_up;       // 1 once this walk made a pm_codes lookup
	__u32 pad2;
	struct pm_walk *w;
};

// pm_walk_step reads one frame; returns 1 to stop the walk.
static long pm_walk_step(__u64 i, void *arg)
{
	struct pm_walk_ctx *c = arg;
	struct pm_walk *w = c->w;
	__u64 frame = c->frame;
	if (!frame) {
		c->stop = 1;
		return 1;
	}
	// One read per frame: code, previous and owner come from the same window — taken from
	// the data-stack block when the frame lies in it, else read on its own.
	__u8 buf[128] __attribute__((aligned(8))) = {}; // masks below index inside 128 bytes
	__u32 len = c->win_len;
	if (len == 0 || len > PM_WIN_MAX) {
		c->stop = 1;
		return 1;
	}
	// Offsets are multiples of 8 inside the window (checked by the tracer): index u64 words,
	// masked so the verifier sees the bound.
	__u32 co = ((c->code_off - c->win_off) >> 3) & 15, po = ((c->prev_off - c->win_off) >> 3) & 15;
	__u32 oo = (c->owner_off - c->win_off) & 0x7f;
	__u64 code, prev;
	__u8 owner;
	struct pm_block *blk = c->blk;
	__u64 at = frame + c->win_off - c->blk_lo; // wraps to huge when the frame is below the block
	if (blk && (frame & 7) == 0 && at <= c->blk_len - 128 && c->blk_len >= 128) {
		asm volatile("" : "+r"(blk)); // address arithmetic after the null check
		__u32 x = (__u32)at & (PM_BLOCK - 1);
		if (x > PM_BLOCK - 128)
			x = PM_BLOCK - 128;
		__u8 *win = &blk->b[x];
		code = *(__u64 *)(win + 8 * co);
		prev = *(__u64 *)(win + 8 * po);
		owner = win[oo];
	} else {
		if (bpf_probe_read_user(buf, len, (const void *)(frame + c->win_off)) != 0) {
			w->flags |= PM_F_READ_FAIL;
			pm_drop(PM_DROP_READ);
			c->stop = 1;
			return 1;
		}
		__u64 *words = (__u64 *)buf;
		code = words[co];
		prev = words[po];
		owner = buf[oo];
	}
	w->depth = i + 1;
	c->frame = prev;
	if (c->owner_off != PM_NONE && owner >= c->skip_min)
		return 0;
	code &= c->mask;
	if (!code)
		return 0;
	if (!w->py_code)
		w->py_code = code;
	// This CPU's set for this code: if a way holds this code, looked up under the same space
	// and generation, its answer is pm_codes' answer, without the lookup.
	struct pm_chain_ent *e = 0, *e0 = 0;
	struct pm_chain *ch = c->ch;
	int hit = 0;
	if (ch) {
		// keep the address arithmetic after the null check (the verifier rejects it before)
		asm volatile("" : "+r"(ch));
		__u32 set = (__u32)((code * 0x9E3779B97F4A7C15ull) >> 57) & (PM_CHAIN_SETS - 1);
		e0 = &ch->e[2 * set];
		struct pm_chain_ent *e1 = &ch->e[2 * set + 1];
		if (e0->code == code && e0->tag == c->tag) {
			e = e0, hit = 1;
			e0->mru = 0;
		} else if (e1->code == code && e1->tag == c->tag) {
			e = e1, hit = 1;
			e0->mru = 1;
		} else {
			e = e0->mru ? e0 : e1; // replace the way not used last
			e0->mru = e == e1;
		}
	}
	__u16 phase = 0;
	if (hit) {
		phase = e->phase;
	} else {
		c->looked_up = 1; // a flag, not a count: the verifier must see the loop state converge
		struct pm_code_key ck = {.space = c->space, .code = code};
		struct pm_code_val *cv = bpf_map_lookup_elem(&pm_codes, &ck);
		int known = 1;
		if (cv) {
			phase = cv->phase;
		} else if (c->emitted < 16) {
			// First sight in this process. At most 16 reports per walk: the others stay
			// unknown (not in pm_codes, not remembered) and are reported by later walks.
			c->emitted++;
			known = pm_code_seen(&ck, c->pid, c->tid, c->now);
		} else {
			known = 0;
		}
		if (e && known) {
			e->code = code;
			e->tag = c->tag;
			e->phase = phase;
		}
	}
	if (phase) {
		w->phase = phase;
		w->phase_code = code;
		c->stop = 1;
		return 1;
	}
	return 0;
}

// pm_python_walk fills w with the innermost Python code object and the innermost phase frame.
static __always_inline void pm_python_walk(__u32 pid, __u32 tid, __u64 now, struct pm_walk *w)
{
	struct pm_pyconf *pc = bpf_map_lookup_elem(&pm_pyconfs, &pid);
	if (!pc) {
		w->flags |= PM_F_NO_PYCONF;
		return;
	}
	__u64 fsbase = pm_fsbase();
	__u64 tstate = 0;
	if (pc->gilstate_key >= 0 && pc->gilstate_key < 32 && fsbase) {
		__u64 slot = fsbase + pc->pthread_specific + 16 * (__u64)pc->gilstate_key + 8;
		if (bpf_probe_read_user(&tstate, sizeof(tstate), (const void *)slot) == 0 && tstate)
			w->flags |= PM_F_GILSTATE;
		else
			tstate = 0;
	}
	if (!tstate) {
		struct pm_tstate_key k = {.pid = pid, .fsbase = fsbase};
		__u64 *ts = bpf_map_lookup_elem(&pm_tstates, &k);
		if (ts)
			tstate = *ts;
	}
	if (!tstate) {
		w->flags |= PM_F_NO_TSTATE;
		pm_drop(PM_DROP_NO_TSTATE);
		pm_tstate_miss(pid, tid, fsbase, now);
		return;
	}

	__u64 frame = pm_read_u64(tstate + pc->tstate_frame, &w->flags);
	if (frame && pc->cframe_frame != PM_NONE)
		frame = pm_read_u64(frame + pc->cframe_frame, &w->flags);

	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&pm_gen, &zero);
	struct pm_chain *ch = bpf_map_lookup_elem(&pm_chains, &zero);
	// 3.11+: read the data stack below the top frame's window in one go: 8 KiB; when that fails
	// (the chunk starts closer and the memory below it is not mapped), from the page below the
	// top frame's page, then from the top frame's own page, which is mapped.
	struct pm_block *blk = 0;
	__u64 blk_lo = 0;
	__u32 blk_len = 0;
	if (pc->walk_kind == 2 && frame) {
		blk = bpf_map_lookup_elem(&pm_blocks, &zero);
		if (blk) {
			__u64 hi = (frame + pc->win_off + 128 + 7) & ~7ull; // the top frame's window too
			__u64 page = (frame + pc->win_off) & ~4095ull;
			__u64 lo[3] = {hi - PM_BLOCK, page - 4096, page};
			blk_len = 0;
			for (int k = 0; k < 3 && !blk_len; k++) {
				__u64 n = hi - lo[k];
				if (n < 128 || n > PM_BLOCK || (k > 0 && lo[k] <= lo[0]))
					continue;
				if (bpf_probe_read_user(blk->b, n & (2 * PM_BLOCK - 1), (const void *)lo[k]) == 0)
					blk_lo = lo[k], blk_len = n;
			}
			if (blk_len)
				w->flags |= PM_F_BLOCK;
			else
				blk = 0;
		}
	}
	struct pm_walk_ctx c = {
		.pid = pid,
		.tid = tid,
		.tag = (__u64)pc->space << 32 | (gen ? *gen : 0),
		.ch = ch,
		.blk = blk,
		.blk_lo = blk_lo,
		.blk_len = blk_len,
		.space = pc->space,
		.now = now,
		.frame = frame,
		.code_off = pc->frame_code,
		.prev_off = pc->frame_prev,
		.owner_off = pc->frame_owner,
		.skip_min = pc->owner_skip_min,
		.win_off = pc->win_off,
		.win_len = pc->win_len,
		.mask = pc->code_mask,
		.w = w,
	};
	__u32 limit = pm_max_depth;
	if (limit > PM_MAX_DEPTH)
		limit = PM_MAX_DEPTH;
	// bpf_loop (5.17+): the verifier checks the step once instead of unrolling the walk.
	bpf_loop(limit, pm_walk_step, &c, 0);
	if (!c.looked_up && w->depth > 0)
		w->flags |= PM_F_CHAIN_KNOWN;
	if (c.frame && !c.stop) {
		w->flags |= PM_F_WALK_LIMIT;
		pm_drop(PM_DROP_WALK_LIMIT);
	}
}

static __always_inline void pm_count(__u32 pid, __u16 phase, __u16 api, __u64 cpu_ns, __u64 bytes)
{
	struct pm_counter_key k = {.pid = pid, .phase = phase, .api = api};
	struct pm_counter_val *v = bpf_map_lookup_elem(&pm_counters, &k);
	if (v) {
		v->count += 1;
		v->cpu_ns += cpu_ns;
		v->bytes += bytes;
		return;
	}
	struct pm_counter_val nv = {.count = 1, .cpu_ns = cpu_ns, .bytes = bytes};
	if (bpf_map_update_elem(&pm_counters, &k, &nv, BPF_NOEXIST) != 0) {
		v = bpf_map_lookup_elem(&pm_counters, &k);
		if (v) {
			v->count += 1;
			v->cpu_ns += cpu_ns;
			v->bytes += bytes;
		}
	}
}

static __always_inline int pm_entry(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32, tid = (__u32)id;
	if (!bpf_map_lookup_elem(&pm_pids, &pid))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u16 api = cookie & 0xffff;
	__u32 args = (cookie >> 16) & 0xff;
	__u32 esize = (cookie >> 24) & 0xff;

	__u64 handle = 0, stream = 0, bytes = 0;
	__u16 rflags = 0;
	switch (args) {
	case PM_ARGS_LAUNCH_STACK9:
		handle = PT_REGS_PARM1(ctx);
#if defined(__TARGET_ARCH_x86)
		stream = pm_read_u64(PT_REGS_SP(ctx) + 24, &rflags); // ret addr, args 7, 8, 9
#elif defined(__TARGET_ARCH_arm64)
		stream = pm_read_u64(PT_REGS_SP(ctx), &rflags); // x0-x7, then 9th on the stack
#endif
		break;
	case PM_ARGS_LAUNCH_EX:
		handle = PT_REGS_PARM2(ctx);
		stream = pm_read_u64(PT_REGS_PARM1(ctx) + 32, &rflags); // CUlaunchConfig.hStream
		break;
	case PM_ARGS_GRAPH:
		handle = PT_REGS_PARM1(ctx);
		stream = PT_REGS_PARM2(ctx);
		break;
	case PM_ARGS_COPY:
		handle = PT_REGS_PARM1(ctx);
		bytes = PT_REGS_PARM3(ctx);
		stream = PT_REGS_PARM4(ctx);
		break;
	case PM_ARGS_COPY2D: {
		__u64 p = PT_REGS_PARM1(ctx);
		handle = p;
		bytes = pm_read_u64(p + 112, &rflags) * pm_read_u64(p + 120, &rflags);
		stream = PT_REGS_PARM2(ctx);
		break;
	}
	case PM_ARGS_MEMSET:
		handle = PT_REGS_PARM1(ctx);
		bytes = PT_REGS_PARM3(ctx) * (esize ? esize : 1);
		stream = PT_REGS_PARM4(ctx);
		break;
	case PM_ARGS_SYNC_ARG1:
		handle = PT_REGS_PARM1(ctx);
		break;
	default:
		break;
	}

	struct pm_walk w = {};
	pm_python_walk(pid, tid, now, &w);
	w.flags |= rflags;

	if (PM_ARGS_IS_SYNC(args)) {
		struct pm_sync_state st = {};
		pm_hdr(&st.rec.hdr, PM_REC_EBPF_SYNC, sizeof(st.rec));
		st.rec.start_ns = now;
		st.rec.handle = handle;
		st.rec.py_code = w.py_code;
		st.rec.phase_code = w.phase_code;
		st.rec.pid = pid;
		st.rec.tid = tid;
		st.rec.api = api;
		st.rec.phase = w.phase;
		st.rec.depth = w.depth;
		st.rec.flags = w.flags;
		if (bpf_map_update_elem(&pm_sync_pending, &tid, &st, BPF_ANY) != 0) {
			pm_drop(PM_DROP_SYNC_FULL);
			pm_count(pid, w.phase, api, 0, 0);
		}
		return 0;
	}

	pm_count(pid, w.phase, api, 0, bytes);
	if (!pm_emit_launches)
		return 0;
	struct pm_rec_ebpf_launch *r = bpf_ringbuf_reserve(&pm_events, sizeof(*r), 0);
	if (!r) {
		pm_drop(PM_DROP_RINGBUF);
		return 0;
	}
	pm_hdr(&r->hdr, PM_REC_EBPF_LAUNCH, sizeof(*r));
	r->ts_ns = now;
	r->handle = handle;
	r->stream = stream;
	r->bytes = bytes;
	r->py_code = w.py_code;
	r->phase_code = w.phase_code;
	r->pid = pid;
	r->tid = tid;
	r->api = api;
	r->phase = w.phase;
	r->depth = w.depth;
	r->flags = w.flags;
	bpf_ringbuf_submit(r, pm_wakeup());
	return 0;
}

static __always_inline int pm_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct pm_sync_state *st = bpf_map_lookup_elem(&pm_sync_pending, &tid);
	if (!st)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct pm_rec_ebpf_sync *r = bpf_ringbuf_reserve(&pm_events, sizeof(*r), 0);
	__u64 wait = now - st->rec.start_ns;
	pm_count(st->rec.pid, st->rec.phase, st->rec.api, wait, 0);
	if (!r) {
		pm_drop(PM_DROP_RINGBUF);
		bpf_map_delete_elem(&pm_sync_pending, &tid);
		return 0;
	}
	__builtin_memcpy(r, &st->rec, sizeof(*r));
	r->end_ns = now;
	r->result = (__s32)PT_REGS_RC(ctx);
	bpf_ringbuf_submit(r, pm_wakeup());
	bpf_map_delete_elem(&pm_sync_pending, &tid);
	return 0;
}

SEC("uprobe")
int pm_cuda_entry(struct pt_regs *ctx) { return pm_entry(ctx); }

SEC("uretprobe")
int pm_cuda_return(struct pt_regs *ctx) { return pm_return(ctx); }

SEC("uprobe.multi")
int pm_cuda_entry_multi(struct pt_regs *ctx) { return pm_entry(ctx); }

SEC("uretprobe.multi")
int pm_cuda_return_multi(struct pt_regs *ctx) { return pm_return(ctx); }

static __always_inline void pm_proc_event(__u32 pid, __u32 ppid, __u32 event)
{
	struct pm_rec_ebpf_proc *r = bpf_ringbuf_reserve(&pm_events, sizeof(*r), 0);
	if (!r) {
		pm_drop(PM_DROP_RINGBUF);
		return;
	}
	pm_hdr(&r->hdr, PM_REC_EBPF_PROC, sizeof(*r));
	r->ts_ns = bpf_ktime_get_ns();
	r->pid = pid;
	r->ppid = ppid;
	r->event = event;
	r->reserved = 0;
	bpf_ringbuf_submit(r, 0);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(pm_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (ptgid == ctgid) // a new thread, not a new process
		return 0;
	__u32 *traced = bpf_map_lookup_elem(&pm_pids, &ptgid);
	if (!traced)
		return 0;
	__u32 v = *traced;
	bpf_map_update_elem(&pm_pids, &ctgid, &v, BPF_ANY);
	// The child shares the parent's memory image until it execs: same CPython layout.
	struct pm_pyconf *pc = bpf_map_lookup_elem(&pm_pyconfs, &ptgid);
	if (pc) {
		struct pm_pyconf copy = *pc;
		bpf_map_update_elem(&pm_pyconfs, &ctgid, &copy, BPF_ANY);
	}
	pm_proc_event(ctgid, ptgid, 1);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(pm_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);
	if (!bpf_map_lookup_elem(&pm_pids, &tgid))
		return 0;
	// A new image: the old CPython layout and code objects are gone.
	bpf_map_delete_elem(&pm_pyconfs, &tgid);
	pm_proc_event(tgid, 0, 2);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(pm_exit, struct task_struct *p)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);
	__u32 pid = BPF_CORE_READ(p, pid);
	if (pid != tgid) // only the group leader marks the process gone
		return 0;
	if (!bpf_map_lookup_elem(&pm_pids, &tgid))
		return 0;
	pm_proc_event(tgid, 0, 3);
	return 0;
}
