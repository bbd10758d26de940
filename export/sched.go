package export

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/profilemate/profilemate-trace/internal/record"
)

// Batch utilization: one row per Scheduler.schedule() call.
func batchTables(s *Session) []output {
	t := &table{name: "batch_utilization.csv", header: []string{
		"timestamp_sec", "step_id", "num_scheduled_tokens", "max_num_batched_tokens", "token_utilization_pct",
		"num_scheduled_reqs", "max_num_seqs", "seq_utilization_pct", "num_waiting", "num_running",
		"num_new_reqs", "num_resumed_reqs", "num_preempted", "num_prefill_reqs", "num_prefill_tokens",
		"num_decode_reqs", "num_decode_tokens", "kv_num_free", "num_finished", "schedule_time_us", "pid",
	}}
	type row struct {
		st  record.PySchedStep
		pid int
	}
	var rows []row
	for _, st := range s.Streams {
		for _, x := range st.SchedSteps {
			rows = append(rows, row{x, st.Meta.Pid})
		}
	}
	sort.SliceStable(rows, func(i, k int) bool { return rows[i].st.StartNS < rows[k].st.StartNS })
	var tok, seq, sched []float64
	under, underQueued, idle := 0, 0, 0
	for _, r := range rows {
		x := r.st
		tu, su := utilPct(x.ScheduledTokens, x.MaxNumBatchedTokens), utilPct(x.ScheduledReqs, x.MaxNumSeqs)
		var d uint64
		if x.EndNS > x.StartNS {
			d = x.EndNS - x.StartNS
		}
		t.add(f6(s.Sec(x.StartNS)), itoa(x.StepID), itoa(x.ScheduledTokens), itoa(x.MaxNumBatchedTokens), f2(tu),
			itoa(x.ScheduledReqs), itoa(x.MaxNumSeqs), f2(su), itoa(x.NumWaiting), itoa(x.NumRunning),
			itoa(x.NumNewReqs), itoa(x.NumResumedReqs), itoa(x.NumPreempted), itoa(x.NumPrefillReqs), itoa(x.NumPrefillTokens),
			itoa(x.NumDecodeReqs), itoa(x.NumDecodeTokens), itoa(x.KVNumFree), itoa(x.NumFinished), us(d), itoa(r.pid))
		if x.ScheduledTokens == 0 {
			idle++
			continue
		}
		tok = append(tok, tu)
		seq = append(seq, su)
		sched = append(sched, float64(d)/1e3)
		if tu < underutilThreshold {
			under++
			if x.NumWaiting > 0 {
				underQueued++
			}
		}
	}
	ts, ss := statsOf(tok), statsOf(seq)
	sum := map[string]any{
		"steps":                      len(rows),
		"idle_steps":                 idle,
		"token_utilization_pct":      ts,
		"seq_utilization_pct":        ss,
		"mean_token_utilization_pct": ts.Mean,
		"mean_seq_utilization_pct":   ss.Mean,
		"underutilized_steps":        under,
		"underutilized_with_queue":   underQueued,
		"underutilized_threshold":    fmt.Sprintf("token utilization < %.0f%% of max_num_batched_tokens (non-idle steps)", underutilThreshold),
		"schedule_time_us":           statsOf(sched),
		"health_ranges": map[string]string{
			"underutilized_with_queue": "should be ~0: requests waited while the batch had room (KV cache full, or max_num_seqs reached)",
			"token_utilization_pct":    "low under load means small batches: raise max_num_seqs or send more concurrent requests",
		},
	}
	if len(rows) == 0 {
		sum["missing"] = "no py_sched_step records: the Python hook's scheduler patch did not run (ENABLE_BATCH_UTILIZATION_TRACKING, vLLM V1 scheduler)"
	}
	return []output{t, jsonBlob("batch_utilization_summary.json", sum)}
}

const underutilThreshold = 50.0

func utilPct(a, b uint32) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

var preemptReasons = map[uint32]string{0: "unknown", 1: "kv_cache_exhausted", 2: "reset_prefix_cache", 3: "other"}

func preemptReason(r uint32) string {
	if n, ok := preemptReasons[r]; ok {
		return n
	}
	return "reason_" + strconv.Itoa(int(r))
}

var finishReasons = map[uint32]string{0: "other", 1: "stopped", 2: "length_capped", 3: "aborted", 4: "ignored", 5: "error", 6: "repetition"}

type reqLife struct {
	id                                          string
	pid                                         int
	arrival, queued, scheduled, first, finished uint64
	prompt, output                              uint32
	preemptions                                 int
	finish                                      string
	lastPreempt                                 uint64
	resumeDelays                                []uint64
}

// Preemptions and request lifecycles (scheduler process).
func preemptTables(s *Session) []output {
	ev := &table{name: "preemption_events.csv", header: []string{"timestamp_sec", "event", "request_id", "reason", "step_id",
		"num_computed_tokens", "num_preemptions", "resume_delay_sec", "pid"}}
	lc := &table{name: "request_lifecycle.csv", header: []string{"request_id", "arrival_sec", "scheduled_sec", "first_token_sec", "finished_sec",
		"queue_time_sec", "ttft_sec", "e2e_sec", "num_prompt_tokens", "num_output_tokens", "num_preemptions", "finish_reason", "queued_sec", "pid"}}
	type evRow struct {
		ts    uint64
		cells []string
	}
	var evs []evRow
	reasons := map[string]int{}
	var delays []float64
	var lost uint64
	reqs := map[[2]uint64]*reqLife{}
	var order [][2]uint64
	steps := 0
	for _, st := range s.Streams {
		pid := st.Meta.Pid
		if n := len(st.SchedSteps); n > 0 {
			steps += n
		}
		for _, p := range st.Preempts {
			reasons[preemptReason(p.Reason)]++
			lost += uint64(p.NumComputedTokens)
			evs = append(evs, evRow{p.TsNS, []string{f6(s.Sec(p.TsNS)), "preempted", string(p.ReqID), preemptReason(p.Reason), itoa(p.StepID),
				itoa(p.NumComputedTokens), itoa(p.NumPreemptions), "", itoa(pid)}})
		}
		events := append([]record.PyRequestEvent(nil), st.ReqEvents...)
		sort.SliceStable(events, func(i, k int) bool { return events[i].TsNS < events[k].TsNS })
		for _, e := range events {
			key := [2]uint64{uint64(pid), e.ReqHash}
			r := reqs[key]
			if r == nil {
				r = &reqLife{id: string(e.ReqID), pid: pid}
				reqs[key] = r
				order = append(order, key)
			}
			if r.id == "" {
				r.id = string(e.ReqID)
			}
			if e.NumPromptTokens > 0 {
				r.prompt = e.NumPromptTokens
			}
			if e.NumOutputTokens > r.output {
				r.output = e.NumOutputTokens
			}
			set := func(p *uint64) {
				if *p == 0 {
					*p = e.TsNS
				}
			}
			switch e.Event {
			case 1:
				set(&r.arrival)
			case 2:
				set(&r.queued)
			case 3:
				set(&r.scheduled)
			case 4:
				set(&r.first)
			case 5:
				r.preemptions++
				r.lastPreempt = e.TsNS
			case 6:
				d := ""
				if r.lastPreempt > 0 && e.TsNS >= r.lastPreempt {
					dl := e.TsNS - r.lastPreempt
					r.resumeDelays = append(r.resumeDelays, dl)
					delays = append(delays, float64(dl)/1e9)
					d = f6(float64(dl) / 1e9)
					r.lastPreempt = 0
				}
				evs = append(evs, evRow{e.TsNS, []string{f6(s.Sec(e.TsNS)), "resumed", r.id, "", itoa(e.StepID), "", itoa(r.preemptions), d, itoa(pid)}})
			case 7:
				set(&r.finished)
				r.finish = finishReasons[e.Detail]
			}
		}
	}
	sort.SliceStable(evs, func(i, k int) bool { return evs[i].ts < evs[k].ts })
	for _, e := range evs {
		ev.add(e.cells...)
	}
	sec := func(t uint64) string {
		if t == 0 {
			return ""
		}
		return f6(s.Sec(t))
	}
	diff := func(a, b uint64) string {
		if a == 0 || b == 0 || b < a {
			return ""
		}
		return f6(float64(b-a) / 1e9)
	}
	sort.SliceStable(order, func(i, k int) bool {
		a, b := reqs[order[i]], reqs[order[k]]
		return firstNonZero(a.arrival, a.queued, a.scheduled) < firstNonZero(b.arrival, b.queued, b.scheduled)
	})
	var ttft, e2e, queue []float64
	preempted := 0
	for _, k := range order {
		r := reqs[k]
		if r.preemptions > 0 {
			preempted++
		}
		if r.arrival > 0 && r.first > r.arrival {
			ttft = append(ttft, float64(r.first-r.arrival)/1e9)
		}
		if r.arrival > 0 && r.finished > r.arrival {
			e2e = append(e2e, float64(r.finished-r.arrival)/1e9)
		}
		if r.arrival > 0 && r.scheduled > r.arrival {
			queue = append(queue, float64(r.scheduled-r.arrival)/1e9)
		}
		lc.add(r.id, sec(r.arrival), sec(r.scheduled), sec(r.first), sec(r.finished), diff(r.arrival, r.scheduled), diff(r.arrival, r.first),
			diff(r.arrival, r.finished), itoa(r.prompt), itoa(r.output), itoa(r.preemptions), r.finish, sec(r.queued), itoa(r.pid))
	}
	total := 0
	for _, n := range reasons {
		total += n
	}
	sum := map[string]any{
		"total_preemptions":           total,
		"requests":                    len(order),
		"requests_preempted":          preempted,
		"preemption_rate_per_request": rate(float64(total), float64(len(order))),
		"preemptions_per_1000_steps":  rate(1000*float64(total), float64(steps)),
		"reasons":                     reasons,
		"resume_delay_sec":            statsOf(delays),
		"lost_computed_tokens":        lost,
		"ttft_sec":                    statsOf(ttft),
		"e2e_sec":                     statsOf(e2e),
		"queue_time_sec":              statsOf(queue),
		"health_ranges": map[string]string{
			"total_preemptions": "ideally 0; kv_cache_exhausted preemptions mean the KV cache is too small for the load: increase gpu_memory_utilization, lower max_num_seqs",
		},
	}
	if len(order) == 0 && total == 0 {
		sum["missing"] = "no request or preemption records: the hook's scheduler patch did not run (ENABLE_PREEMPTION_TRACKING, vLLM V1 scheduler)"
	}
	return []output{ev, lc, jsonBlob("preemption_summary.json", sum)}
}

func rate(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round3(a / b)
}

func firstNonZero(v ...uint64) uint64 {
	for _, x := range v {
		if x != 0 {
			return x
		}
	}
	return 0
}

var scopeNames = map[uint32]string{1: "scheduling", 2: "input_prep", 3: "forward_launch", 4: "sampling", 5: "output_processing",
	6: "bookkeeping", 7: "engine_step", 8: "update_from_output", 9: "other"}

func scopeName(x uint32) string {
	if n, ok := scopeNames[x]; ok {
		return n
	}
	return "scope_" + strconv.Itoa(int(x))
}

// CPU operations: the hook's CPU spans plus GPU waits seen by CUPTI/eBPF.
func cpuTables(s *Session) []output {
	t := &table{name: "cpu_operations_timing.csv", header: []string{"timestamp_sec", "operation", "duration_us", "step_id", "name", "pid", "tid"}}
	type row struct {
		ts    uint64
		cells []string
	}
	var rows []row
	by := map[string][]float64{}
	for _, st := range s.Streams {
		pid := st.Meta.Pid
		for _, c := range st.CPUScopes {
			var d uint64
			if c.EndNS > c.StartNS {
				d = c.EndNS - c.StartNS
			}
			op := scopeName(c.Scope)
			by[op] = append(by[op], float64(d)/1e3)
			rows = append(rows, row{c.StartNS, []string{f6(s.Sec(c.StartNS)), op, us(d), itoa(c.StepID), string(c.Name), itoa(pid), itoa(c.TID)}})
		}
		for _, x := range st.BPFSyncs {
			var d uint64
			if x.EndNS > x.StartNS {
				d = x.EndNS - x.StartNS
			}
			by["gpu_sync_wait"] = append(by["gpu_sync_wait"], float64(d)/1e3)
			rows = append(rows, row{x.StartNS, []string{f6(s.Sec(x.StartNS)), "gpu_sync_wait", us(d), "", "ebpf:" + s.join().phaseLabel(x.Phase), itoa(x.PID), itoa(x.TID)}})
		}
	}
	if len(by["gpu_sync_wait"]) == 0 { // no eBPF: CUPTI's synchronization records
		for _, st := range s.Streams {
			for _, x := range st.Syncs {
				var d uint64
				if x.EndNS > x.StartNS {
					d = x.EndNS - x.StartNS
				}
				by["gpu_sync_wait"] = append(by["gpu_sync_wait"], float64(d)/1e3)
				tid := ""
				if p := s.join().procs[st.Meta.Pid]; p != nil {
					if a := p.apiByCorr.get(x.CorrelationID); a >= 0 {
						tid = itoa(p.apis[a].TID)
					}
				}
				rows = append(rows, row{x.StartNS, []string{f6(s.Sec(x.StartNS)), "gpu_sync_wait", us(d), "", "cupti:" + syncTypes[x.SyncType], itoa(st.Meta.Pid), tid}})
			}
		}
	}
	sort.SliceStable(rows, func(i, k int) bool { return rows[i].ts < rows[k].ts })
	for _, r := range rows {
		t.add(r.cells...)
	}
	ops := map[string]any{}
	var engine float64
	for _, v := range by["engine_step"] {
		engine += v
	}
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Strings(names)
	var totalNonEngine float64
	for _, n := range names {
		st := statsOf(by[n])
		m := map[string]any{"count": st.Count, "total_us": st.Total, "mean_us": st.Mean, "p50_us": st.P50, "p95_us": st.P95, "p99_us": st.P99, "max_us": st.Max}
		if engine > 0 && n != "engine_step" {
			m["pct_of_engine_step"] = round3(100 * st.Total / engine)
		}
		if n != "engine_step" {
			totalNonEngine += st.Total
		}
		ops[n] = m
	}
	sum := map[string]any{"operations": ops, "engine_step_total_us": round3(engine), "operations_total_us": round3(totalNonEngine),
		"health_ranges": map[string]string{
			"scheduling+input_prep+sampling+output_processing": "CPU overhead per step; with async scheduling it hides behind the GPU while it stays below the step's GPU time (forward_pass_timing.csv gpu_time_us)",
			"gpu_sync_wait": "CPU blocked on the GPU; large values on the scheduler thread mean the CPU is idle waiting (GPU-bound, fine) or a sync in the hot path",
		}}
	if len(rows) == 0 {
		sum["missing"] = "no CPU spans: the hook's CPU timing patch did not run (ENABLE_CPU_TIMING) and no eBPF/CUPTI sync records"
	}
	return []output{t, jsonBlob("cpu_timing_summary.json", sum)}
}

var syncTypes = map[uint32]string{0: "unknown", 1: "event_synchronize", 2: "stream_wait_event", 3: "stream_synchronize", 4: "context_synchronize"}

func (j *join) phaseLabel(p uint16) string {
	if p == 0 {
		return "none"
	}
	if n, ok := j.phaseName[[2]int{0, int(p)}]; ok {
		return n
	}
	return "phase_" + strconv.Itoa(int(p))
}
