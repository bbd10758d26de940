// Command pmdrain runs a command with the CUPTI agent preloaded, collects the
// ring of every process of the tree over the control socket, drains them while
// they run, and writes a JSON summary per process (and optionally raw streams).
// It is the stand-alone reader for GPU machines without Go (build here, carry
// the binary): cupti/gpu/*.py use it to compare the agent with torch.profiler
// and to benchmark it. It is not the product CLI (cmd/profilemate-trace run).
//
//	pmdrain -agent build/libprofilemate.so -start nodes -summary out.json [-raw DIR] -- python3 workload.py run
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/profilemate/profilemate-trace/cupti"
	"github.com/profilemate/profilemate-trace/internal/record"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

type kernelStat struct {
	Short      string    `json:"short"`
	Full       string    `json:"full"`
	Count      int       `json:"count"`
	GraphCount int       `json:"graph_count"`
	MedianUs   float64   `json:"median_us"`
	durs       []float64 // µs
}

type procSummary struct {
	Pid            int                    `json:"pid"`
	Ppid           uint32                 `json:"ppid"`
	CuptiVersion   uint32                 `json:"cupti_version"`
	DriverVersion  uint32                 `json:"driver_version"`
	AgentFlags     uint32                 `json:"agent_flags"`
	State          uint32                 `json:"producer_state"`
	RecordsByType  map[string]int         `json:"records_by_type"`
	Kernels        map[string]*kernelStat `json:"kernels"` // by raw name
	GraphReplays   int                    `json:"graph_replays"`
	GraphIDs       map[uint32]int         `json:"graph_ids"`
	GraphMedianUs  float64                `json:"graph_median_us"`
	MemcpyBytes    map[string]uint64      `json:"memcpy_bytes"`
	MemcpyCount    map[string]int         `json:"memcpy_count"`
	MemsetCount    int                    `json:"memset_count"`
	SyncCount      int                    `json:"sync_count"`
	APICount       int                    `json:"api_count"`
	ZeroTsKernels  int                    `json:"zero_ts_kernels"`
	RingWritten    uint64                 `json:"ring_records_written"`
	RingDropped    uint64                 `json:"ring_records_dropped"`
	SourceDropped  uint64                 `json:"source_dropped"`
	AgentStats     *record.AgentStats     `json:"agent_stats,omitempty"`
	Logs           []string               `json:"logs,omitempty"`
	ControlChanges []record.ControlChange `json:"control_changes,omitempty"`
	Error          string                 `json:"error,omitempty"`
	names          map[uint32]string
	graphDurs      []float64
}

var copyKinds = map[uint8]string{1: "HtoD", 2: "DtoH", 3: "HtoA", 4: "AtoH", 5: "AtoA", 6: "AtoD", 7: "DtoA", 8: "DtoD", 9: "HtoH", 10: "PtoP"}

func (s *procSummary) add(b []byte) error {
	t := record.TypeOf(b)
	s.RecordsByType[t.String()]++
	switch t {
	case record.TypeKernelName:
		n, err := record.DecodeKernelName(b)
		if err != nil {
			return err
		}
		s.names[n.NameID] = string(n.Name)
	case record.TypeKernel:
		k, err := record.DecodeKernel(b)
		if err != nil {
			return err
		}
		raw := s.names[k.NameID]
		ks := s.Kernels[raw]
		if ks == nil {
			short, full := cupti.Demangle(raw)
			ks = &kernelStat{Short: short, Full: full}
			s.Kernels[raw] = ks
		}
		ks.Count++
		if k.GraphID != 0 {
			ks.GraphCount++
		}
		if k.Flags&1 != 0 {
			s.ZeroTsKernels++
		} else {
			ks.durs = append(ks.durs, float64(k.EndNS-k.StartNS)/1e3)
		}
	case record.TypeGraphTrace:
		g, err := record.DecodeGraphTrace(b)
		if err != nil {
			return err
		}
		s.GraphReplays++
		s.GraphIDs[g.GraphID]++
		s.graphDurs = append(s.graphDurs, float64(g.EndNS-g.StartNS)/1e3)
	case record.TypeMemcpy:
		m, err := record.DecodeMemcpy(b)
		if err != nil {
			return err
		}
		k := copyKinds[m.CopyKind]
		if k == "" {
			k = fmt.Sprint(m.CopyKind)
		}
		s.MemcpyBytes[k] += m.Bytes
		s.MemcpyCount[k]++
	case record.TypeMemset:
		s.MemsetCount++
	case record.TypeSync:
		s.SyncCount++
	case record.TypeAPI:
		s.APICount++
	case record.TypeAgentStats:
		a, err := record.DecodeAgentStats(b)
		if err != nil {
			return err
		}
		s.AgentStats = &a
	case record.TypeLog:
		l, err := record.DecodeLog(b)
		if err != nil {
			return err
		}
		s.Logs = append(s.Logs, string(l.Text))
	case record.TypeControlChange:
		c, err := record.DecodeControlChange(b)
		if err != nil {
			return err
		}
		s.ControlChanges = append(s.ControlChanges, c)
	case record.TypeProcessInfo:
		p, err := record.DecodeProcessInfo(b)
		if err != nil {
			return err
		}
		s.Ppid, s.CuptiVersion, s.DriverVersion, s.AgentFlags = p.Ppid, p.CuptiVersion, p.CudaDriverVersion, p.AgentFlags
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

type stream struct {
	r   *ring.Reader
	sum *procSummary
	raw *record.RawWriter
	f   *os.File
	err error
}

func main() {
	agent := flag.String("agent", "", "path of libprofilemate.so (required)")
	start := flag.String("start", "graph", "graph, nodes, off or dormant (PROFILEMATE_START)")
	summary := flag.String("summary", "", "write the per-process JSON summary here (default stdout)")
	rawDir := flag.String("raw", "", "also write raw streams <pid>.cupti.pmr into this directory")
	period := flag.Duration("period", 50*time.Millisecond, "drain period")
	flag.Parse()
	if *agent == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: pmdrain -agent LIB [-start graph|nodes|off|dormant] [-summary FILE] [-raw DIR] -- CMD ARGS...")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*agent)
	if err != nil {
		fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		fatal(err)
	}
	dir, err := os.MkdirTemp("", "pmdrain-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	cs, err := ring.ListenControl(dir)
	if err != nil {
		fatal(err)
	}
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	env := []string{}
	preload := abs
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "LD_PRELOAD=") && len(e) > 11 {
			preload = abs + ":" + e[11:]
			continue
		}
		if strings.HasPrefix(e, "PROFILEMATE_START=") || strings.HasPrefix(e, "PROFILEMATE_CONTROL_SOCKET=") {
			continue
		}
		env = append(env, e)
	}
	env = append(env, "LD_PRELOAD="+preload, "PROFILEMATE_CONTROL_SOCKET="+cs.Path())
	if *start != "dormant" {
		env = append(env, "PROFILEMATE_START="+*start)
	}
	cmd.Env = env
	signal.Ignore(syscall.SIGINT) // the child gets Ctrl-C; we keep draining
	if err := cmd.Start(); err != nil {
		fatal(err)
	}
	var mu sync.Mutex
	streams := map[int]*stream{}
	go func() {
		for in := range cs.Incoming() {
			r, err := ring.OpenFile(in.File)
			s := &stream{r: r, sum: &procSummary{Pid: in.Pid, RecordsByType: map[string]int{}, Kernels: map[string]*kernelStat{},
				GraphIDs: map[uint32]int{}, MemcpyBytes: map[string]uint64{}, MemcpyCount: map[string]int{}, names: map[uint32]string{}}}
			if err != nil {
				s.sum.Error = err.Error()
			} else if *rawDir != "" {
				f, ferr := os.Create(filepath.Join(*rawDir, fmt.Sprintf("%d.cupti.pmr", in.Pid)))
				if ferr == nil {
					s.f = f
					s.raw, _ = record.NewRawWriter(f, record.StreamMeta{Source: "cupti", Pid: in.Pid, StartNs: ring.MonotonicNs()})
				}
			}
			mu.Lock()
			streams[in.Pid] = s
			mu.Unlock()
		}
	}()
	drain := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range streams {
			if s.r == nil || s.err != nil {
				continue
			}
			s.r.Heartbeat()
			_, s.err = s.r.Read(func(b []byte) error {
				if s.raw != nil {
					if err := s.raw.Write(b); err != nil {
						return err
					}
				}
				return s.sum.add(b)
			})
			if s.err != nil {
				s.sum.Error = s.err.Error()
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
loop:
	for {
		select {
		case werr = <-done:
			break loop
		case <-time.After(*period):
			drain()
		}
	}
	time.Sleep(300 * time.Millisecond) // rings of the last exiting children
	cs.Close()
	drain()
	var out []*procSummary
	mu.Lock()
	for _, s := range streams {
		if s.r != nil {
			h := s.r.Header()
			s.sum.State, s.sum.RingWritten, s.sum.RingDropped, s.sum.SourceDropped = h.ProducerState, h.RecordsWritten, h.RecordsDropped, h.SourceDropped
			s.r.Close()
		}
		for _, k := range s.sum.Kernels {
			k.MedianUs = median(k.durs)
		}
		s.sum.GraphMedianUs = median(s.sum.graphDurs)
		if s.raw != nil {
			s.raw.Flush()
			s.f.Close()
		}
		out = append(out, s.sum)
	}
	mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	js, _ := json.MarshalIndent(map[string]any{"command": flag.Args(), "start": *start, "processes": out}, "", " ")
	if *summary != "" {
		if err := os.WriteFile(*summary, js, 0o644); err != nil {
			fatal(err)
		}
	} else {
		os.Stdout.Write(append(js, '\n'))
	}
	for _, p := range out {
		if p.RingDropped > 0 || p.SourceDropped > 0 {
			fmt.Fprintf(os.Stderr, "pmdrain: pid %d: %d records dropped (ring full), %d lost in CUPTI/agent\n", p.Pid, p.RingDropped, p.SourceDropped)
		}
	}
	if ee, ok := werr.(*exec.ExitError); ok {
		os.Exit(ee.ExitCode())
	} else if werr != nil {
		fatal(werr)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "pmdrain:", err)
	os.Exit(1)
}
