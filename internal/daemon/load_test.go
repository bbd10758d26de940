package daemon

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// usage is a snapshot of this process's resources (the daemon runs in-process here).
type usage struct {
	fds, goroutines int
	heap, rss       uint64
	cpu             time.Duration
}

func snapshot() usage {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	u := usage{fds: openFds(), goroutines: runtime.NumGoroutine(), heap: ms.HeapAlloc,
		cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.Fields(rest)[0], 10, 64)
			u.rss = kb << 10
		}
	}
	return u
}

// settle waits for goroutines of finished captures and idle connections to go away.
func settle(base usage) usage {
	var u usage
	for i := 0; i < 40; i++ {
		u = snapshot()
		if u.goroutines <= base.goroutines && u.fds <= base.fds {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return u
}

const mib = 1 << 20

// TestLoadSequential: 50 capture requests in a row on a 4-process tree leak no descriptors,
// goroutines or memory.
func TestLoadSequential(t *testing.T) {
	f := startFake(t, "server", 2)
	td := newTestDaemon(t, nil)
	body := fmt.Sprintf(`{"pid": %d, "duration": "200ms"}`, f.pid)
	for range 2 { // warm up: first-use allocations, pools, metric series
		td.wait(t, td.capture(t, body).ID)
	}
	td.http.CloseIdleConnections()
	base := settle(usage{fds: 1 << 30, goroutines: 1 << 30})
	const n = 50
	start := time.Now()
	var lat, s2b []float64
	var records uint64
	for range n {
		t0 := time.Now()
		c := td.wait(t, td.capture(t, body).ID)
		if c.State != StateDone || c.Records == 0 || len(c.Pids) != 4 {
			t.Fatalf("capture %+v", c)
		}
		lat = append(lat, time.Since(t0).Seconds())
		s2b = append(s2b, c.StopToBundleSec)
		records += c.Records
	}
	wall := time.Since(start)
	td.http.CloseIdleConnections()
	after := settle(base)
	t.Logf("LOAD sequential: %d captures x 200ms of 4 processes in %.1f s; request-to-done p50 %.3f s max %.3f s; stop-to-bundle p50 %.3f s max %.3f s; %d records",
		n, wall.Seconds(), pct(lat, 50), pct(lat, 100), pct(s2b, 50), pct(s2b, 100), records)
	t.Logf("LOAD sequential: fds %d -> %d, goroutines %d -> %d, heap %.1f -> %.1f MiB, RSS %.1f -> %.1f MiB, daemon CPU %.2f s",
		base.fds, after.fds, base.goroutines, after.goroutines, float64(base.heap)/mib, float64(after.heap)/mib,
		float64(base.rss)/mib, float64(after.rss)/mib, (after.cpu - base.cpu).Seconds())
	if after.fds > base.fds {
		t.Errorf("file descriptors leaked: %d -> %d", base.fds, after.fds)
	}
	if after.goroutines > base.goroutines {
		t.Errorf("goroutines leaked: %d -> %d", base.goroutines, after.goroutines)
	}
	if after.heap > base.heap+8*mib {
		t.Errorf("heap grew by %.1f MiB over %d captures", float64(after.heap-base.heap)/mib, n)
	}
	for pid, p := range f.rings() {
		if ringHeader(t, p).ControlEnable != 0 {
			t.Errorf("pid %d left enabled", pid)
		}
	}
}

// TestLoadTwentyProcesses: 20 traced processes at once (20 concurrent captures, each
// stopped on request) finish, and nothing is left behind.
func TestLoadTwentyProcesses(t *testing.T) {
	const n = 20
	var fakes []*fakeTree
	for range n {
		fakes = append(fakes, startFake(t, "solo", 0, "FAKE_VLLM_RATE=5"))
	}
	td := newTestDaemon(t, func(c *Config) { c.MaxRunning = 32 })
	td.wait(t, td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": "200ms"}`, fakes[0].pid)).ID)
	td.http.CloseIdleConnections()
	base := settle(usage{fds: 1 << 30, goroutines: 1 << 30})
	var mu sync.Mutex
	var ids []string
	var post []float64
	var wg sync.WaitGroup
	start := time.Now()
	for _, f := range fakes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			c := td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": "2m"}`, f.pid))
			mu.Lock()
			post = append(post, time.Since(t0).Seconds())
			ids = append(ids, c.ID)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("LOAD 20 processes: POST /captures latency p50 %.3f s max %.3f s", pct(post, 50), pct(post, 100))
	if running := td.metric(t, "profilemate_daemon_captures_running"); running != n {
		t.Errorf("captures_running = %v, want %d", running, n)
	}
	for _, f := range fakes {
		p := f.rings()[f.pid]
		waitFor(t, 10*time.Second, fmt.Sprintf("pid %d enabled", f.pid), func() bool { return ringHeader(t, p).ControlEnable == 1 })
	}
	cpu0 := snapshot().cpu
	time.Sleep(3 * time.Second) // steady state: 20 streams drained every 100 ms
	peak := snapshot()
	steadyCPU := (peak.cpu - cpu0).Seconds() / 3
	stop := time.Now()
	for _, id := range ids {
		if err := td.cl.Stop(id); err != nil {
			t.Fatalf("stop %s: %v", id, err)
		}
	}
	var records uint64
	var s2b []float64
	for _, id := range ids {
		c := td.wait(t, id)
		if c.State != StateDone || c.Records == 0 || !strings.Contains(c.Note, "stopped on request") {
			t.Errorf("capture %+v", c)
		}
		records += c.Records
		s2b = append(s2b, c.StopToBundleSec)
	}
	allDone := time.Since(stop)
	wall := time.Since(start)
	td.http.CloseIdleConnections()
	after := settle(base)
	t.Logf("LOAD 20 processes: %d concurrent captures; daemon CPU in steady state %.2f cores; stop of all to all bundles written %.2f s; stop-to-bundle p50 %.3f s max %.3f s; %d records",
		len(ids), steadyCPU, allDone.Seconds(), pct(s2b, 50), pct(s2b, 100), records)
	t.Logf("LOAD 20 processes: mid-window fds %d goroutines %d heap %.1f MiB RSS %.1f MiB; after: fds %d -> %d, goroutines %d -> %d, heap %.1f -> %.1f MiB; daemon CPU %.2f s over %.1f s",
		peak.fds, peak.goroutines, float64(peak.heap)/mib, float64(peak.rss)/mib, base.fds, after.fds, base.goroutines, after.goroutines,
		float64(base.heap)/mib, float64(after.heap)/mib, (after.cpu - base.cpu).Seconds(), wall.Seconds())
	if after.fds > base.fds || after.goroutines > base.goroutines {
		t.Errorf("leak after 20 concurrent captures: fds %d -> %d, goroutines %d -> %d", base.fds, after.fds, base.goroutines, after.goroutines)
	}
	for _, f := range fakes {
		for pid, p := range f.rings() {
			if ringHeader(t, p).ControlEnable != 0 {
				t.Errorf("pid %d left enabled", pid)
			}
		}
	}
	// Finished captures can be deleted; running ones and unknown ids are refused.
	if err := td.cl.Stop(ids[0]); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("stop of a finished capture: %v", err)
	}
	if err := td.cl.Delete(ids[0]); err != nil {
		t.Errorf("delete: %v", err)
	}
	if _, err := td.cl.Get(ids[0]); err == nil {
		t.Errorf("deleted capture still listed")
	}
	if err := td.cl.Delete(ids[0]); err == nil {
		t.Errorf("second delete succeeded")
	}
}

func pct(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	i := (len(s) - 1) * p / 100
	return s[i]
}
