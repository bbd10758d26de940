package export

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/profilemate/profilemate-trace/internal/record"
)

// KV block operations (py_kv_blocks.op).
const (
	kvAlloc     = 1
	kvFree      = 2
	kvTouch     = 3
	kvEvict     = 4
	kvEvictConn = 5
	kvReset     = 6
	kvCached    = 7
	// kvAttach is not a record op: the free count a late-attached hook found in a live
	// BlockPool (py_kv_config info num_free_blocks_at_attach), the first sample of that pool.
	kvAttach = 100
)

// kvAttachFree returns py_kv_config info's num_free_blocks_at_attach, if present.
func kvAttachFree(c record.PyKVConfig) (uint32, bool) {
	if len(c.Info) == 0 {
		return 0, false
	}
	var info struct {
		Free *float64 `json:"num_free_blocks_at_attach"`
	}
	if json.Unmarshal(c.Info, &info) != nil || info.Free == nil || *info.Free < 0 || *info.Free > math.MaxUint32 {
		return 0, false
	}
	return uint32(*info.Free), true
}

type kvPoolKey struct {
	pid  int
	pool uint32
}

type kvBlockState struct {
	alloc uint64 // when the block got its content (allocation); 0 unknown
	free  uint64 // when its ref_cnt last reached 0; 0 while in use
}

type kvEviction struct {
	ts, lifetime, idle uint64
	block              uint32
	key                kvPoolKey
	kind               string
}

type kvSample struct {
	ts          uint64
	used, total uint32
	free        uint32
	key         kvPoolKey
	op          uint32
}

type kvResult struct {
	samples   []kvSample
	evictions []kvEviction
	unknown   int // evictions of blocks allocated before the trace started
	allocs    int
	frees     int
	hits      int // blocks taken back from the free queue by a prefix hit
	shared    int
	totals    map[kvPoolKey]uint32
}

func blockIDs(b []byte) []uint32 {
	ids := make([]uint32, len(b)/4)
	for i := range ids {
		ids[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return ids
}

func (s *Session) kv() *kvResult {
	r := &kvResult{totals: map[kvPoolKey]uint32{}}
	for _, st := range s.Streams {
		pid := st.Meta.Pid
		for _, c := range st.KVConfigs {
			t := c.NumGPUBlocks
			if t > 0 {
				t-- // the null block is never allocated (vLLM's usage formula)
			}
			r.totals[kvPoolKey{pid, c.PoolID}] = t
		}
		blocks := append([]record.PyKVBlocks(nil), st.KVBlocks...)
		sort.SliceStable(blocks, func(i, k int) bool { return blocks[i].TsNS < blocks[k].TsNS })
		state := map[kvPoolKey]map[uint32]*kvBlockState{}
		last := map[kvPoolKey]uint32{}
		// A hook attached late saw the pool already in use: start from the free count it read
		// then, not from an empty cache, so usage is right from the first row.
		for _, c := range st.KVConfigs {
			free, ok := kvAttachFree(c)
			if !ok {
				continue
			}
			key := kvPoolKey{pid, c.PoolID}
			total := r.totals[key]
			used := uint32(0)
			if total > free {
				used = total - free
			}
			r.samples = append(r.samples, kvSample{ts: c.TsNS, used: used, total: total, free: free, key: key, op: kvAttach})
			last[key] = free
		}
		for _, b := range blocks {
			key := kvPoolKey{pid, b.PoolID}
			m := state[key]
			if m == nil {
				m = map[uint32]*kvBlockState{}
				state[key] = m
			}
			ids := blockIDs(b.BlockIds)
			evict := func(id uint32, bs *kvBlockState, kind string) {
				if bs == nil || bs.alloc == 0 {
					r.unknown++
					return
				}
				e := kvEviction{ts: b.TsNS, block: id, key: key, kind: kind}
				if b.TsNS > bs.alloc {
					e.lifetime = b.TsNS - bs.alloc
				}
				if bs.free > 0 && b.TsNS > bs.free {
					e.idle = b.TsNS - bs.free
				}
				r.evictions = append(r.evictions, e)
			}
			switch b.Op {
			case kvAlloc:
				r.allocs += len(ids)
				for _, id := range ids {
					m[id] = &kvBlockState{alloc: b.TsNS}
				}
			case kvFree:
				r.frees += len(ids)
				for _, id := range ids {
					if bs := m[id]; bs != nil {
						bs.free = b.TsNS
					} else {
						m[id] = &kvBlockState{free: b.TsNS}
					}
				}
			case kvTouch:
				n := int(b.Aux)
				if n > len(ids) {
					n = len(ids)
				}
				r.hits += n
				r.shared += len(ids) - n
				for _, id := range ids[:n] {
					if bs := m[id]; bs != nil {
						bs.free = 0
					} else {
						m[id] = &kvBlockState{}
					}
				}
			case kvEvict, kvEvictConn:
				kind := "evict"
				if b.Op == kvEvictConn {
					kind = "connector"
				}
				for _, id := range ids {
					evict(id, m[id], kind)
					delete(m, id)
				}
			case kvReset:
				if b.Aux == 1 {
					var freed []uint32
					for id, bs := range m {
						if bs.free > 0 {
							freed = append(freed, id)
						}
					}
					sort.Slice(freed, func(i, k int) bool { return freed[i] < freed[k] })
					for _, id := range freed {
						evict(id, m[id], "reset_prefix_cache")
						delete(m, id)
					}
				}
			}
			if b.Op == kvCached || b.Op == kvEvict || b.Op == kvEvictConn {
				continue // does not change the free count
			}
			total, ok := r.totals[key]
			if !ok {
				continue
			}
			if p, seen := last[key]; seen && p == b.NumFree {
				continue
			}
			last[key] = b.NumFree
			used := uint32(0)
			if total > b.NumFree {
				used = total - b.NumFree
			}
			r.samples = append(r.samples, kvSample{ts: b.TsNS, used: used, total: total, free: b.NumFree, key: key, op: b.Op})
		}
		// Without block records, fall back to the scheduler's free count per step.
		if len(blocks) == 0 && len(st.SchedSteps) > 0 && len(st.KVConfigs) > 0 {
			key := kvPoolKey{pid, st.KVConfigs[0].PoolID}
			total := r.totals[key]
			for _, x := range st.SchedSteps {
				used := uint32(0)
				if total > x.KVNumFree {
					used = total - x.KVNumFree
				}
				r.samples = append(r.samples, kvSample{ts: x.EndNS, used: used, total: total, free: x.KVNumFree, key: key, op: 0})
			}
		}
	}
	sort.SliceStable(r.samples, func(i, k int) bool { return r.samples[i].ts < r.samples[k].ts })
	sort.SliceStable(r.evictions, func(i, k int) bool { return r.evictions[i].ts < r.evictions[k].ts })
	return r
}

func (x kvSample) pct() float64 {
	if x.total == 0 {
		return 0
	}
	return 100 * float64(x.used) / float64(x.total)
}

var kvOpNames = map[uint32]string{0: "schedule", kvAlloc: "alloc", kvFree: "free", kvTouch: "prefix_hit", kvReset: "reset_prefix_cache", kvAttach: "attach"}

func kvTables(s *Session) []output {
	r := s.kv()
	usage := &table{name: "kv_cache_usage.csv", header: []string{"timestamp_sec", "usage_pct", "num_blocks", "total_blocks", "num_free", "pool_id", "pid", "op"}}
	for _, x := range r.samples {
		usage.add(f6(s.Sec(x.ts)), f2(x.pct()), itoa(x.used), itoa(x.total), itoa(x.free), itoa(x.key.pool), itoa(x.key.pid), kvOpNames[x.op])
	}
	ev := &table{name: "kv_cache_evictions.csv", header: []string{"timestamp_sec", "lifetime_sec", "idle_sec", "block_id", "pool_id", "pid", "kind"}}
	for _, e := range r.evictions {
		ev.add(f6(s.Sec(e.ts)), f3(float64(e.lifetime)/1e9), f3(float64(e.idle)/1e9), itoa(e.block), itoa(e.key.pool), itoa(e.key.pid), e.kind)
	}
	return []output{usage, ev, &blob{name: "kv_cache_summary.txt", data: []byte(kvSummary(s, r))}}
}

// kvHealth applies the documented ProfileMate ranges to the mean usage.
func kvUsageVerdict(mean float64) (string, string) {
	switch {
	case mean > 90:
		return "UNDER-PROVISIONED", "usage > 90%: increase gpu_memory_utilization"
	case mean < 40:
		return "OVER-PROVISIONED", "usage < 40%: reduce max_model_len"
	case mean >= 60 && mean <= 80:
		return "GOOD", "60-80%: good balance"
	default:
		return "OK", "between the documented ranges (good balance is 60-80%)"
	}
}

func kvSummary(s *Session, r *kvResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "KV cache summary (profilemate-trace, session %s)\n\n", s.Name)
	if len(r.totals) == 0 {
		b.WriteString("No KV cache data: the Python hook recorded no BlockPool (py_kv_config).\n")
		b.WriteString("Enable the hook's KV tracking (ENABLE_KV_CACHE_TRACKING, on by default) and run vLLM V1 under `profilemate-trace run`.\n")
		return b.String()
	}
	keys := make([]kvPoolKey, 0, len(r.totals))
	for k := range r.totals {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, k int) bool {
		if keys[i].pid != keys[k].pid {
			return keys[i].pid < keys[k].pid
		}
		return keys[i].pool < keys[k].pool
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "pool %d of pid %d: total_blocks %d\n", k.pool, k.pid, r.totals[k])
	}
	var u []float64
	for _, x := range r.samples {
		u = append(u, x.pct())
	}
	us := statsOf(u)
	fmt.Fprintf(&b, "\nusage samples: %d\n", us.Count)
	if us.Count > 0 {
		fmt.Fprintf(&b, "usage_pct: mean %.2f, p50 %.2f, p95 %.2f, p99 %.2f, min %.2f, peak %.2f\n", us.Mean, us.P50, us.P95, us.P99, us.Min, us.Max)
	}
	fmt.Fprintf(&b, "blocks allocated: %d, freed: %d, prefix-cache hits (blocks reused from the free queue): %d, shared blocks: %d\n", r.allocs, r.frees, r.hits, r.shared)
	fmt.Fprintf(&b, "evictions: %d (lifetime known), %d more of blocks allocated before tracing started\n", len(r.evictions), r.unknown)
	var lt, id []float64
	quick := 0
	for _, e := range r.evictions {
		lt = append(lt, float64(e.lifetime)/1e9)
		id = append(id, float64(e.idle)/1e9)
		if float64(e.lifetime)/1e9 < 10 {
			quick++
		}
	}
	ls, is := statsOf(lt), statsOf(id)
	if ls.Count > 0 {
		fmt.Fprintf(&b, "lifetime_sec: mean %.3f, p50 %.3f, p95 %.3f, p99 %.3f\n", ls.Mean, ls.P50, ls.P95, ls.P99)
		fmt.Fprintf(&b, "idle_sec: mean %.3f, p50 %.3f, p95 %.3f, p99 %.3f\n", is.Mean, is.P50, is.P95, is.P99)
	}
	b.WriteString("\nHealth (ProfileMate ranges):\n")
	if us.Count > 0 {
		v, why := kvUsageVerdict(us.Mean)
		fmt.Fprintf(&b, "  mean usage %.2f%%: %s (%s)\n", us.Mean, v, why)
		pv, pwhy := "OK", "peak within 90%"
		if us.Max > 90 {
			pv, pwhy = "HIGH", "peak > 90%: increase gpu_memory_utilization"
		} else if us.Max < 60 {
			pv, pwhy = "LOW", "peak < 60%: reduce max_model_len"
		}
		fmt.Fprintf(&b, "  peak usage %.2f%%: %s (%s)\n", us.Max, pv, pwhy)
	}
	if ls.Count > 0 {
		v := "GOOD"
		if ls.P50 <= 10 {
			v = "SHORT"
		}
		fmt.Fprintf(&b, "  median lifetime %.3f s: %s (lifetime_sec > 10: blocks are well-utilized)\n", ls.P50, v)
		v = "GOOD"
		if is.P50 >= 5 {
			v = "LONG"
		}
		fmt.Fprintf(&b, "  median idle %.3f s: %s (idle_sec < 5: efficient eviction)\n", is.P50, v)
		fmt.Fprintf(&b, "  %d blocks evicted within 10 s of allocation\n", quick)
	} else {
		b.WriteString("  no evictions with a known lifetime (few evictions overall: good cache sizing)\n")
	}
	return b.String()
}
