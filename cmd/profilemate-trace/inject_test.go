package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/export"
	"github.com/profilemate/profilemate-trace/internal/collect"
)

// Tests of attach --inject against CPython processes started with nothing preloaded, driving the
// fake libcuda with the mock libcupti loaded (as torch loads libcupti): the real agent and the
// real hook are loaded by ptrace, capture, and detach.

func requireInjectable(t *testing.T) {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		unavailable(t, "ptrace injection is x86-64 only (the loader refuses other architectures)")
	}
	requireRoot(t)
}

// pythons returns the CPython interpreters 3.10-3.13 present (pyenv's, as CI installs them, else
// python3 of those versions on PATH).
func pythons(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, v := range []string{"3.10.13", "3.11.7", "3.12.1", "3.13.0"} {
		p := filepath.Join(os.Getenv("HOME"), ".pyenv/versions", v, "bin/python")
		if _, err := os.Stat(p); err == nil {
			out[v[:4]] = p
		}
	}
	if len(out) == 0 {
		if p, err := exec.LookPath("python3"); err == nil {
			b, _ := exec.Command(p, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").Output()
			if v := strings.TrimSpace(string(b)); v >= "3.10" && v <= "3.13" {
				out[v] = p
			}
		}
	}
	if len(out) == 0 {
		unavailable(t, "no CPython 3.10-3.13 found (CI installs them under ~/.pyenv/versions)")
	}
	return out
}

// anyPython returns the oldest CPython 3.10-3.13 found, for tests that need one, not each.
func anyPython(t *testing.T) string {
	t.Helper()
	m := pythons(t)
	vs := make([]string, 0, len(m))
	for v := range m {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	return m[vs[0]]
}

type workload struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	pid int
}

// startWorkload runs internal/inject/testdata/pyworkload.py with nothing preloaded.
func startWorkload(t *testing.T, python, lib string, env ...string) *workload {
	t.Helper()
	root, _ := filepath.Abs("../..")
	cmd := exec.Command(python, filepath.Join(root, "internal/inject/testdata/pyworkload.py"))
	cmd.Env = append(cleanEnv(), append([]string{"LD_LIBRARY_PATH=" + lib}, env...)...)
	cmd.Stderr = os.Stderr
	w := startTarget(t, cmd)
	l := w.line(t, 20*time.Second)
	f := strings.Fields(l)
	if len(f) != 2 || f[0] != "READY" {
		t.Fatalf("workload: %q", l)
	}
	w.pid, _ = strconv.Atoi(f[1])
	return w
}

// startTarget starts cmd (its Env and Stderr set by the caller) with pipes for the line protocol
// of the test targets, and kills it when the test ends. The caller reads READY.
func startTarget(t *testing.T, cmd *exec.Cmd) *workload {
	t.Helper()
	in, _ := cmd.StdinPipe()
	o, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &workload{cmd: cmd, in: in, out: bufio.NewReader(o)}
}

// cleanEnv drops what would preload or configure the agent or the hook in the workload.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PROFILEMATE_") || strings.HasPrefix(kv, "LD_PRELOAD=") || strings.HasPrefix(kv, "PYTHONPATH=") ||
			strings.HasPrefix(kv, "CUDA_INJECTION64_PATH=") || strings.HasPrefix(kv, "LD_LIBRARY_PATH=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (w *workload) line(t *testing.T, d time.Duration) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		l, _ := w.out.ReadString('\n')
		ch <- strings.TrimSpace(l)
	}()
	select {
	case l := <-ch:
		return l
	case <-time.After(d):
		t.Fatalf("workload pid %d: no output within %v", w.pid, d)
		return ""
	}
}

// steps asks the workload how many steps it ran.
func (w *workload) steps(t *testing.T) int {
	t.Helper()
	io.WriteString(w.in, "ping\n")
	l := w.line(t, 5*time.Second)
	n, err := strconv.Atoi(strings.TrimPrefix(l, "pong "))
	if err != nil {
		t.Fatalf("ping: %q", l)
	}
	return n
}

type injMeta struct {
	Injection struct {
		Requested string `json:"requested"`
		Processes []struct {
			Pid                int      `json:"pid"`
			Method             string   `json:"method"`
			Python             string   `json:"python"`
			Skipped            string   `json:"skipped"`
			Tid                int      `json:"tid"`
			Syscall            string   `json:"syscall"`
			LoadMs             float64  `json:"load_ms"`
			ThreadStoppedMs    float64  `json:"thread_stopped_ms"`
			AgentReused        bool     `json:"agent_reused"`
			StartResult        *int     `json:"start_result"`
			FirstEnableStallMs *float64 `json:"first_enable_stall_ms"`
			Detach             string   `json:"detach"`
		} `json:"processes"`
		StagingRemoved bool `json:"staging_removed"`
	} `json:"injection"`
	ContendedRings []collect.Contention `json:"contended_rings"`
	Warnings       []string             `json:"warnings"`
}

// attachInject runs attach --inject=ptrace on pid for d and returns the session directory.
func attachInject(t *testing.T, agent string, pid int, d time.Duration, extra ...string) (string, int) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	base := t.TempDir()
	args := append([]string{"profilemate-trace", "attach", "--pid", strconv.Itoa(pid), "--inject", "ptrace", "--agent", agent,
		"--pyhook", filepath.Join(root, "pyhook"), "--duration", d.String(), "--no-ebpf", "--no-bundle", "-o", base}, extra...)
	code := run(args)
	dirs, _ := filepath.Glob(filepath.Join(base, "session_*"))
	if len(dirs) != 1 {
		return "", code
	}
	return dirs[0], code
}

func readInjMeta(t *testing.T, dir string) injMeta {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m injMeta
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// kernelCounts returns the kernels per short name in the session's CUPTI streams of pid.
func kernelCounts(t *testing.T, dir string, pid int) (map[string]int, bool) {
	t.Helper()
	s, err := export.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	hook := false
	for _, st := range s.Streams {
		if st.Meta.Pid != pid {
			continue
		}
		if st.Meta.Source == "pyhook" {
			hook = true
		}
		for _, k := range st.Kernels {
			name := st.Names[k.NameID]
			switch {
			case strings.Contains(name, "sin_kernel"):
				out["sin"]++
			case strings.HasPrefix(name, "nvjet"):
				out["nvjet"]++
			default:
				out[name]++
			}
		}
	}
	return out, hook
}

// leftovers lists what an injected session could leave in pid: threads of the agent (pm-*),
// ring descriptors and mappings, a traced thread, a staging directory, a second agent copy.
func leftovers(t *testing.T, pid int) []string {
	t.Helper()
	var out []string
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range tasks {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, e.Name()))
		if strings.HasPrefix(string(comm), "pm-") {
			out = append(out, "thread "+e.Name()+" "+strings.TrimSpace(string(comm)))
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		if !strings.Contains(string(st), "TracerPid:\t0\n") {
			out = append(out, "thread "+e.Name()+" is traced")
		}
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range fds {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if strings.Contains(l, "memfd:profilemate") || strings.Contains(l, "/profilemate-inject-") || strings.HasSuffix(l, "/libprofilemate.so") {
			out = append(out, "fd "+e.Name()+" -> "+l)
		}
	}
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	agents := map[string]bool{}
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.Contains(l, "memfd:profilemate") {
			out = append(out, "mapping "+l)
		}
		if f := strings.Fields(l); len(f) >= 6 && strings.Contains(l, "libprofilemate.so") {
			agents[f[4]] = true
		}
	}
	if len(agents) > 1 {
		out = append(out, fmt.Sprintf("%d copies of the agent mapped", len(agents)))
	}
	if left, _ := filepath.Glob(fmt.Sprintf("/tmp/profilemate-inject-%d-*", pid)); len(left) > 0 {
		out = append(out, "staging "+strings.Join(left, " "))
	}
	return out
}

func rss(t *testing.T, pid int) int {
	t.Helper()
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	t.Fatalf("pid %d: no VmRSS", pid)
	return 0
}

// checkCapture asserts one injected capture of the workload: its kernels (3 sin : 1 nvjet per
// step; a window edge may cut one step at each end), the hook's stream, and metadata.json.
func checkCapture(t *testing.T, dir string, pid int) {
	t.Helper()
	k, hook := kernelCounts(t, dir, pid)
	if k["nvjet"] < 3 || k["sin"] < 3*k["nvjet"]-3 || k["sin"] > 3*k["nvjet"]+3 || len(k) != 2 {
		t.Errorf("kernels %v: want about 3 sin per nvjet and at least 3 steps", k)
	}
	if !hook {
		t.Error("no hook stream: the agent did not start the Python hook")
	}
	m := readInjMeta(t, dir)
	if m.Injection.Requested != "ptrace" || len(m.Injection.Processes) != 1 || !m.Injection.StagingRemoved {
		t.Fatalf("metadata injection: %+v", m.Injection)
	}
	p := m.Injection.Processes[0]
	if p.Pid != pid || p.Method != "ptrace" || p.Tid == 0 || p.Syscall == "" || p.LoadMs <= 0 || p.ThreadStoppedMs <= 0 ||
		p.StartResult == nil || *p.StartResult != 0 || p.Detach != "acknowledged" || p.FirstEnableStallMs == nil {
		t.Errorf("metadata injection process: %+v", p)
	}
	for _, w := range m.Warnings {
		if strings.Contains(w, "did not") || strings.Contains(w, "no agent") {
			t.Errorf("warning: %s", w)
		}
	}
}

// Every CPython 3.10-3.13 present: the agent and the hook are loaded into a process started
// without them, kernels flow at once, and detach leaves the process as it was (and running).
func TestAttachInjectPtraceIntoPython(t *testing.T) {
	requireInjectable(t)
	agent, lib := testlibs(t)
	for v, py := range pythons(t) {
		t.Run(v, func(t *testing.T) {
			w := startWorkload(t, py, lib)
			before := w.steps(t)
			dir, code := attachInject(t, agent, w.pid, 1500*time.Millisecond)
			if code != 0 {
				t.Fatalf("attach exited %d", code)
			}
			checkCapture(t, dir, w.pid)
			if left := leftovers(t, w.pid); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if after := w.steps(t); after <= before+10 {
				t.Errorf("workload ran %d steps across the attach: stalled", after-before)
			}
		})
	}
}

// Twenty attach/detach cycles on one process: each captures, the agent is mapped once and
// restarted each time, nothing is left behind, and memory stays flat.
func TestAttachInjectTwentyCycles(t *testing.T) {
	requireInjectable(t)
	agent, lib := testlibs(t)
	py := anyPython(t)
	w := startWorkload(t, py, lib)
	var rss1 int
	const cycles = 20
	for i := 0; i < cycles; i++ {
		dir, code := attachInject(t, agent, w.pid, 400*time.Millisecond)
		if code != 0 {
			t.Fatalf("cycle %d: attach exited %d", i, code)
		}
		k, _ := kernelCounts(t, dir, w.pid)
		if k["nvjet"] == 0 {
			t.Errorf("cycle %d: no kernels (%v)", i, k)
		}
		m := readInjMeta(t, dir)
		if p := m.Injection.Processes[0]; p.Detach != "acknowledged" || p.AgentReused != (i > 0) || p.StartResult == nil || *p.StartResult != 0 {
			t.Errorf("cycle %d: %+v", i, p)
		}
		if left := leftovers(t, w.pid); len(left) > 0 {
			t.Fatalf("cycle %d left behind: %v", i, left)
		}
		if i == 0 {
			rss1 = rss(t, w.pid)
		}
	}
	// The first cycle maps the agent, libcupti's buffers and the hook's modules; later cycles
	// reuse them. What remains may grow by allocator noise, not by a cycle's worth of memory.
	if grew := rss(t, w.pid) - rss1; grew > 8<<10 {
		t.Errorf("RSS grew by %d KiB over %d cycles after the first", grew, cycles-1)
	}
	w.steps(t)
}

// A process that already has an agent (preloaded, its ring made at cuInit) is not injected:
// attach uses that agent.
func TestAttachInjectSkipsPreloaded(t *testing.T) {
	requireInjectable(t)
	agent, lib := testlibs(t)
	py := anyPython(t)
	w := startWorkload(t, py, lib, "LD_PRELOAD="+agent)
	dir, code := attachInject(t, agent, w.pid, time.Second)
	if code != 0 {
		t.Fatalf("attach exited %d", code)
	}
	m := readInjMeta(t, dir)
	if len(m.Injection.Processes) != 1 || m.Injection.Processes[0].Method != "preloaded" || m.Injection.Processes[0].Tid != 0 {
		t.Fatalf("injection: %+v", m.Injection)
	}
	if k, _ := kernelCounts(t, dir, w.pid); k["nvjet"] == 0 {
		t.Errorf("no kernels from the preloaded agent: %v", k)
	}
}

// Refusals: auto on CPython < 3.14 names the ptrace alternative; ptrace on a process whose only
// thread computes finds no safe point. Both exit 3, touch nothing and write no session.
func TestAttachInjectRefusals(t *testing.T) {
	requireInjectable(t)
	agent, lib := testlibs(t)
	py := anyPython(t)
	t.Run("auto", func(t *testing.T) {
		w := startWorkload(t, py, lib)
		out := captureStderr(t, func() {
			dir, code := attachInject(t, agent, w.pid, time.Second, "--inject", "auto")
			if code != 3 || dir != "" {
				t.Errorf("exit %d, session %q; want 3 and none", code, dir)
			}
		})
		if !strings.Contains(out, "PEP 768") || !strings.Contains(out, "--inject=ptrace") {
			t.Errorf("message does not explain the refusal: %s", out)
		}
		if left := leftovers(t, w.pid); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
	t.Run("no-safe-point", func(t *testing.T) {
		cmd := exec.Command(py, "-c", "import os; print('READY', os.getpid(), flush=True)\nwhile True: pass")
		o, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		bufio.NewReader(o).ReadString('\n')
		begin := time.Now()
		out := captureStderr(t, func() {
			dir, code := attachInject(t, agent, cmd.Process.Pid, time.Second)
			if code != 3 || dir != "" {
				t.Errorf("exit %d, session %q; want 3 and none", code, dir)
			}
		})
		if !strings.Contains(out, "parked in a blocking system call") {
			t.Errorf("message does not explain the refusal: %s", out)
		}
		if d := time.Since(begin); d > 10*time.Second {
			t.Errorf("refusal took %v", d)
		}
		if left := leftovers(t, cmd.Process.Pid); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
}

// The target exiting during the capture ends it promptly; the session is written and says so.
func TestAttachInjectTargetExits(t *testing.T) {
	requireInjectable(t)
	agent, lib := testlibs(t)
	py := anyPython(t)
	w := startWorkload(t, py, lib)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		w.cmd.Process.Kill()
		w.cmd.Wait() // reaped, as a server's parent does
	}()
	begin := time.Now()
	dir, code := attachInject(t, agent, w.pid, 30*time.Second)
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("attach took %v for a target killed after 1.5 s", d)
	}
	if code != 0 || dir == "" {
		t.Fatalf("exit %d, session %q", code, dir)
	}
	m := readInjMeta(t, dir)
	if p := m.Injection.Processes[0]; !strings.Contains(p.Detach, "exited") && !strings.Contains(p.Detach, "gone") {
		t.Errorf("detach %q: want it to say the process exited", p.Detach)
	}
	if left, _ := filepath.Glob(fmt.Sprintf("/tmp/profilemate-inject-%d-*", w.pid)); len(left) > 0 {
		t.Errorf("staging left: %v", left)
	}
}

// captureStderr runs f with os.Stderr redirected and returns what it wrote.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, wr, _ := os.Pipe()
	old := os.Stderr
	os.Stderr = wr
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	f()
	os.Stderr = old
	wr.Close()
	return <-done
}

// --inject=auto on CPython 3.14 (PM_PYTHON314, from scripts/ci/python314.sh): loaded through PEP
// 768 at the interpreter's own safe point, no thread stopped; capture and detach as with ptrace.
func TestAttachInjectAutoPEP768(t *testing.T) {
	requireInjectable(t)
	py := os.Getenv("PM_PYTHON314")
	if py == "" {
		unavailable(t, "PM_PYTHON314 is unset (run scripts/ci/python314.sh and export its last line; .ci/run does)")
	}
	agent, lib := testlibs(t)
	w := startWorkload(t, py, lib)
	before := w.steps(t)
	dir, code := attachInject(t, agent, w.pid, 1500*time.Millisecond, "--inject", "auto")
	if code != 0 {
		t.Fatalf("attach exited %d", code)
	}
	k, hook := kernelCounts(t, dir, w.pid)
	if k["nvjet"] < 3 || k["sin"] < 3*k["nvjet"]-3 || k["sin"] > 3*k["nvjet"]+3 || !hook {
		t.Errorf("kernels %v, hook stream %v", k, hook)
	}
	m := readInjMeta(t, dir)
	if len(m.Injection.Processes) != 1 {
		t.Fatalf("injection: %+v", m.Injection)
	}
	p := m.Injection.Processes[0]
	if m.Injection.Requested != "auto" || p.Method != "remote-exec" || p.Tid != 0 || p.Detach != "acknowledged" || !m.Injection.StagingRemoved {
		t.Errorf("injection: %+v", m.Injection)
	}
	if left := leftovers(t, w.pid); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if after := w.steps(t); after <= before+10 {
		t.Errorf("workload ran %d steps across the attach", after-before)
	}
}
