package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/export"
	"github.com/profilemate/profilemate-trace/export/exporttest"
)

// The whole #8 chain on REAL vLLM (CPU, no GPU): a process of a real vLLM venv (0.33.0, 0.11.0;
// PM_VLLM_PYTHONS, made by pyhook/tests/install_vllm_cpu.sh) started with nothing of ours in its
// environment serves requests through vLLM's own V1 Scheduler / KVCacheManager / BlockPool
// (pyhook/tests/real/inject_target_vllm.py); `attach --inject=ptrace --no-ebpf`, stopped by SIGINT
// once the target has served 150 steps under the hook, loads the real agent and hook into it,
// captures, and detaches.
//
// What this machine leaves out: there is no libcuda here (torch is a CUDA build, so the real
// libcupti.so.13 is mapped, but CUDA never initialises), so there are no GPU records at all
// (kernels, memcpys, graphs, first-enable stall of a real CUPTI); the agent is loaded, started
// and detached, and must stay harmless: the target keeps serving, the session has no GPU
// records, and nothing of the agent is left behind. The GPU half is scripts/gpu/inject-check.sh.

type vllmCheck struct {
	Steps        [][]int             `json:"steps"` // tokens, reqs, free after schedule, free after update
	Changed      [][]string          `json:"changed"`
	Instances    map[string][]string `json:"instances"`
	Threads      []string            `json:"threads"`
	Fds          []string            `json:"fds"`
	Maps         []string            `json:"maps"`
	HookImported bool                `json:"hook_imported"`
	NumGPUBlocks int                 `json:"num_gpu_blocks"`
}

func (w *workload) check(t *testing.T) vllmCheck {
	t.Helper()
	io.WriteString(w.in, "check\n")
	l := w.line(t, 30*time.Second)
	if !strings.HasPrefix(l, "CHECK ") {
		t.Fatalf("check: %q", l)
	}
	var c vllmCheck
	if err := json.Unmarshal([]byte(l[6:]), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// progress asks the target for its step count and whether the hook is imported (cheap: polled).
func (w *workload) progress(t *testing.T) (int, bool) {
	t.Helper()
	io.WriteString(w.in, "progress\n")
	var n, h int
	if _, err := fmt.Sscanf(w.line(t, 30*time.Second), "PROGRESS %d %d", &n, &h); err != nil {
		t.Fatalf("progress: %v", err)
	}
	return n, h == 1
}

func vllmPythons(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, p := range strings.Split(os.Getenv("PM_VLLM_PYTHONS"), ":") {
		if p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		unavailable(t, "PM_VLLM_PYTHONS is unset (pyhook/tests/install_vllm_cpu.sh makes the venvs; .ci/run exports it)")
	}
	return out
}

func readCSVRows(t *testing.T, path string) []map[string]string {
	t.Helper()
	rows, err := exporttest.CSVRows(path)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestAttachInjectPtraceRealVLLM(t *testing.T) {
	requireInjectable(t)
	pys := vllmPythons(t)
	agent, _ := testlibs(t)
	root, _ := filepath.Abs("../..")
	for _, py := range pys {
		name := filepath.Base(filepath.Dir(filepath.Dir(py)))
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(py, filepath.Join(root, "pyhook/tests/real/inject_target_vllm.py"))
			// nothing of ours: cleanEnv drops PROFILEMATE_*, LD_PRELOAD, PYTHONPATH, LD_LIBRARY_PATH
			cmd.Env = append(cleanEnv(), "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "VLLM_LOGGING_LEVEL=ERROR")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			t.Cleanup(func() { // registered first, so it runs after startTarget's kill and wait
				if t.Failed() {
					s := stderr.String()
					if len(s) > 4000 {
						s = s[len(s)-4000:]
					}
					t.Logf("target stderr:\n%s", s)
				}
			})
			w := startTarget(t, cmd)
			f := strings.Fields(w.line(t, 180*time.Second))
			if len(f) != 3 || f[0] != "READY" {
				t.Fatalf("target: %v", f)
			}
			w.pid, _ = strconv.Atoi(f[1])
			time.Sleep(300 * time.Millisecond)
			if c := w.check(t); c.HookImported || len(c.Steps) < 2 {
				t.Fatalf("before attach: hook imported %v, %d steps", c.HookImported, len(c.Steps))
			}

			// The window is sized in the target's own steps, not in seconds: under CI the
			// target's rate during the attach fell to a sixth of the rate measured just before
			// it (other test packages run beside it), so a window planned in seconds from that
			// rate got 23-24 steps. The attach runs until the target has done 150 steps after
			// the hook arrived, then gets the same SIGINT a user's Ctrl-C sends (the test
			// process catches SIGINT for that time, so a late signal cannot kill it).
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt)
			defer signal.Stop(sig)
			var dir string
			var code int
			done := make(chan struct{})
			go func() { defer close(done); dir, code = attachInject(t, agent, w.pid, 5*time.Minute) }()
			s0, deadline := -1, time.Now().Add(3*time.Minute)
			holders := map[string]bool{} // other processes seen holding the target's rings
		wait:
			for time.Now().Before(deadline) {
				select {
				case <-done:
					break wait
				case <-time.After(250 * time.Millisecond):
				}
				n, hooked := w.progress(t)
				for _, h := range foreignRingHolders(w.pid) {
					holders[h] = true
				}
				if s0 < 0 && hooked {
					s0 = n
				}
				if s0 >= 0 && n >= s0+150 {
					break
				}
			}
			select {
			case <-done:
			default:
				syscall.Kill(os.Getpid(), syscall.SIGINT)
				<-done
			}
			window := fmt.Sprintf("a window of %d target steps after the hook arrived", 150)
			if s0 < 0 {
				t.Fatalf("the hook never arrived in the target within 3 minutes (attach exited %d)", code)
			}
			if code != 0 || dir == "" {
				t.Fatalf("attach exited %d, session %q", code, dir)
			}
			c := w.check(t)
			if !c.HookImported {
				t.Error("the target never imported profilemate_trace: the agent did not start the hook")
			}

			// Scheduler steps: every row is one schedule() of this process, and the rows are,
			// in order, a contiguous run of the steps the target itself counted.
			var got [][3]int
			for _, r := range readCSVRows(t, filepath.Join(dir, "batch_utilization.csv")) {
				if r["pid"] != strconv.Itoa(w.pid) {
					t.Fatalf("batch_utilization.csv row of pid %s", r["pid"])
				}
				var x [3]int
				for i, k := range []string{"num_scheduled_tokens", "num_scheduled_reqs", "kv_num_free"} {
					x[i], _ = strconv.Atoi(r[k])
				}
				got = append(got, x)
			}
			// The enable comes a scan after the hook arrives and the detach cuts a few: most of
			// the 150 steps are rows (~140 when idle).
			if len(got) < 30 {
				t.Fatalf("batch_utilization.csv: %d steps in a %v window", len(got), window)
			}
			// Another tracer on the machine reading the target's rings (in CI: the daemon's
			// TestSchedule, whose windows took every vLLM process of the host) split the
			// records and switched collection under us. A ring now has one reader, so another
			// tracer can only hold it before our attach claims it (metadata.json
			// contended_rings) or write its control word without reading it (the hook records
			// that as a control_change): only then are gaps accepted, the rows still being an
			// in-order subsequence of the target's steps.
			m := readInjMeta(t, dir)
			interfered := foreignControl(t, dir, w.pid)
			if len(interfered) > 0 || len(holders) > 0 || len(m.ContendedRings) > 0 {
				t.Logf("other tracers: control changes %v, ring holders %v, contended rings %+v", interfered, keys(holders), m.ContendedRings)
			}
			at := runOf(got, c.Steps, len(interfered) > 0 || len(m.ContendedRings) > 0)
			if at < 0 {
				t.Errorf("batch_utilization.csv (tokens, reqs, kv free) %v is not a run of the target's own steps %v (control changes not ours: %v, contended rings %+v)",
					got, c.Steps, interfered, m.ContendedRings)
			}
			tokens := 0
			for _, x := range got {
				tokens += x[0]
			}
			if tokens == 0 {
				t.Error("no token scheduled in the window")
			}

			// KV cache: the pool's real size (vLLM's usage formula leaves out the null block);
			// the late-start snapshot is the first row, with the pool's free count at the attach.
			kv := readCSVRows(t, filepath.Join(dir, "kv_cache_usage.csv"))
			if len(kv) == 0 {
				t.Fatal("kv_cache_usage.csv is empty")
			}
			frees := map[string]bool{}
			for _, s := range c.Steps {
				frees[strconv.Itoa(s[2])] = true
				frees[strconv.Itoa(s[3])] = true
			}
			ops := map[string]int{}
			for _, r := range kv {
				if r["total_blocks"] != strconv.Itoa(c.NumGPUBlocks-1) || r["pid"] != strconv.Itoa(w.pid) {
					t.Fatalf("kv_cache_usage.csv row %v: want total_blocks %d (num_gpu_blocks %d - the null block), pid %d",
						r, c.NumGPUBlocks-1, c.NumGPUBlocks, w.pid)
				}
				ops[r["op"]]++
			}
			if kv[0]["op"] != "attach" || !frees[kv[0]["num_free"]] {
				t.Errorf("kv_cache_usage.csv first row %v: want the attach snapshot with a free count the pool had", kv[0])
			}
			if ops["alloc"] == 0 || ops["free"] == 0 {
				t.Errorf("kv_cache_usage.csv ops %v: want allocations and frees of the live pool", ops)
			}

			// metadata.json: loaded by ptrace, started, detach acknowledged, staging removed.
			if m.Injection.Requested != "ptrace" || len(m.Injection.Processes) != 1 || !m.Injection.StagingRemoved {
				t.Fatalf("metadata injection: %+v", m.Injection)
			}
			p := m.Injection.Processes[0]
			if p.Pid != w.pid || p.Method != "ptrace" || p.Tid == 0 || p.Syscall == "" || p.StartResult == nil || *p.StartResult != 0 ||
				!strings.HasPrefix(p.Detach, "acknowledged") {
				t.Errorf("metadata injection process: %+v", p)
			}
			// No CUDA here: no GPU record, whatever the agent did.
			if k, hook := kernelCounts(t, dir, w.pid); len(k) != 0 || !hook {
				t.Errorf("kernels %v (want none without libcuda), hook stream %v", k, hook)
			}
			// The agent armed nothing: its late subscribe fails without a driver, it says so and
			// stays passive (it is not mistaken for another CUPTI user).
			unavailable := false
			for _, wn := range m.Warnings {
				if strings.Contains(wn, "(cupti)") && strings.Contains(wn, "cupti_busy") {
					t.Errorf("warning %q: no other tool holds CUPTI here", wn)
				}
				unavailable = unavailable || strings.Contains(wn, "(cupti): cupti_unavailable: cuptiSubscribe error")
			}
			if !unavailable {
				t.Errorf("warnings %q: want the agent's cupti_unavailable (no libcuda here)", m.Warnings)
			}
			t.Logf("%s: %d steps in the window (from the target's step %d), kv rows %v, thread %d in %s, load %.1f ms, stopped %.1f ms, warnings %q",
				name, len(got), at, ops, p.Tid, p.Syscall, p.LoadMs, p.ThreadStoppedMs, m.Warnings)

			// After the detach: nothing of ours in the target, every patched vLLM attribute is
			// the original object again (checked inside the target), and it keeps serving.
			if left := leftovers(t, w.pid); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if len(c.Changed) > 0 || len(c.Threads) > 0 || len(c.Fds) > 0 || len(c.Maps) > 0 {
				t.Errorf("inside the target after detach: changed %v, threads %v, fds %v, maps %v", c.Changed, c.Threads, c.Fds, c.Maps)
			}
			for k, v := range c.Instances {
				if len(v) > 0 {
					t.Errorf("%s instance dict after detach differs in %v", k, v)
				}
			}
			time.Sleep(500 * time.Millisecond)
			if c2 := w.check(t); len(c2.Steps) < len(c.Steps)+5 {
				t.Errorf("target ran %d steps in the 500 ms after the detach", len(c2.Steps)-len(c.Steps))
			}
			if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
				t.Errorf("target gone: %v", err)
			}
		})
	}
}

// runOf returns where rows (tokens, reqs, kv free after schedule) start in the target's own steps
// as a contiguous run, or with gaps allowed, as an in-order subsequence; -1 if they are not.
func runOf(rows [][3]int, steps [][]int, gaps bool) int {
	eq := func(x [3]int, s []int) bool { return x[0] == s[0] && x[1] == s[1] && x[2] == s[2] }
	for i := 0; i+len(rows) <= len(steps); i++ {
		k, j := 0, i
		for k < len(rows) && j < len(steps) {
			if eq(rows[k], steps[j]) {
				k++
			} else if !gaps || k == 0 {
				break
			}
			j++
		}
		if k == len(rows) {
			return i
		}
	}
	return -1
}

// foreignControl lists the control changes the hook of pid applied in the session that our
// attach did not ask for: ours are one enable (the collector finding the ring) and the detach.
func foreignControl(t *testing.T, dir string, pid int) []string {
	t.Helper()
	s, err := export.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	enables := 0
	for _, st := range s.Streams {
		if st.Meta.Pid != pid || st.Meta.Source != "pyhook" {
			continue
		}
		for _, c := range st.Controls {
			if c.Reason != 0 { // environment, detach, orphan: not a tracer's enable/disable
				continue
			}
			if c.Enable == 1 {
				enables++
			}
			if c.Enable == 0 || (c.Enable == 1 && enables > 1) {
				out = append(out, fmt.Sprintf("seq %d enable %d", c.Seq, c.Enable))
			}
		}
	}
	return out
}

// foreignRingHolders lists the other processes that hold one of target's rings open.
func foreignRingHolders(target int) []string {
	inos := map[uint64]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", target))
	for _, e := range fds {
		p := fmt.Sprintf("/proc/%d/fd/%s", target, e.Name())
		var st syscall.Stat_t
		if l, _ := os.Readlink(p); strings.HasPrefix(l, "/memfd:profilemate-") && syscall.Stat(p, &st) == nil {
			inos[st.Ino] = true
		}
	}
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, pe := range procs {
		pid, err := strconv.Atoi(pe.Name())
		if err != nil || pid == target || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, e := range fds {
			var st syscall.Stat_t
			if syscall.Stat(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()), &st) == nil && inos[st.Ino] {
				cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				out = append(out, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(strings.TrimSpace(string(cmd)), "\x00", " ")))
				break
			}
		}
	}
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestRunOf(t *testing.T) {
	steps := [][]int{{1, 1, 9, 9}, {2, 2, 8, 8}, {3, 3, 7, 7}, {4, 4, 6, 6}, {5, 5, 5, 5}, {6, 6, 4, 4}}
	row := func(i int) [3]int { return [3]int{steps[i][0], steps[i][1], steps[i][2]} }
	contiguous := [][3]int{row(1), row(2), row(3)}
	gapped := [][3]int{row(1), row(4), row(5)} // steps 2 and 3 missing, as in CI
	extra := [][3]int{row(1), {9, 9, 9}, row(2)}
	reordered := [][3]int{row(2), row(1)}
	for _, c := range []struct {
		rows [][3]int
		gaps bool
		want int
	}{
		{contiguous, false, 1}, {contiguous, true, 1},
		{gapped, false, -1}, {gapped, true, 1},
		{extra, true, -1}, {reordered, true, -1},
	} {
		if got := runOf(c.rows, steps, c.gaps); got != c.want {
			t.Errorf("runOf(%v, gaps %v) = %d, want %d", c.rows, c.gaps, got, c.want)
		}
	}
}
