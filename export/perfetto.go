package export

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"unicode/utf8"
)

// WritePerfetto writes the session as a Chrome/Perfetto JSON trace (open it in
// ui.perfetto.dev or chrome://tracing):
//
//   - one process per traced pid, one track per thread: the hook's CPU spans (schedule,
//     execute_model, scopes, encoder, captures), CUDA api calls, eBPF sync waits;
//   - one process per (pid, GPU), one track per CUDA stream: kernels, graph replays
//     (named with their BatchDescriptor), copies, memsets;
//   - a flow arrow from each launching api call to its GPU work (correlation id);
//   - counters: KV cache usage; instant events: preemptions.
//
// Timestamps are microseconds since the session start.
func WritePerfetto(s *Session, w io.Writer) error {
	pw := &perfettoWriter{w: bufio.NewWriterSize(w, 1<<20), origin: s.StartNs}
	pw.raw(`{"displayTimeUnit":"ns","otherData":{"tool":"profilemate-trace","session":`)
	pw.str(s.Name)
	pw.raw(`},"traceEvents":[`)
	j := s.join()
	named := map[int]bool{}
	nameProc := func(pid int, name string, sortIdx int) {
		if named[pid] {
			return
		}
		named[pid] = true
		pw.begin()
		pw.raw(`{"ph":"M","name":"process_name","pid":`)
		pw.int(int64(pid))
		pw.raw(`,"tid":0,"args":{"name":`)
		pw.str(name)
		pw.raw(`}}`)
		pw.begin()
		pw.raw(`{"ph":"M","name":"process_sort_index","pid":`)
		pw.int(int64(pid))
		pw.raw(`,"tid":0,"args":{"sort_index":`)
		pw.int(int64(sortIdx))
		pw.raw(`}}`)
	}
	for _, st := range s.Streams {
		pid := st.Meta.Pid
		label := "pid " + strconv.Itoa(pid)
		if st.Meta.Comm != "" {
			label += " " + st.Meta.Comm
		}
		nameProc(pid, label, pid)
		for _, x := range st.SchedSteps {
			pw.span(pid, x.TID, "schedule step "+strconv.FormatUint(x.StepID, 10), "scheduler", x.StartNS, x.EndNS,
				"tokens", int64(x.ScheduledTokens), "reqs", int64(x.ScheduledReqs))
		}
		for _, x := range st.Forwards {
			pw.span(pid, x.TID, "execute_model "+phaseName(int(x.Phase))+" step "+strconv.FormatUint(x.StepID, 10), "forward", x.StartNS, x.EndNS,
				"tokens", int64(x.NumTokens), "reqs", int64(x.NumReqs))
		}
		for _, x := range st.CPUScopes {
			n := scopeName(x.Scope)
			if len(x.Name) > 0 {
				n = string(x.Name)
			}
			pw.span(pid, x.TID, n, "cpu_"+scopeName(x.Scope), x.StartNS, x.EndNS, "step", int64(x.StepID), "", 0)
		}
		for _, x := range st.Encoders {
			pw.span(pid, x.TID, "encoder", "encoder", x.StartNS, x.EndNS, "items", int64(x.NumItems), "", 0)
		}
		for _, x := range st.Captures {
			d := descriptor{ok: true, mode: x.RuntimeMode, tokens: x.NumTokens, reqs: x.NumReqs, uniform: x.Flags&1 != 0, lora: x.Flags&2 != 0}
			pw.span(pid, x.TID, "capture "+d.key(), "graph_capture", x.StartNS, x.EndNS, "", 0, "", 0)
		}
		for _, x := range st.BPFSyncs {
			pw.span(int(x.PID), x.TID, "sync wait ("+j.phaseLabel(x.Phase)+")", "sync", x.StartNS, x.EndNS, "", 0, "", 0)
		}
		for _, x := range st.Preempts {
			pw.begin()
			pw.raw(`{"ph":"i","s":"p","cat":"preemption","name":`)
			pw.str("preempt " + string(x.ReqID) + " (" + preemptReason(x.Reason) + ")")
			pw.ts(x.TsNS)
			pw.pidTid(pid, x.TID)
			pw.raw(`}`)
		}
	}
	for _, pid := range j.pids {
		p := j.procs[pid]
		for i := range p.apis {
			a := &p.apis[i]
			pw.span(pid, a.TID, apiName(a.Domain, a.Cbid), "cuda_api", a.StartNS, a.EndNS, "correlation_id", int64(a.CorrelationID), "", 0)
		}
		flowed := map[uint32]bool{}
		for i := range p.gpu {
			g := &p.gpu[i]
			gpid := gpuPid(pid, g.device)
			if !named[gpid] {
				nameProc(gpid, fmt.Sprintf("GPU %d (pid %d)", g.device, pid), 1<<30+gpid)
			}
			tid := uint32(g.stream)
			var name, cat string
			switch g.kind {
			case kindKernel:
				name, cat = j.classes.class(g.name).short, "kernel_"+j.classes.class(g.name).cat
			case kindGraph:
				name, cat = "graph "+strconv.Itoa(int(g.graphID)), "cuda_graph"
				if d, ok := j.graphDesc[[2]int{pid, i}]; ok {
					name += " " + d.key()
				}
			case kindMemcpy:
				name, cat = "memcpy "+copyKinds[g.copyKind]+" "+strconv.FormatUint(g.bytes, 10)+" B", "memcpy"
			default:
				name, cat = "memset "+strconv.FormatUint(g.bytes, 10)+" B", "memset"
			}
			end := g.end
			if end < g.start {
				end = g.start
			}
			pw.span(gpid, tid, name, cat, g.start, end, "correlation_id", int64(g.corr), "", 0)
			if g.api >= 0 && !flowed[g.corr] && g.start > 0 {
				flowed[g.corr] = true
				a := &p.apis[g.api]
				id := strconv.Itoa(pid) + ":" + strconv.FormatUint(uint64(g.corr), 10)
				pw.begin()
				pw.raw(`{"ph":"s","cat":"launch","name":"launch","id":`)
				pw.str(id)
				pw.ts(a.StartNS)
				pw.pidTid(pid, a.TID)
				pw.raw(`}`)
				pw.begin()
				pw.raw(`{"ph":"f","bp":"e","cat":"launch","name":"launch","id":`)
				pw.str(id)
				pw.ts(g.start)
				pw.pidTid(gpid, tid)
				pw.raw(`}`)
			}
		}
	}
	kv := s.kv()
	for _, x := range kv.samples {
		pw.begin()
		pw.raw(`{"ph":"C","name":"kv_cache_usage_pct","cat":"kv"`)
		pw.ts(x.ts)
		pw.pidTid(x.key.pid, 0)
		pw.raw(`,"args":{"pool_` + strconv.Itoa(int(x.key.pool)) + `":`)
		pw.raw(strconv.FormatFloat(x.pct(), 'f', 2, 64))
		pw.raw(`}}`)
	}
	pw.raw("]}\n")
	return pw.w.Flush()
}

var copyKinds = map[uint8]string{1: "HtoD", 2: "DtoH", 3: "HtoA", 4: "AtoH", 5: "AtoA", 6: "AtoD", 7: "DtoA", 8: "DtoD", 9: "HtoH", 10: "PtoP"}

// gpuPid is the synthetic trace pid of a process's GPU (distinct from real pids, which
// stay below 2^22).
func gpuPid(pid int, dev uint32) int { return 1<<28 + int(dev)<<22 + pid }

type perfettoWriter struct {
	w      *bufio.Writer
	origin uint64
	n      int
	buf    []byte
}

func (p *perfettoWriter) raw(s string) { p.w.WriteString(s) }

func (p *perfettoWriter) begin() {
	if p.n > 0 {
		p.w.WriteByte(',')
	}
	p.w.WriteByte('\n')
	p.n++
}

func (p *perfettoWriter) int(v int64) {
	p.buf = strconv.AppendInt(p.buf[:0], v, 10)
	p.w.Write(p.buf)
}

func (p *perfettoWriter) ts(ns uint64) {
	p.raw(`,"ts":`)
	p.usec(int64(ns) - int64(p.origin))
}

func (p *perfettoWriter) usec(ns int64) {
	p.buf = strconv.AppendFloat(p.buf[:0], float64(ns)/1e3, 'f', 3, 64)
	p.w.Write(p.buf)
}

func (p *perfettoWriter) pidTid(pid int, tid uint32) {
	p.raw(`,"pid":`)
	p.int(int64(pid))
	p.raw(`,"tid":`)
	p.int(int64(tid))
}

func (p *perfettoWriter) span(pid int, tid uint32, name, cat string, start, end uint64, k1 string, v1 int64, k2 string, v2 int64) {
	if end < start {
		end = start
	}
	p.begin()
	p.raw(`{"ph":"X","name":`)
	p.str(name)
	p.raw(`,"cat":`)
	p.str(cat)
	p.ts(start)
	p.raw(`,"dur":`)
	p.usec(int64(end - start))
	p.pidTid(pid, tid)
	if k1 != "" {
		p.raw(`,"args":{"` + k1 + `":`)
		p.int(v1)
		if k2 != "" {
			p.raw(`,"` + k2 + `":`)
			p.int(v2)
		}
		p.raw(`}`)
	}
	p.raw(`}`)
}

// str writes a JSON string (escaping quotes, backslashes, control and invalid bytes).
func (p *perfettoWriter) str(s string) {
	p.w.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x80 {
			p.w.WriteByte(c)
			i++
			continue
		}
		if c >= 0x80 {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				p.raw(`\ufffd`)
			} else {
				p.w.WriteString(s[i : i+n])
			}
			i += n
			continue
		}
		switch c {
		case '"':
			p.raw(`\"`)
		case '\\':
			p.raw(`\\`)
		default:
			fmt.Fprintf(p.w, `\u%04x`, c)
		}
		i++
	}
	p.w.WriteByte('"')
}

// WritePerfettoFile writes the trace to path through a temporary file.
func WritePerfettoFile(s *Session, path string) error {
	return writeFileAtomic(path, func(w io.Writer) error { return WritePerfetto(s, w) })
}

func writeFileAtomic(path string, fn func(io.Writer) error) (err error) {
	if st, e := os.Stat(path); e == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = fn(tmp); err != nil {
		return err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// sortedPids is used by the report.
func sortedPids(m map[int]bool) []int {
	v := make([]int, 0, len(m))
	for k := range m {
		v = append(v, k)
	}
	sort.Ints(v)
	return v
}
