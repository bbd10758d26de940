//go:build linux

package cupti

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/record"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

const (
	atenName   = "_ZN2at6native29vectorized_elementwise_kernelILi4EZZZNS0_15sin_kernel_cudaERNS_18TensorIteratorBaseEENKUlvE_clEvENKUlvE0_clEvEUlfE_NS_6detail5ArrayIPcLi2EEEEEviT0_T1_"
	nvjetName  = "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT"
	tritonName = "triton_poi_fused_add_0"
)

var launchCbids = map[uint32]bool{307: true, 442: true, 652: true, 477: true}

// runBasic runs the "basic" scenario, finds its ring through /proc/PID/fd
// while it waits, lets it exit and returns everything in the ring.
// runBasic runs the "basic" scenario. Unless env names PROFILEMATE_KINDS, every kind is
// on (0xff: SYNCHRONIZATION and OVERHEAD too, which the default leaves out) so that every
// conversion is checked.
func runBasic(t *testing.T, env []string) (*capture, *ring.Reader, int, [2]uint32, time.Time, time.Time) {
	t.Helper()
	kinds := false
	for _, e := range env {
		kinds = kinds || strings.HasPrefix(e, "PROFILEMATE_KINDS=")
	}
	if !kinds {
		env = append(env, "PROFILEMATE_KINDS=0xff")
	}
	before := time.Now()
	t0 := ring.MonotonicNs()
	p := start(t, env, "basic")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	var mainTid, workerTid uint32
	fmt.Sscanf(p.waitLine("TIDS", 5*time.Second), "TIDS main=%d worker=%d", &mainTid, &workerTid)
	p.waitLine("READY", 5*time.Second)
	r := findRing(t, pid, 2*time.Second)
	p.quit()
	c := newCapture()
	c.drain(t, r)
	_ = before
	return c, r, pid, [2]uint32{mainTid, workerTid}, time.Unix(0, int64(t0)), time.Unix(0, int64(ring.MonotonicNs()))
}

// checkBasicCommon asserts what is the same at every detail level.
func checkBasicCommon(t *testing.T, c *capture, r *ring.Reader, pid int, tids [2]uint32, t0, t1 time.Time, version uint32) {
	t.Helper()
	h := r.Header()
	if h.ProducerState != ring.StateExited || h.Pid != uint32(pid) || h.RecordsDropped != 0 || h.ProducerFlags&ring.FlagArmedAtInit == 0 {
		t.Errorf("header %+v", h)
	}
	if len(c.types) == 0 || c.types[0] != record.TypeProcessInfo || c.types[len(c.types)-1] != record.TypeStreamStats {
		t.Fatalf("stream must start with process_info and end with stream_stats: %v", c.types)
	}
	pi := c.procInfo[0]
	if pi.PID != uint32(pid) || pi.CuptiVersion != version || pi.CudaDriverVersion != 13000 || pi.Source != 1 ||
		pi.AgentFlags&(1|8|16|32) != 1|8|16|32 || !strings.Contains(c.procText[0], "libcupti.so") {
		t.Errorf("process_info %+v %q", pi, c.procText[0])
	}
	ss := c.sstats[len(c.sstats)-1]
	if ss.RecordsWritten != h.RecordsWritten || ss.RecordsDropped != 0 {
		t.Errorf("stream_stats %+v header %+v", ss, h)
	}
	if len(c.controls) != 1 || c.controls[0].Reason != 1 || c.controls[0].Enable != 1 {
		t.Errorf("control changes %+v", c.controls)
	}
	if c.unknown != 0 || !c.nameBeforeUse {
		t.Errorf("unknown %d, nameBeforeUse %v", c.unknown, c.nameBeforeUse)
	}
	// names: one record per distinct name, raw mangled names kept
	if c.nameRecs != 3 || len(c.names) != 3 {
		t.Errorf("kernel_name records %d %v", c.nameRecs, c.names)
	}
	// copies, memsets, syncs
	var bytes uint64
	kinds := map[uint8]int{}
	for _, m := range c.memcpys {
		bytes += m.Bytes
		kinds[m.CopyKind]++
	}
	if len(c.memcpys) != 6 || bytes != 2*4096+3*1024+512 || kinds[1] != 2 || kinds[2] != 3 || kinds[8] != 1 {
		t.Errorf("memcpy %d bytes %d kinds %v", len(c.memcpys), bytes, kinds)
	}
	if len(c.memsets) != 2 || c.memsets[0].Bytes != 100 || c.memsets[1].Bytes != 100 || c.memsets[1].Value != 7 {
		t.Errorf("memsets %+v", c.memsets)
	}
	st := map[uint32]int{}
	for _, s := range c.syncs {
		st[s.SyncType]++
	}
	if len(c.syncs) != 4 || st[3] != 2 || st[1] != 1 || st[4] != 1 {
		t.Errorf("syncs %v", st)
	}
	// api records: 27 launches + 4 graph launches + 6 copies + 2 memsets + 4 syncs
	if len(c.apis) != 43 {
		t.Errorf("api records %d, want 43", len(c.apis))
	}
	apiByCorr := map[uint32]record.API{}
	for _, a := range c.apis {
		if _, dup := apiByCorr[a.CorrelationID]; dup {
			t.Errorf("duplicate api correlation %d", a.CorrelationID)
		}
		apiByCorr[a.CorrelationID] = a
		if a.Domain != 4 || a.PID != uint32(pid) || a.ReturnValue != 0 {
			t.Errorf("api %+v", a)
		}
	}
	// every GPU record correlates to exactly the API call that caused it, on the caller's thread
	worker := 0
	for _, k := range c.kernels {
		a, ok := apiByCorr[k.CorrelationID]
		if !ok {
			t.Errorf("kernel corr %d has no api record", k.CorrelationID)
			continue
		}
		if k.GraphID == 0 && !launchCbids[a.Cbid] || k.GraphID != 0 && a.Cbid != 514 {
			t.Errorf("kernel %+v from api cbid %d", k, a.Cbid)
		}
		if a.TID == tids[1] {
			worker++
			if c.names[k.NameID] != atenName {
				t.Errorf("worker launched %q", c.names[k.NameID])
			}
		} else if a.TID != tids[0] {
			t.Errorf("api tid %d is neither main %d nor worker %d", a.TID, tids[0], tids[1])
		}
	}
	if worker != 7 {
		t.Errorf("kernels from the worker thread: %d, want 7", worker)
	}
	for _, m := range c.memcpys {
		if a, ok := apiByCorr[m.CorrelationID]; !ok || a.Cbid != 277 && a.Cbid != 279 && a.Cbid != 306 {
			t.Errorf("memcpy corr %d: api %+v", m.CorrelationID, a)
		}
	}
	// timestamps: CLOCK_MONOTONIC of this machine, inside the run, ordered
	lo, hi := uint64(t0.UnixNano()), uint64(t1.UnixNano())
	for _, k := range c.kernels {
		if k.StartNS < lo || k.EndNS > hi+uint64(time.Second) || k.EndNS < k.StartNS {
			t.Errorf("kernel times %d..%d outside %d..%d", k.StartNS, k.EndNS, lo, hi)
			break
		}
	}
	for _, a := range c.apis {
		if a.StartNS < lo || a.EndNS > hi || a.EndNS < a.StartNS {
			t.Errorf("api times %d..%d outside %d..%d", a.StartNS, a.EndNS, lo, hi)
			break
		}
	}
	// kernel fields
	for _, k := range c.kernels {
		if c.names[k.NameID] == nvjetName && k.GraphID == 0 && (k.Grid != [3]int32{132, 2, 1} || k.Block != [3]int32{384, 1, 1} || k.DynamicShared != 49152) {
			t.Errorf("nvjet kernel %+v", k)
		}
	}
	s := c.lastStats()
	if s.RecordsUnknown != 0 || s.KernelsZeroTs != 0 || s.CuptiDropped != 0 || s.BuffersCompleted == 0 || s.NamesInterned != 3 {
		t.Errorf("agent_stats %+v", s)
	}
}

func TestBasicGraphLevel(t *testing.T) {
	c, r, pid, tids, t0, t1 := runBasic(t, baseEnv(true, "PROFILEMATE_START=graph"))
	checkBasicCommon(t, c, r, pid, tids, t0, t1, 130001)
	want := map[string]int{atenName: 17, nvjetName: 5, tritonName: 5}
	if got := c.kernelsNamed(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kernels per name %v, want %v", got, want)
	}
	coop := 0
	for _, k := range c.kernels {
		if k.GraphID != 0 {
			t.Errorf("graph node kernel at graph level: %+v", k)
		}
		if k.LaunchType == 1 {
			coop++
		}
	}
	if coop != 2 {
		t.Errorf("cooperative kernels %d", coop)
	}
	if len(c.graphs) != 4 {
		t.Fatalf("graph_trace records %d, want 4", len(c.graphs))
	}
	for _, g := range c.graphs {
		if g.GraphID != 1 || g.EndNS <= g.StartNS {
			t.Errorf("graph %+v", g)
		}
	}
}

func TestBasicNodesLevel(t *testing.T) {
	c, r, pid, tids, t0, t1 := runBasic(t, baseEnv(true, "PROFILEMATE_START=nodes"))
	checkBasicCommon(t, c, r, pid, tids, t0, t1, 130001)
	if len(c.graphs) != 0 {
		t.Errorf("graph_trace at nodes level: %d", len(c.graphs))
	}
	want := map[string]int{atenName: 17 + 4, nvjetName: 5 + 4, tritonName: 5 + 4}
	if got := c.kernelsNamed(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kernels per name %v, want %v", got, want)
	}
	nodes := map[uint64]int{}
	corr := map[uint32]int{}
	for _, k := range c.kernels {
		if k.GraphID != 0 {
			if k.GraphID != 1 {
				t.Errorf("graph id %d", k.GraphID)
			}
			nodes[k.GraphNodeID]++
			corr[k.CorrelationID]++
		}
	}
	if len(nodes) != 3 || len(corr) != 4 {
		t.Errorf("graph nodes %v, launches %v", nodes, corr)
	}
	for _, n := range corr {
		if n != 3 {
			t.Errorf("nodes per launch %v", corr)
		}
	}
}

// TestKernel9Layout: CUPTI 12.6 (version 24) writes Kernel9 (208 B), Memcpy5,
// Synchronization v1; the agent reads the same prefixes. The library is named
// through PROFILEMATE_CUPTI_PATH (12.x soname).
func TestKernel9Layout(t *testing.T) {
	c, r, pid, tids, t0, t1 := runBasic(t, baseEnv(true, "PROFILEMATE_START=graph", "MOCK_CUPTI_VERSION=24",
		"PROFILEMATE_CUPTI_PATH="+filepath.Join(testLib, "libcupti.so.12")))
	checkBasicCommon(t, c, r, pid, tids, t0, t1, 24)
	if len(c.kernels) != 27 || len(c.graphs) != 4 || !strings.Contains(c.procText[0], "libcupti.so.12") {
		t.Errorf("kernels %d graphs %d %q", len(c.kernels), len(c.graphs), c.procText[0])
	}
}

// TestDirectInjectionPath: no LD_PRELOAD, the agent named in CUDA_INJECTION64_PATH.
// TestDefaultKinds: the default set leaves SYNCHRONIZATION and OVERHEAD out (they cost on
// synchronized graph replays) and keeps kernels, graph launches, copies, memsets and the
// allowlisted API records.
func TestDefaultKinds(t *testing.T) {
	c, _, _, _, _, _ := runBasic(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_KINDS="))
	if len(c.syncs) != 0 || len(c.overhead) != 0 {
		t.Errorf("default kinds: %d sync, %d overhead records", len(c.syncs), len(c.overhead))
	}
	if len(c.kernels) != 27 || len(c.graphs) != 4 || len(c.apis) != 43 || len(c.memcpys) != 6 {
		t.Errorf("default kinds: k%d g%d a%d m%d", len(c.kernels), len(c.graphs), len(c.apis), len(c.memcpys))
	}
}

func TestDirectInjectionPath(t *testing.T) {
	c, r, pid, tids, t0, t1 := runBasic(t, baseEnv(false, "PROFILEMATE_START=graph", "CUDA_INJECTION64_PATH="+agentSO))
	checkBasicCommon(t, c, r, pid, tids, t0, t1, 130001)
}

// TestPreloadNeverOverwrites: another tool's CUDA_INJECTION64_PATH wins; the
// agent stays out (no ring) and the program is unaffected.
func TestPreloadNeverOverwrites(t *testing.T) {
	other := filepath.Join(t.TempDir(), "other-tool.so")
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "CUDA_INJECTION64_PATH="+other), "basic")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 5*time.Second)
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	found, _ := ring.Find(pid)
	p.quit()
	if len(found) != 0 {
		t.Errorf("ring found although another tool owns the injection: %v", found)
	}
	if !strings.Contains(string(env), "CUDA_INJECTION64_PATH="+other) {
		t.Errorf("CUDA_INJECTION64_PATH changed")
	}
}

func TestPreloadSetsInjectionPath(t *testing.T) {
	needBuild(t)
	out, err := exec.Command("env", "-i", "LD_PRELOAD="+agentSO, "/usr/bin/env").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "CUDA_INJECTION64_PATH="+agentSO+"\n") || !strings.Contains(string(out), "NVTX_INJECTION64_PATH="+agentSO+"\n") {
		t.Errorf("env under LD_PRELOAD:\n%s", out)
	}
}

// TestSecondSubscriber: a CUPTI client (Kineto-like) subscribed before cuInit;
// the agent gets 39, goes passive with zero further CUPTI calls, and says who holds CUPTI.
func TestSecondSubscriber(t *testing.T) {
	for _, tc := range []struct{ name, scenario, env, holder string }{
		{"in-process", "busy", "", "CUPTI for kineto-test"},
		{"tool", "basic", "MOCK_CUPTI_BUSY=Nsight Systems", "Nsight Systems"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := baseEnv(true, "PROFILEMATE_START=graph")
			if tc.env != "" {
				env = append(env, tc.env)
			}
			p := start(t, env, tc.scenario)
			pid := pidOf(t, p.waitLine("PID", 5*time.Second))
			p.waitLine("READY", 5*time.Second)
			r := findRing(t, pid, 2*time.Second)
			if err := Enable(r, ring.DetailGraph, 2*time.Second); err != ErrPassive {
				t.Errorf("Enable on a passive agent: %v", err)
			}
			p.quit()
			c := newCapture()
			c.drain(t, r)
			h := r.Header()
			if h.ProducerState != ring.StatePassive {
				t.Errorf("state %d, want passive", h.ProducerState)
			}
			if len(c.kernels)+len(c.apis)+len(c.graphs) != 0 {
				t.Errorf("passive agent wrote GPU records")
			}
			if len(c.logs) != 1 || !strings.Contains(c.logs[0], "cupti_busy: "+tc.holder) {
				t.Errorf("logs %q", c.logs)
			}
			if len(c.procInfo) != 1 || c.procInfo[0].AgentFlags&4 == 0 {
				t.Errorf("process_info %+v", c.procInfo)
			}
		})
	}
}

func TestVersionRefusedAndNoCupti(t *testing.T) {
	for _, tc := range []struct{ name, env, log string }{
		{"13.0GA", "MOCK_CUPTI_VERSION=130000", "unsupported CUPTI version 130000"},
		{"missing", "PROFILEMATE_CUPTI_PATH=/nonexistent/libcupti.so.13", "no libcupti found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, baseEnv(true, "PROFILEMATE_START=graph", tc.env), "basic")
			pid := pidOf(t, p.waitLine("PID", 5*time.Second))
			p.waitLine("READY", 5*time.Second)
			r := findRing(t, pid, 2*time.Second)
			p.quit()
			c := newCapture()
			c.drain(t, r)
			if h := r.Header(); h.ProducerState != ring.StateFailed {
				t.Errorf("state %d", h.ProducerState)
			}
			if len(c.logs) != 1 || !strings.Contains(c.logs[0], tc.log) || len(c.kernels) != 0 {
				t.Errorf("logs %q kernels %d", c.logs, len(c.kernels))
			}
		})
	}
}

// TestGarbageDropsZeroTimestamps: unknown record kinds are skipped and counted,
// CUPTI's own drops are read and reported, kernels without timing are flagged.
func TestGarbageDropsZeroTimestamps(t *testing.T) {
	c, r, _, _, _, _ := runBasic(t, baseEnv(true, "PROFILEMATE_START=graph", "MOCK_CUPTI_GARBAGE=4",
		"MOCK_CUPTI_DROPS=17", "FAKECUDA_ZERO_TS_EVERY=5"))
	if len(c.kernels) != 27 || len(c.graphs) != 4 || len(c.apis) != 43 || len(c.memcpys) != 6 {
		t.Errorf("counts changed by garbage: k%d g%d a%d m%d", len(c.kernels), len(c.graphs), len(c.apis), len(c.memcpys))
	}
	s := c.lastStats()
	// mock records: 27 kernels + 4 graphs + 6 memcpy + 2 memset + 4 sync + 43 api = 86 → 21 garbage
	if s.RecordsUnknown != 21 || s.CuptiDropped != 17 || s.KernelsZeroTs != 5 {
		t.Errorf("agent_stats %+v", s)
	}
	zero := 0
	for _, k := range c.kernels {
		if k.Flags&1 != 0 {
			zero++
			if k.StartNS != 0 || k.EndNS != 0 {
				t.Errorf("flagged kernel with times %+v", k)
			}
		}
	}
	if zero != 5 {
		t.Errorf("kernels flagged without timing: %d", zero)
	}
	if h := r.Header(); h.SourceDropped < 17 {
		t.Errorf("source_dropped %d", h.SourceDropped)
	}
}

// TestUnknownEnvWarnedOnce and debug output go to stderr with the prefix.
func TestEnvValidation(t *testing.T) {
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_BOGUS=1", "PROFILEMATE_FLUSH_MS=abc",
		"VLLM_PROFILING_VERBOSE=1"), "basic")
	p.waitLine("READY", 5*time.Second)
	p.quit()
	e := p.stderr()
	if strings.Count(e, "unknown environment variable PROFILEMATE_BOGUS") != 1 ||
		!strings.Contains(e, "[profilemate] pid ") || !strings.Contains(e, "PROFILEMATE_FLUSH_MS=abc is invalid") ||
		!strings.Contains(e, "armed: cupti 130001") {
		t.Errorf("stderr:\n%s", e)
	}
	p2 := start(t, baseEnv(true, "PROFILEMATE_START=graph"), "basic")
	p2.waitLine("READY", 5*time.Second)
	p2.quit()
	if e := p2.stderr(); e != "" {
		t.Errorf("agent is not silent by default: %q", e)
	}
}

// TestForkBeforeCUDA: a child forked before any cuInit gets its own injection and
// ring; both rings arrive over the control socket.
func TestForkBeforeCUDA(t *testing.T) {
	cs, err := ring.ListenControl(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_CONTROL_SOCKET="+cs.Path()), "forkbefore")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	var child int
	fmt.Sscanf(p.waitLine("CHILD ", 5*time.Second), "CHILD %d", &child)
	readers := map[int]*ring.Reader{}
	for len(readers) < 2 {
		select {
		case in := <-cs.Incoming():
			if in.Source != "cupti" {
				t.Fatalf("source %q", in.Source)
			}
			r, err := ring.OpenFile(in.File)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			readers[in.Pid] = r
		case <-time.After(5 * time.Second):
			t.Fatalf("rings received: %v", readers)
		}
	}
	p.waitLine("CHILD_STATUS 0", 5*time.Second)
	p.waitLine("READY", 5*time.Second)
	p.quit()
	for who, want := range map[int]int{pid: 3, child: 5} {
		r := readers[who]
		if r == nil {
			t.Fatalf("no ring from pid %d (have %v)", who, readers)
		}
		c := newCapture()
		c.drain(t, r)
		if len(c.kernels) != want || r.Header().Pid != uint32(who) || r.Header().ProducerState != ring.StateExited {
			t.Errorf("pid %d: %d kernels (want %d), header %+v", who, len(c.kernels), want, r.Header())
		}
	}
}

// TestForkAfterInit: the child of an initialized process cannot use CUDA (3), the
// agent makes no CUPTI call there, the child exits promptly, the parent's ring
// holds only the parent's work.
func TestForkAfterInit(t *testing.T) {
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph"), "forkafter")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("CHILD_CUINIT 3 LAUNCH 3", 5*time.Second)
	var st, ms int
	fmt.Sscanf(p.waitLine("CHILD_STATUS", 5*time.Second), "CHILD_STATUS %d CHILD_MS %d", &st, &ms)
	if st != 0 || ms > 1000 {
		t.Errorf("child status %d after %d ms", st, ms)
	}
	p.waitLine("READY", 5*time.Second)
	r := findRing(t, pid, 2*time.Second)
	p.quit()
	c := newCapture()
	c.drain(t, r)
	if len(c.kernels) != 6 || len(c.sstats) != 1 || r.Header().Pid != uint32(pid) {
		t.Errorf("parent ring: %d kernels, %d stream_stats", len(c.kernels), len(c.sstats))
	}
}

// TestOsExit: a child leaving through _exit (as multiprocessing children leave through
// os._exit) keeps every record: the preloaded agent interposes _exit and has its
// thread do the final forced flush first, bounded by PROFILEMATE_EXIT_FLUSH_MS.
func TestOsExit(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"flush", nil},
		// a forced flush that hangs (stuck GPU): _exit still leaves after the bound
		{"hung-flush", []string{"PROFILEMATE_EXIT_FLUSH_MS=200", "MOCK_CUPTI_FORCED_FLUSH_HANG_MS=5000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := ring.ListenControl(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			env := append([]string{"PROFILEMATE_START=graph", "PROFILEMATE_CONTROL_SOCKET=" + cs.Path()}, tc.env...)
			p := start(t, baseEnv(true, env...), "oexit")
			p.waitLine("PID", 5*time.Second)
			var child int
			fmt.Sscanf(p.waitLine("CHILD ", 5*time.Second), "CHILD %d", &child)
			var r *ring.Reader
			select {
			case in := <-cs.Incoming():
				r, err = ring.OpenFile(in.File)
				if err != nil || in.Pid != child {
					t.Fatal(err, in.Pid, child)
				}
				defer r.Close()
			case <-time.After(5 * time.Second):
				t.Fatal("no ring from the child")
			}
			var st, ms int
			fmt.Sscanf(p.waitLine("CHILD_STATUS", 10*time.Second), "CHILD_STATUS %d CHILD_MS %d", &st, &ms)
			p.waitLine("READY", 5*time.Second)
			p.quit()
			c := newCapture()
			c.drain(t, r)
			if st != 0 {
				t.Errorf("child status %d", st)
			}
			if tc.name == "flush" {
				// 5 kernels before a 600 ms pause, 3 right before _exit: all 8 arrive
				if len(c.kernels) != 8 || len(c.sstats) != 1 || r.Header().ProducerState != ring.StateExited {
					t.Errorf("_exit child: %d of 8 kernels, stream_stats %d, state %d", len(c.kernels), len(c.sstats),
						r.Header().ProducerState)
				}
				return
			}
			// the bound: 600 ms of work + 200 ms, far below the 5 s hang
			if ms > 2500 {
				t.Errorf("_exit with a hung forced flush took the child %d ms", ms)
			}
			// streamed before the pause; the final flush never finished
			if len(c.kernels) < 5 || r.Header().ProducerState != ring.StateRunning {
				t.Errorf("hung flush: %d kernels, state %d", len(c.kernels), r.Header().ProducerState)
			}
			t.Logf("hung forced flush: child left after %d ms with %d of 8 kernels", ms, len(c.kernels))
		})
	}
}

// TestSigterm: SIGTERM (default action, or a handler that calls exit) ends the
// target promptly; with exit() the bounded atexit flush writes stream_stats.
func TestSigterm(t *testing.T) {
	for _, sc := range []string{"sigterm", "sigterm-handler"} {
		t.Run(sc, func(t *testing.T) {
			p := start(t, baseEnv(true, "PROFILEMATE_START=graph"), sc)
			pid := pidOf(t, p.waitLine("PID", 5*time.Second))
			p.waitLine("READY", 5*time.Second)
			r := findRing(t, pid, 2*time.Second)
			time.Sleep(300 * time.Millisecond)
			t0 := time.Now()
			p.cmd.Process.Signal(syscall.SIGTERM)
			err := p.wait(5 * time.Second)
			el := time.Since(t0)
			if el > time.Second {
				t.Errorf("exit took %v", el)
			}
			c := newCapture()
			c.drain(t, r)
			if len(c.kernels) == 0 {
				t.Errorf("no kernels streamed before SIGTERM")
			}
			if sc == "sigterm-handler" {
				if err != nil || len(c.sstats) != 1 || r.Header().ProducerState != ring.StateExited {
					t.Errorf("exit %v, stream_stats %d, state %d", err, len(c.sstats), r.Header().ProducerState)
				}
			} else if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGTERM {
				t.Errorf("not killed by SIGTERM: %v", err)
			}
			t.Logf("%s: exited %v after the signal, %d kernels", sc, el, len(c.kernels))
		})
	}
}

// TestFullRingNeverBlocks: with a tiny ring and no consumer, records are dropped
// and counted, and the target runs as fast as with a ring large enough.
func TestFullRingNeverBlocks(t *testing.T) {
	const n = 60000
	elapsed := func(ringKB string) (time.Duration, ring.Header, *capture) {
		p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_RING_KB="+ringKB), "flood", fmt.Sprint(n))
		pid := pidOf(t, p.waitLine("PID", 5*time.Second))
		var ns int64
		fmt.Sscanf(p.waitLine("ELAPSED_NS", 60*time.Second), "ELAPSED_NS %d", &ns)
		p.waitLine("READY", 5*time.Second)
		r := findRing(t, pid, 2*time.Second)
		p.quit()
		c := newCapture()
		c.drain(t, r)
		return time.Duration(ns), r.Header(), c
	}
	big, hb, cb := elapsed("16384")
	small, hs, cs := elapsed("64")
	t.Logf("launch loop: %v with a 16 MiB ring, %v with a 64 KiB ring (%d dropped)", big, small, hs.RecordsDropped)
	if hb.RecordsDropped != 0 || len(cb.kernels) != n || len(cb.apis) != n {
		t.Errorf("big ring lost records: %+v kernels %d", hb, len(cb.kernels))
	}
	if hs.RecordsDropped == 0 || hs.BytesDropped == 0 {
		t.Errorf("small ring did not drop: %+v", hs)
	}
	if got := uint64(len(cs.types)) + hs.RecordsDropped; got < 2*n {
		t.Errorf("written+dropped %d < %d", got, 2*n)
	}
	if small > 2*big+500*time.Millisecond {
		t.Errorf("target slowed by a full ring: %v vs %v", small, big)
	}
}

// TestDormantThenDetailSwitch: nothing is emitted until a tracer enables the
// agent; detail switches graph → nodes → off → dormant apply while running.
func TestDormantThenDetailSwitch(t *testing.T) {
	// GRAPH_TRACE armed at cuInit (dormant keeps it on, records dropped); the switch to nodes
	// turns it off for good, so the last graph phase records graph launches per node.
	p := start(t, baseEnv(true, "PROFILEMATE_FLUSH_MS=50", "PROFILEMATE_ARM=graph"), "loop")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 5*time.Second)
	r := findRing(t, pid, 2*time.Second)
	c := newCapture()
	time.Sleep(400 * time.Millisecond)
	c.drain(t, r)
	if len(c.types) != 1 || c.types[0] != record.TypeProcessInfo || r.Header().ControlEnable != 0 {
		t.Fatalf("dormant agent emitted %v", c.types)
	}
	phases := []struct {
		enable bool
		detail ring.Detail
	}{{true, ring.DetailGraph}, {true, ring.DetailNodes}, {true, ring.DetailOff}, {false, ring.DetailOff}, {true, ring.DetailGraph}}
	for _, ph := range phases {
		var err error
		if ph.enable {
			err = Enable(r, ph.detail, 2*time.Second)
		} else {
			err = Disable(r, 2*time.Second)
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	p.quit()
	c.drain(t, r)
	if len(c.controls) != len(phases) {
		t.Fatalf("control_change records %+v", c.controls)
	}
	type seg struct{ kernels, nodeKernels, graphs, memcpys, apis int }
	segs := make([]seg, len(phases))
	at := func(ts uint64) int { // segment whose [start+20ms, next-20ms] holds ts, or -1
		for i, cc := range c.controls {
			lo := cc.TsNS + 20e6
			hi := uint64(1 << 63)
			if i+1 < len(c.controls) {
				hi = c.controls[i+1].TsNS - 20e6
			}
			if ts >= lo && ts <= hi {
				return i
			}
		}
		return -1
	}
	for _, k := range c.kernels {
		if i := at(k.StartNS); i >= 0 {
			segs[i].kernels++
			if k.GraphID != 0 {
				segs[i].nodeKernels++
			}
		}
	}
	for _, g := range c.graphs {
		if i := at(g.StartNS); i >= 0 {
			segs[i].graphs++
		}
	}
	for _, m := range c.memcpys {
		if i := at(m.StartNS); i >= 0 {
			segs[i].memcpys++
		}
	}
	for _, a := range c.apis {
		if i := at(a.StartNS); i >= 0 {
			segs[i].apis++
		}
	}
	t.Logf("segments %+v", segs)
	g, n, o, d, g2 := segs[0], segs[1], segs[2], segs[3], segs[4]
	if g.graphs == 0 || g.kernels == 0 || g.nodeKernels != 0 {
		t.Errorf("graph phase %+v", g)
	}
	// Each loop iteration launches one eager kernel and one 3-node graph; an iteration that
	// straddles a segment edge can split, so allow one iteration either side.
	threeToOne := func(s seg) bool {
		d := s.nodeKernels - 3*(s.kernels-s.nodeKernels)
		return d >= -6 && d <= 6
	}
	if n.graphs != 0 || n.nodeKernels == 0 || !threeToOne(n) {
		t.Errorf("nodes phase %+v", n)
	}
	if o.graphs != 0 || o.kernels != 0 || o.memcpys == 0 || o.apis == 0 {
		t.Errorf("off phase %+v", o)
	}
	if d != (seg{}) {
		t.Errorf("dormant phase %+v", d)
	}
	if g2.graphs != 0 || g2.nodeKernels == 0 || !threeToOne(g2) {
		t.Errorf("re-enabled phase (per-node fallback) %+v", g2)
	}
	if !hasLog(c, "graph_trace_unavailable") {
		t.Errorf("no graph_trace_unavailable log: %q", c.logs)
	}
	// names are emitted before first use in each enabled epoch: epoch 1 uses
	// aten (eager) then nvjet and triton (graph nodes); epoch 2 the same (per-node fallback).
	if c.nameRecs != 6 {
		t.Errorf("kernel_name records %d, want 6", c.nameRecs)
	}
	if h := r.Header(); h.ControlAck != h.ControlSeq || h.ControlSeq != uint32(len(phases)) {
		t.Errorf("ack %d seq %d", h.ControlAck, h.ControlSeq)
	}
}

// TestLateGraphTrace: GRAPH_TRACE is never enabled after cuInit. A dormant agent (default
// PROFILEMATE_ARM=light) enabled at graph level records graph launches per node, with a
// log saying why; PROFILEMATE_ARM=lazy enables it anyway, and the mock CUPTI then crashes
// on the first replay of a graph instantiated before, as CUPTI 13.0U1 did on an H200.
func TestLateGraphTrace(t *testing.T) {
	p := start(t, baseEnv(true, "PROFILEMATE_FLUSH_MS=50"), "loop")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 5*time.Second)
	r := findRing(t, pid, 2*time.Second)
	if err := Enable(r, ring.DetailGraph, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	p.quit()
	c := newCapture()
	c.drain(t, r)
	nodes := 0
	for _, k := range c.kernels {
		if k.GraphID != 0 {
			nodes++
		}
	}
	if len(c.graphs) != 0 || nodes == 0 || !hasLog(c, "graph_trace_unavailable") {
		t.Errorf("late graph level: %d graph_trace, %d node kernels, logs %q", len(c.graphs), nodes, c.logs)
	}

	p = start(t, baseEnv(true, "PROFILEMATE_FLUSH_MS=50", "PROFILEMATE_ARM=lazy"), "loop")
	pid = pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 5*time.Second)
	r = findRing(t, pid, 2*time.Second)
	r.SetControl(true, ring.DetailGraph, 0)
	err := p.wait(5 * time.Second)
	if err == nil || !strings.Contains(p.stderr(), "real CUPTI 13.0U1 crashes here") {
		t.Errorf("ARM=lazy: exit %v, stderr %q", err, p.stderr())
	}
}

// TestOrphanedTracer: a tracer that stops heartbeating turns the agent dormant.
func TestOrphanedTracer(t *testing.T) {
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_ORPHAN_TIMEOUT=0.3", "PROFILEMATE_FLUSH_MS=50"), "loop")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 5*time.Second)
	r := findRing(t, pid, 2*time.Second)
	r.Heartbeat()
	c := newCapture()
	ok := pollUntil(t, r, c, 3*time.Second, func() bool { return len(c.controls) >= 2 })
	if !ok {
		t.Fatalf("agent did not go dormant: %+v", c.controls)
	}
	cc := c.controls[1]
	if cc.Reason != 2 || cc.Enable != 0 {
		t.Fatalf("control change %+v", cc)
	}
	time.Sleep(300 * time.Millisecond)
	p.quit()
	c.drain(t, r)
	late := 0
	for _, k := range c.kernels {
		if k.StartNS > cc.TsNS+20e6 {
			late++
		}
	}
	if late != 0 || len(c.kernels) == 0 {
		t.Errorf("kernels %d, after going dormant %d", len(c.kernels), late)
	}
}

// TestYield: the tracer asks the agent to hand CUPTI to torch.profiler, and later
// takes it back (re-arm: subscribe, callbacks, clock, kinds again).
func TestYield(t *testing.T) {
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_FLUSH_MS=50"), "loop")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 5*time.Second)
	r := findRing(t, pid, 2*time.Second)
	time.Sleep(200 * time.Millisecond)
	if err := Yield(r, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.ProducerState != ring.StatePassive {
		t.Errorf("state %d", h.ProducerState)
	}
	time.Sleep(300 * time.Millisecond)
	c := newCapture()
	c.drain(t, r)
	yieldAt := c.controls[len(c.controls)-1]
	if yieldAt.Reason != 3 || len(c.kernels) == 0 {
		t.Fatalf("controls %+v kernels %d", c.controls, len(c.kernels))
	}
	for _, k := range c.kernels {
		if k.StartNS > yieldAt.TsNS+20e6 {
			t.Fatalf("kernel after yield")
		}
	}
	before := len(c.kernels)
	// take CUPTI back
	if err := Enable(r, ring.DetailGraph, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.ProducerState != ring.StateRunning {
		t.Errorf("state after re-arm %d", h.ProducerState)
	}
	time.Sleep(300 * time.Millisecond)
	p.quit()
	c.drain(t, r)
	if len(c.kernels) <= before || len(c.graphs) == 0 {
		t.Errorf("no records after re-arm: kernels %d -> %d", before, len(c.kernels))
	}
	var yielded, rearmed bool
	for _, l := range c.logs {
		yielded = yielded || strings.Contains(l, "yielded CUPTI")
		rearmed = rearmed || strings.Contains(l, "re-armed")
	}
	if !yielded || !rearmed {
		t.Errorf("logs %q", c.logs)
	}
}

// TestPythonSpawn: a Python (ctypes) program, its multiprocessing fork child
// (forked before CUDA, leaves through os._exit) and its spawn child each produce
// their own ring, delivered over the control socket.
func TestPythonSpawn(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 not found (needed by the ctypes end-to-end test)")
	}
	cs, err := ring.ListenControl(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	p := startCmd(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_CONTROL_SOCKET="+cs.Path()), py, "testdata/e2e_prog.py")
	pid := pidOf(t, p.waitLine("PID", 10*time.Second))
	var child, forkChild, forkExit, mainTid int
	fmt.Sscanf(p.waitLine("FORKCHILD", 30*time.Second), "FORKCHILD %d %d", &forkChild, &forkExit)
	if forkExit != 0 {
		t.Fatalf("fork child exit %d", forkExit)
	}
	fmt.Sscanf(p.waitLine("CHILD", 30*time.Second), "CHILD %d", &child)
	fmt.Sscanf(p.waitLine("TID", 10*time.Second), "TID %d", &mainTid)
	p.waitLine("READY", 10*time.Second)
	readers := map[int]*ring.Reader{}
	deadline := time.After(5 * time.Second)
	for len(readers) < 3 {
		select {
		case in := <-cs.Incoming():
			r, err := ring.OpenFile(in.File)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			readers[in.Pid] = r
		case <-deadline:
			t.Fatalf("rings %v (pid %d fork child %d spawn child %d)", readers, pid, forkChild, child)
		}
	}
	p.quit()
	if st := readers[forkChild].Header().ProducerState; st != ring.StateExited {
		t.Errorf("fork child (os._exit) state %d: the _exit interposition must have flushed", st)
	}
	for who, want := range map[int][2]int{pid: {12, 2}, child: {4, 1}, forkChild: {4, 1}} {
		r := readers[who]
		if r == nil {
			t.Fatalf("no ring for %d: %v", who, readers)
		}
		c := newCapture()
		c.drain(t, r)
		var bytes uint64
		for _, m := range c.memcpys {
			bytes += m.Bytes
		}
		if len(c.kernels) != want[0] || len(c.graphs) != want[1] || r.Header().ProducerState != ring.StateExited {
			t.Errorf("pid %d: kernels %d graphs %d state %d", who, len(c.kernels), len(c.graphs), r.Header().ProducerState)
		}
		if who == pid {
			if bytes != 8192+256 {
				t.Errorf("memcpy bytes %d", bytes)
			}
			for _, a := range c.apis {
				if a.TID != uint32(mainTid) {
					t.Errorf("api tid %d, python native id %d", a.TID, mainTid)
					break
				}
			}
			names := []string{}
			for _, n := range c.names {
				names = append(names, n)
			}
			sort.Strings(names)
			if fmt.Sprint(names) != fmt.Sprint([]string{atenName, nvjetName}) { // triton runs only inside the graph
				t.Errorf("names %v", names)
			}
		}
	}
}

// TestMemoryBudget: when the activity buffers reach PROFILEMATE_MAX_MB, CUPTI
// still gets (discard) buffers, their records are counted, and memory stays bounded.
func TestMemoryBudget(t *testing.T) {
	const n = 60000
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_MAX_MB=4", "PROFILEMATE_RING_KB=1024",
		"PROFILEMATE_BUFFER_KB=256", "PROFILEMATE_FLUSH_MS=500"), "flood", fmt.Sprint(n))
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 60*time.Second)
	r := findRing(t, pid, 2*time.Second)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	p.quit()
	c := newCapture()
	c.drain(t, r)
	s := c.lastStats()
	h := r.Header()
	t.Logf("stats %+v; ring dropped %d", s, h.RecordsDropped)
	if s.BuffersDiscard == 0 || s.RecordsDiscarded == 0 {
		t.Errorf("budget never reached: %+v", s)
	}
	if s.PoolBytes > 4<<20 {
		t.Errorf("pool %d bytes above the 4 MiB budget", s.PoolBytes)
	}
	// every record CUPTI produced is accounted for: converted, discarded or dropped by CUPTI
	if got := s.RecordsConverted + s.RecordsDiscarded + s.CuptiDropped; got != 2*n {
		t.Errorf("converted %d + discarded %d + cupti dropped %d = %d, want %d", s.RecordsConverted,
			s.RecordsDiscarded, s.CuptiDropped, got, 2*n)
	}
	if h.SourceDropped < s.RecordsDiscarded {
		t.Errorf("source_dropped %d < discarded %d", h.SourceDropped, s.RecordsDiscarded)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			t.Logf("target %s", l)
		}
	}
}

// TestKernelSampling: with sample_every = N the kernel kind is on for one flush
// period in N; window edges are control_change records (reason 4/5); graph
// replays stay complete.
func TestKernelSampling(t *testing.T) {
	p := start(t, baseEnv(true, "PROFILEMATE_FLUSH_MS=100", "PROFILEMATE_ARM=graph"), "loop")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 5*time.Second)
	r := findRing(t, pid, 2*time.Second)
	r.Heartbeat()
	r.SetControl(true, ring.DetailGraph, 4)
	if err := WaitAck(r, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1700 * time.Millisecond)
	p.quit()
	c := newCapture()
	c.drain(t, r)
	var opens, closes int
	var windows [][2]uint64
	for _, cc := range c.controls {
		switch cc.Reason {
		case 4:
			opens++
			windows = append(windows, [2]uint64{cc.TsNS, 1 << 63})
		case 5:
			closes++
			if len(windows) > 0 {
				windows[len(windows)-1][1] = cc.TsNS
			} else {
				windows = append(windows, [2]uint64{0, cc.TsNS}) // the first window opened with the enable
			}
		}
		if cc.SampleEvery != 4 {
			t.Errorf("control change %+v", cc)
		}
	}
	if c.controls[0].Reason != 0 || closes < 2 || opens < 2 {
		t.Fatalf("window edges: %d opened, %d closed (%+v)", opens, closes, c.controls)
	}
	if len(windows) > 0 && windows[0][0] == 0 {
		windows[0][0] = c.controls[0].TsNS
	}
	outside := 0
	for _, k := range c.kernels {
		in := false
		for _, w := range windows {
			if k.StartNS >= w[0]-5e6 && k.StartNS <= w[1]+5e6 {
				in = true
			}
		}
		if !in {
			outside++
		}
	}
	iters := 0
	fmt.Sscanf(strings.TrimPrefix(p.allLines()[len(p.allLines())-1], ""), "ITERS %d", &iters)
	t.Logf("%d kernels in %d windows, %d graph replays, %d loop iterations", len(c.kernels), opens+1, len(c.graphs), iters)
	if outside != 0 {
		t.Errorf("%d kernels outside the sampling windows", outside)
	}
	if len(c.kernels) == 0 || len(c.kernels) > len(c.graphs)/2 {
		t.Errorf("kernels %d not sampled (graph replays %d)", len(c.kernels), len(c.graphs))
	}
	launches := 0
	for _, a := range c.apis {
		if a.Cbid == 514 {
			launches++
		}
	}
	if launches == 0 || len(c.graphs) != launches {
		t.Errorf("graph replays %d, graph launch calls %d: graph trace must stay complete", len(c.graphs), launches)
	}
}

// TestHijackDetected: a second client that ignores the failed subscribe and
// registers its own buffer callbacks (Kineto with KINETO_USE_DAEMON=1) is seen
// through the preloaded export; the agent goes passive and says so; the call
// still reaches libcupti.
func TestHijackDetected(t *testing.T) {
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_FLUSH_MS=50"), "hijack")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("REGISTER 0", 5*time.Second)
	p.waitLine("READY", 5*time.Second)
	r := findRing(t, pid, 2*time.Second)
	time.Sleep(200 * time.Millisecond)
	p.quit()
	c := newCapture()
	c.drain(t, r)
	if st := r.Header().ProducerState; st != ring.StatePassive {
		t.Errorf("state %d", st)
	}
	found := false
	for _, l := range c.logs {
		found = found || strings.HasPrefix(l, "cupti_hijacked:")
	}
	if !found || len(c.kernels) != 4 {
		t.Errorf("logs %q, kernels %d (want the 4 before the hijack)", c.logs, len(c.kernels))
	}
}

// TestManyKernelNames: thousands of distinct names (the interning tables grow
// several times); the same text at two addresses gets one name id; every
// kernel's name id resolves to its own name.
func TestManyKernelNames(t *testing.T) {
	const n = 3000
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "FAKECUDA_DUP_NAMES=1"), "manynames", fmt.Sprint(n))
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 30*time.Second)
	r := findRing(t, pid, 2*time.Second)
	p.quit()
	c := newCapture()
	c.drain(t, r)
	if c.nameRecs != n || len(c.names) != n || len(c.kernels) != 2*n || !c.nameBeforeUse {
		t.Fatalf("names %d records %d kernels %d", len(c.names), c.nameRecs, len(c.kernels))
	}
	ids := map[string]uint32{}
	for i, k := range c.kernels {
		want := fmt.Sprintf("kernel_number_%dPf", i/2)
		if !strings.HasSuffix(c.names[k.NameID], want) {
			t.Fatalf("kernel %d has name %q", i, c.names[k.NameID])
		}
		if id, ok := ids[want]; ok && id != k.NameID {
			t.Fatalf("%s interned twice (%d, %d)", want, id, k.NameID)
		}
		ids[want] = k.NameID
	}
	if s := c.lastStats(); s.NamesInterned != n {
		t.Errorf("names_interned %d", s.NamesInterned)
	}
	short, _ := Demangle(c.names[c.kernels[0].NameID])
	if short != "kernel_number_0" {
		t.Errorf("demangled %q", short)
	}
}

// TestNoTimestampCallback: where CUPTI refuses the timestamp callback (WSL), the
// agent still collects, says so after process_info, and clears the flag bit.
func TestNoTimestampCallback(t *testing.T) {
	c, r, _, _, _, _ := runBasic(t, baseEnv(true, "PROFILEMATE_START=graph", "MOCK_CUPTI_NO_TSCB=1"))
	if c.types[0] != record.TypeProcessInfo || c.types[1] != record.TypeLog || !strings.Contains(c.logs[0], "timestamp callback unavailable") {
		t.Fatalf("stream starts %v, logs %q", c.types[:3], c.logs)
	}
	if c.procInfo[0].AgentFlags&8 != 0 || len(c.kernels) != 27 || r.Header().ProducerState != ring.StateExited {
		t.Errorf("flags %#x kernels %d", c.procInfo[0].AgentFlags, len(c.kernels))
	}
}

func hasLog(c *capture, sub string) bool {
	for _, l := range c.logs {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// TestDormantLeavesCUPTIUntouched: preloaded with no tracer (the default PROFILEMATE_ARM=none),
// the agent makes no CUPTI call at all until the first enable, which arms CUPTI late: records
// flow, the ring says "late start", and graphs come per node (GRAPH_TRACE cannot start late).
func TestDormantLeavesCUPTIUntouched(t *testing.T) {
	p := start(t, baseEnv(true, "PROFILEMATE_FLUSH_MS=50", "MOCK_CUPTI_LOG=1"), "loop")
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 5*time.Second)
	r := findRing(t, pid, 2*time.Second)
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(p.stderr(), "cuptiSubscribe") || strings.Contains(p.stderr(), "RegisterCallbacks") {
		t.Fatalf("dormant agent called CUPTI: %q", p.stderr())
	}
	if h := r.Header(); h.ProducerFlags&ring.FlagArmedAtInit != 0 || h.ProducerState != ring.StateRunning {
		t.Fatalf("dormant header: flags %#x state %d", h.ProducerFlags, h.ProducerState)
	}
	if err := Enable(r, ring.DetailGraph, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	p.quit()
	c := newCapture()
	c.drain(t, r)
	if !strings.Contains(p.stderr(), "cuptiSubscribe") {
		t.Errorf("enable did not arm CUPTI: %q", p.stderr())
	}
	if r.Header().ProducerFlags&ring.FlagLateStart == 0 || !hasLog(c, "armed CUPTI at the first enable") {
		t.Errorf("late start not reported: flags %#x logs %q", r.Header().ProducerFlags, c.logs)
	}
	nodes := 0
	for _, k := range c.kernels {
		if k.GraphID != 0 {
			nodes++
		}
	}
	if len(c.kernels) == 0 || nodes == 0 || len(c.graphs) != 0 {
		t.Errorf("after a late enable: %d kernels (%d in graphs), %d graph_trace", len(c.kernels), nodes, len(c.graphs))
	}
}
