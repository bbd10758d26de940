//go:build linux

package cupti

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/record"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

// Late start (pm_inject_start) and detach: docs/injection.md §2, §3, §5.

func writeConf(t testing.TB, dir string, lines ...string) string {
	t.Helper()
	p := filepath.Join(dir, "inject.conf")
	body := "# written by the test\n" + strings.Join(lines, "\n") + "\nunknown_key=ignored\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startInjectProg starts testdata/inject_prog (a running CUDA application without the agent).
func startInjectProg(t testing.TB, preload bool, extra ...string) (*proc, int) {
	t.Helper()
	p := startCmd(t, baseEnv(preload, extra...), filepath.Join(testLib, "inject_prog"), agentSO)
	pid := pidOf(t, p.waitLine("PID", 10*time.Second))
	p.waitLine("READY", 10*time.Second)
	return p, pid
}

func (p *proc) inject(conf string) int {
	p.t.Helper()
	p.send("inject " + conf)
	l := p.waitLine("INJECT ", 5*time.Second)
	rc, err := strconv.Atoi(strings.Fields(l)[1])
	if err != nil {
		p.t.Fatalf("bad line %q", l)
	}
	return rc
}

// procState is what a detach must give back, read from /proc/PID.
type procState struct {
	agentThreads int // threads named pm-cupti
	bootThreads  int // threads named pm-pyboot
	ringFds      int // fds on the agent's memfd
	ringMaps     int // mappings of the agent's memfd
	fds, maps    int
	rssKB        int
}

func readProc(t testing.TB, pid int) procState {
	t.Helper()
	var s procState
	dir := fmt.Sprintf("/proc/%d", pid)
	tasks, _ := os.ReadDir(dir + "/task")
	for _, e := range tasks {
		b, _ := os.ReadFile(filepath.Join(dir, "task", e.Name(), "comm"))
		switch strings.TrimSpace(string(b)) {
		case "pm-cupti":
			s.agentThreads++
		case "pm-pyboot":
			s.bootThreads++
		}
	}
	fds, _ := os.ReadDir(dir + "/fd")
	for _, e := range fds {
		s.fds++
		if l, _ := os.Readlink(filepath.Join(dir, "fd", e.Name())); strings.HasPrefix(l, "/memfd:profilemate-cupti") {
			s.ringFds++
		}
	}
	maps, _ := os.ReadFile(dir + "/maps")
	for _, l := range strings.Split(string(maps), "\n") {
		if l == "" {
			continue
		}
		s.maps++
		if strings.Contains(l, "profilemate-cupti") {
			s.ringMaps++
		}
	}
	status, _ := os.ReadFile(dir + "/status")
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			s.rssKB, _ = strconv.Atoi(strings.Fields(l)[1])
		}
	}
	return s
}

// waitGone waits until the agent left no thread, ring fd or ring mapping in pid.
func waitGone(t testing.TB, pid int, timeout time.Duration) procState {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := readProc(t, pid)
		if s.agentThreads == 0 && s.ringFds == 0 && s.ringMaps == 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("after detach: %+v (want no pm-cupti thread, ring fd or ring mapping)", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitState(t testing.TB, r *ring.Reader, want uint32, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.Header().ProducerState != want {
		if time.Now().After(deadline) {
			t.Fatalf("producer_state %d, want %d", r.Header().ProducerState, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestInjectLateStartAndDetach(t *testing.T) {
	p, pid := startInjectProg(t, false, "MOCK_CUPTI_ENABLE_STALL_MS=60", "MOCK_CUPTI_LOG=1")
	dir := t.TempDir()
	if s := readProc(t, pid); s.agentThreads != 0 || s.ringFds != 0 {
		t.Fatalf("agent present before injection: %+v", s)
	}
	if rc := p.inject(filepath.Join(dir, "missing.conf")); rc != -int(2) {
		t.Fatalf("pm_inject_start(missing conf) = %d, want -ENOENT", rc)
	}
	logPath := filepath.Join(dir, "agent.log")
	conf := writeConf(t, dir, "log="+logPath, "start=none", " orphan_timeout_s = 30 ", "flush_ms=50", "pyhook_from_agent=1")
	t0 := time.Now()
	if rc := p.inject(conf); rc != 0 {
		t.Fatalf("pm_inject_start = %d; stderr %s", rc, p.stderr())
	}
	t.Logf("pm_inject_start round trip (stdin → reply): %v", time.Since(t0))
	p.send("env")
	if l := p.waitLine("ENV", 5*time.Second); l != "ENV -" {
		t.Errorf("a late load armed CUDA_INJECTION64_PATH for the children: %q", l)
	}
	if rc := p.inject(conf); rc != 1 {
		t.Errorf("second pm_inject_start = %d, want 1 (already running)", rc)
	}
	r := findRing(t, pid, 5*time.Second)
	waitState(t, r, ring.StateRunning, 5*time.Second)
	h := r.Header()
	if h.ProducerFlags&ring.FlagLateStart == 0 || h.LateStartNs == 0 || h.LateStartNs < h.CreatedNs-uint64(time.Second) ||
		h.FirstEnableNs != 0 {
		t.Fatalf("header after late start: %+v", h)
	}
	// Dormant: CUPTI untouched, nothing recorded (the application keeps launching).
	time.Sleep(200 * time.Millisecond)
	c := newCapture()
	c.drain(t, r)
	if len(c.kernels) != 0 || strings.Contains(p.stderr(), "cuptiSubscribe") || strings.Contains(p.stderr(), "enable ") {
		t.Fatalf("dormant injected agent touched CUPTI: kernels %d, mock log %q", len(c.kernels), p.stderr())
	}
	if !hasLog(c, "no CPython") {
		t.Errorf("pyhook_from_agent=1 in a C program must log that no CPython runs: %q", c.logs)
	}
	if err := Enable(r, ring.DetailGraph, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	ok := pollUntil(t, r, c, 5*time.Second, func() bool {
		nodes := 0
		for _, k := range c.kernels {
			if k.GraphID != 0 {
				nodes++
			}
		}
		return len(c.kernels) > 50 && nodes >= 6 && len(c.memcpys) > 3 && len(c.apis) > 20
	})
	if !ok {
		t.Fatalf("late enable: kernels %d memcpys %d apis %d logs %q", len(c.kernels), len(c.memcpys), len(c.apis), c.logs)
	}
	h = r.Header()
	if h.FirstEnableNs < uint64(60*time.Millisecond) || h.FirstEnableNs > uint64(5*time.Second) {
		t.Errorf("first_enable_ns %d: want the mock's 60 ms kernel-enable stall and a bit", h.FirstEnableNs)
	}
	t.Logf("first_enable_ns %.1f ms (mock stall 60 ms)", float64(h.FirstEnableNs)/1e6)
	if len(c.graphs) != 0 || !hasLog(c, "graph_trace_unavailable") {
		t.Errorf("GRAPH_TRACE must never be enabled late: %d graph_trace records, logs %q", len(c.graphs), c.logs)
	}
	if !hasLog(c, "device 0: Mock GPU H100 (sm_90, 132 SMs, 81920 MiB)") || !hasLog(c, "context 1 on device 0") {
		t.Errorf("DEVICE/CONTEXT dump missing: %q", c.logs)
	}
	names := c.kernelsNamed()
	if names["late_kernel_aten"] == 0 || names["triton_late_0"] == 0 || !c.nameBeforeUse {
		t.Errorf("kernel names %v (name before use %v)", names, c.nameBeforeUse)
	}

	if err := Detach(r, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	h = r.Header()
	if h.ProducerState != ring.StateDetached || h.ControlAck != h.ControlSeq {
		t.Fatalf("after detach: %+v", h)
	}
	before := len(c.kernels)
	c.drain(t, r)
	if len(c.types) == 0 || c.types[len(c.types)-1] != record.TypeStreamStats {
		t.Errorf("the last record after a detach must be stream_stats: %v", c.types[max(0, len(c.types)-5):])
	}
	last := c.controls[len(c.controls)-1]
	if last.Reason != 6 || last.Enable != 0 {
		t.Errorf("last control_change %+v, want reason 6 (detach)", last)
	}
	t.Logf("kernels before detach %d, after the forced flush %d", before, len(c.kernels))
	waitGone(t, pid, 2*time.Second)
	// The application lives on, untraced; CUPTI was unsubscribed, never finalized.
	p.send("launches")
	n1, _ := strconv.Atoi(strings.Fields(p.waitLine("LAUNCHES", 5*time.Second))[1])
	time.Sleep(100 * time.Millisecond)
	p.send("launches")
	n2, _ := strconv.Atoi(strings.Fields(p.waitLine("LAUNCHES", 5*time.Second))[1])
	if n2 <= n1 {
		t.Errorf("application stopped launching after detach: %d → %d", n1, n2)
	}
	if strings.Contains(p.stderr(), "cuptiFinalize") || strings.Contains(p.stderr(), "crashes here") {
		t.Errorf("mock log: %s", p.stderr())
	}
	if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "invalid") {
		t.Errorf("agent log: %s", b)
	}
	p.quit()
}

// TestInjectCycles: 20 start/enable/detach cycles in one process leave no thread, fd or mapping
// behind and bounded memory; each cycle starts afresh (records, late bit, first_enable_ns).
func TestInjectCycles(t *testing.T) {
	p, pid := startInjectProg(t, false)
	dir := t.TempDir()
	conf := writeConf(t, dir, "log="+filepath.Join(dir, "agent.log"), "flush_ms=20", "ring_kb=1024")
	var after1 procState
	const cycles = 20
	for i := 1; i <= cycles; i++ {
		if rc := p.inject(conf); rc != 0 {
			t.Fatalf("cycle %d: pm_inject_start = %d", i, rc)
		}
		r := findRing(t, pid, 5*time.Second)
		waitState(t, r, ring.StateRunning, 5*time.Second)
		if err := Enable(r, ring.DetailNodes, 5*time.Second); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		c := newCapture()
		if !pollUntil(t, r, c, 5*time.Second, func() bool { return len(c.kernels) >= 10 }) {
			t.Fatalf("cycle %d: %d kernels, logs %q", i, len(c.kernels), c.logs)
		}
		if h := r.Header(); h.FirstEnableNs == 0 || h.ProducerFlags&ring.FlagLateStart == 0 || len(c.procInfo) != 1 {
			t.Fatalf("cycle %d: header %+v process_info %d", i, h, len(c.procInfo))
		}
		if err := Detach(r, 5*time.Second); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		r.Close()
		s := waitGone(t, pid, 2*time.Second)
		if i == 1 {
			after1 = s
		}
		if i == cycles {
			t.Logf("after cycle 1: %+v; after cycle %d: %+v", after1, cycles, s)
			if s.fds != after1.fds || s.maps > after1.maps+2 || s.rssKB > after1.rssKB+8192 {
				t.Errorf("resources grew over %d cycles: %+v → %+v", cycles, after1, s)
			}
		}
	}
	p.quit()
}

// TestInjectOrphanDetach: an injected agent whose tracer stopped heart-beating detaches itself.
func TestInjectOrphanDetach(t *testing.T) {
	p, pid := startInjectProg(t, false)
	dir := t.TempDir()
	conf := writeConf(t, dir, "orphan_timeout_s=0.6", "flush_ms=20")
	if rc := p.inject(conf); rc != 0 {
		t.Fatalf("pm_inject_start = %d", rc)
	}
	r := findRing(t, pid, 5*time.Second)
	if err := Enable(r, ring.DetailNodes, 5*time.Second); err != nil { // heartbeats once
		t.Fatal(err)
	}
	c := newCapture()
	if !pollUntil(t, r, c, 5*time.Second, func() bool { return len(c.kernels) > 0 }) {
		t.Fatal("no kernels")
	}
	hb := time.Now()
	waitState(t, r, ring.StateDetached, 5*time.Second)
	if d := time.Since(hb); d < 400*time.Millisecond {
		t.Errorf("detached %v after the last heartbeat; timeout is 0.6 s", d)
	}
	c.drain(t, r)
	if last := c.controls[len(c.controls)-1]; last.Reason != 2 || c.types[len(c.types)-1] != record.TypeStreamStats {
		t.Errorf("orphan detach: last control_change %+v, last record %v", last, c.types[len(c.types)-1])
	}
	waitGone(t, pid, 2*time.Second)
	// A tracer that never shows up at all: detached orphan_timeout_s after the start.
	if rc := p.inject(conf); rc != 0 {
		t.Fatalf("second pm_inject_start = %d", rc)
	}
	r2 := findRing(t, pid, 5*time.Second)
	waitState(t, r2, ring.StateDetached, 5*time.Second)
	waitGone(t, pid, 2*time.Second)
	p.quit()
}

// TestInjectStartConfAndPreloaded: start=nodes arms at once; a preloaded agent answers 1 to
// pm_inject_start and treats detach (3) as yield, keeping its ring and thread.
func TestInjectStartConfAndPreloaded(t *testing.T) {
	p, pid := startInjectProg(t, false)
	conf := writeConf(t, t.TempDir(), "start=nodes", "flush_ms=20")
	if rc := p.inject(conf); rc != 0 {
		t.Fatalf("pm_inject_start = %d", rc)
	}
	r := findRing(t, pid, 5*time.Second)
	c := newCapture()
	if !pollUntil(t, r, c, 5*time.Second, func() bool { return len(c.kernels) > 10 }) {
		t.Fatalf("start=nodes: %d kernels, logs %q", len(c.kernels), c.logs)
	}
	if h := r.Header(); h.FirstEnableNs == 0 || h.ControlEnable != 1 || c.controls[0].Reason != 1 {
		t.Errorf("start=nodes: header %+v controls %+v", h, c.controls)
	}
	if err := Detach(r, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 2*time.Second)
	p.quit()

	// Preloaded: the agent started at cuInit owns the process.
	p, pid = startInjectProg(t, true, "PROFILEMATE_FLUSH_MS=20")
	r = findRing(t, pid, 5*time.Second)
	if rc := p.inject(conf); rc != 1 {
		t.Fatalf("pm_inject_start in a preloaded process = %d, want 1", rc)
	}
	if err := Enable(r, ring.DetailNodes, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c = newCapture()
	if !pollUntil(t, r, c, 5*time.Second, func() bool { return len(c.kernels) > 10 }) {
		t.Fatalf("preloaded: %d kernels", len(c.kernels))
	}
	if err := Detach(r, 5*time.Second); !errors.Is(err, ErrNotDetached) {
		t.Fatalf("Detach on a preloaded agent: %v, want ErrNotDetached", err)
	}
	if h := r.Header(); h.ProducerState != ring.StatePassive || h.LateStartNs != 0 {
		t.Errorf("preloaded agent after 3: %+v", h)
	}
	if s := readProc(t, pid); s.agentThreads != 1 || s.ringFds != 1 {
		t.Errorf("preloaded agent must keep its thread and ring: %+v", s)
	}
	p.quit()
}

// TestInjectPythonBootstrap: with a real CPython, ctypes loads the agent and pm_inject_start
// (pyhook_from_agent=1) runs profilemate_trace.late.start under the GIL on the agent's side —
// with the main thread busy in Python, sleeping, calling through PyDLL (GIL held during the
// call) or holding the GIL in C for 1.5 s (the agent keeps serving meanwhile). A failing hook
// goes to the log, never to the target's stderr.
func TestInjectPythonBootstrap(t *testing.T) {
	py := "/root/.pyenv/versions/3.12.1/bin/python"
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Fatal("no python3 (needed for the CPython bootstrap test)")
		}
	}
	stub := func(t *testing.T, body string) string {
		d := filepath.Join(t.TempDir(), "pyhook")
		pkg := filepath.Join(d, "profilemate_trace")
		if err := os.MkdirAll(pkg, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(pkg, "__init__.py"), nil, 0o644)
		os.WriteFile(filepath.Join(pkg, "late.py"), []byte(body), 0o644)
		return d
	}
	// Like the real hook, it starts a daemon thread; it must not inherit a name of the agent's.
	const okLate = `import os, sys, threading, time
def start(conf_path):
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    with open(os.path.join(os.path.dirname(conf_path), "late-called"), "a") as f:
        f.write("%s|%s|%s\n" % (conf_path, threading.current_thread().name, sys.path[0]))
`
	type run struct{ py, mode string }
	runs := []run{{py, "busy"}, {py, "sleep"}, {py, "pydll"}, {py, "gilheld"}}
	for _, v := range []string{"3.9.18", "3.10.13", "3.11.7", "3.13.0"} { // other C-API generations, where present
		if other := "/root/.pyenv/versions/" + v + "/bin/python"; fileExists(other) {
			runs = append(runs, run{other, "busy"})
		}
	}
	for _, rn := range runs {
		py, mode := rn.py, rn.mode
		t.Run(filepath.Base(filepath.Dir(filepath.Dir(py)))+"-"+mode, func(t *testing.T) {
			hook := stub(t, okLate)
			dir := t.TempDir()
			logPath := filepath.Join(dir, "agent.log")
			conf := writeConf(t, dir, "pyhook_dir="+hook, "pyhook_from_agent=1", "log="+logPath)
			p := startCmd(t, baseEnv(false), py, "testdata/inject_prog.py", agentSO, conf, mode)
			pid := pidOf(t, p.waitLine("PID", 10*time.Second))
			var rc int
			var secs float64
			fmt.Sscanf(p.waitLine("INJECT", 10*time.Second), "INJECT %d %f", &rc, &secs)
			if rc != 0 || secs > 0.5 {
				t.Fatalf("pm_inject_start = %d in %.3f s", rc, secs)
			}
			marker := filepath.Join(dir, "late-called")
			if mode == "gilheld" {
				// The GIL is held in C for 1.5 s: the hook cannot start yet, the agent serves.
				r := findRing(t, pid, 2*time.Second)
				if err := Enable(r, ring.DetailNodes, time.Second); err != nil {
					t.Fatalf("agent blocked while the GIL is held: %v", err)
				}
				if _, err := os.Stat(marker); err == nil {
					t.Fatal("late.start ran while the main thread held the GIL")
				}
				p.waitLine("GIL_RELEASED", 5*time.Second)
			}
			deadline := time.Now().Add(10 * time.Second)
			var got []byte
			for {
				if got, _ = os.ReadFile(marker); len(got) > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			want := conf + "|Dummy-"
			if !strings.HasPrefix(string(got), want) || !strings.HasSuffix(strings.TrimSpace(string(got)), "|"+hook) {
				lg, _ := os.ReadFile(logPath)
				t.Fatalf("late.start call %q, want %q…|%s; log %q stderr %q", got, want, hook, lg, p.stderr())
			}
			// The bootstrap thread is gone; the hook's thread carries the process's name.
			gone := time.Now().Add(2 * time.Second)
			for readProc(t, pid).bootThreads != 0 && time.Now().Before(gone) {
				time.Sleep(10 * time.Millisecond)
			}
			if s := readProc(t, pid); s.bootThreads != 0 || s.agentThreads != 1 {
				t.Errorf("threads after the bootstrap: %+v (want no pm-pyboot, one pm-cupti)", s)
			}
			p.send("quit")
			if l := p.waitLine("MAIN_CLEAN", 10*time.Second); l != "MAIN_CLEAN True" {
				t.Errorf("the bootstrap bound names in __main__: %q", l)
			}
			if err := p.wait(10 * time.Second); err != nil {
				t.Errorf("exit: %v; stderr %q", err, p.stderr())
			}
			if s := p.stderr(); s != "" {
				t.Errorf("target stderr not empty: %q", s)
			}
		})
	}
	t.Run("failing-hook", func(t *testing.T) {
		hook := stub(t, "def start(conf_path):\n    raise RuntimeError('boom from the stub hook')\n")
		dir := t.TempDir()
		logPath := filepath.Join(dir, "agent.log")
		conf := writeConf(t, dir, "pyhook_dir="+hook, "pyhook_from_agent=1", "log="+logPath)
		p := startCmd(t, baseEnv(false), py, "testdata/inject_prog.py", agentSO, conf, "sleep")
		p.waitLine("INJECT 0", 10*time.Second)
		deadline := time.Now().Add(10 * time.Second)
		var lg []byte
		for !strings.Contains(string(lg), "RuntimeError: boom") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			lg, _ = os.ReadFile(logPath)
		}
		if !strings.Contains(string(lg), "Python hook late start failed") || !strings.Contains(string(lg), "RuntimeError: boom") {
			t.Fatalf("log %q", lg)
		}
		p.send("quit")
		p.waitLine("MAIN_CLEAN True", 10*time.Second)
		p.wait(10 * time.Second)
		if s := p.stderr(); strings.Contains(s, "Traceback") || strings.Contains(s, "boom") {
			t.Errorf("the hook's exception reached the target's stderr: %q", s)
		}
	})
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
