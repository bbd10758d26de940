//go:build linux && amd64

package inject

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeConf writes a conf file for testlib.c and returns its path.
func writeConf(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "inject.conf")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// calls reads testlib's record of pm_inject_start calls: one [pid tid loads calls] per call.
func calls(t *testing.T, conf string) [][4]int {
	t.Helper()
	b, err := os.ReadFile(conf + ".calls")
	if err != nil {
		t.Fatalf("pm_inject_start left no record: %v", err)
	}
	var out [][4]int
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var c [4]int
		for i, f := range strings.Fields(l) {
			c[i], _ = strconv.Atoi(f)
		}
		out = append(out, c)
	}
	return out
}

// Each kind of parked thread (read on the main thread; poll, epoll_wait, a futex and
// clock_nanosleep on workers) can carry the remote calls: dlopen runs, pm_inject_start runs on
// that very thread, and afterwards every thread of the program is untraced and still working.
func TestRemoteCallOnEachParkedSyscall(t *testing.T) {
	requirePrivileged(t)
	lib, target := built(t)
	for _, tc := range []struct {
		name   string
		worker int // index in READY's worker tids; -1 = the main thread
		nr     int
	}{
		{"read-main", -1, 0}, {"poll", 0, 7}, {"epoll_wait", 1, 232}, {"futex", 2, 202}, {"clock_nanosleep", 3, 230},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, target, "parked")
			want := p.pid
			if tc.worker >= 0 {
				want = p.ready[tc.worker]
			}
			before := p.ping(t)
			conf := writeConf(t)
			res, err := ptraceLoad(context.Background(), loadRequest{pid: p.pid, lib: lib, conf: conf, libInode: inode(t, lib),
				safePointWait: 15 * time.Second, only: func(tid, nr int) bool { return tid == want && nr == tc.nr }})
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if res.Tid != want || res.Syscall != tc.name && !(tc.name == "read-main" && res.Syscall == "read") {
				t.Errorf("used thread %d in %s, want %d in %s", res.Tid, res.Syscall, want, tc.name)
			}
			if res.StartResult != 0 || res.Reused != "" {
				t.Errorf("start result %d, reused %q; want 0 and a fresh load", res.StartResult, res.Reused)
			}
			if res.ThreadStopped <= 0 || res.ThreadStopped > 2*time.Second {
				t.Errorf("thread stopped for %v", res.ThreadStopped)
			}
			c := calls(t, conf)
			if len(c) != 1 || c[0] != [4]int{p.pid, want, 1, 1} {
				t.Errorf("pm_inject_start calls %v, want one on pid %d thread %d", c, p.pid, want)
			}
			if tr := tracerPids(p.pid); len(tr) > 0 {
				t.Errorf("threads still traced: %v", tr)
			}
			if n := mappedCount(t, p.pid, lib); n != 1 {
				t.Errorf("library mapped %d times", n)
			}
			time.Sleep(500 * time.Millisecond) // > 3 wake-ups of PARK_MS (testdata/target.c)
			after := p.ping(t)
			for i := range after {
				if after[i] <= before[i] {
					t.Errorf("counter %d stuck at %d after the injection (before %d): that thread was broken", i, after[i], before[i])
				}
			}
		})
	}
}

// Twenty loads into one process: the first dlopens, the others find the copy still mapped
// (after its directory was deleted, as detach does) and only call pm_inject_start on it. The
// library is mapped once, its constructor ran once, memory does not grow, the program works.
func TestRepeatedLoadsReuseTheMappedAgent(t *testing.T) {
	requirePrivileged(t)
	built0, target := built(t)
	dir := filepath.Join(t.TempDir(), stagePrefix+"test")
	os.Mkdir(dir, 0o700)
	lib := filepath.Join(dir, agentName)
	b, _ := os.ReadFile(built0)
	os.WriteFile(lib, b, 0o755)
	p := start(t, target, "parked")
	conf := writeConf(t)
	rss0 := rssKiB(t, p.pid)
	ino := inode(t, lib)
	const cycles = 20
	for i := 0; i < cycles; i++ {
		res, err := ptraceLoad(context.Background(), loadRequest{pid: p.pid, lib: lib, conf: conf, libInode: ino, safePointWait: 5 * time.Second})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if i == 0 {
			if res.Reused != "" || res.StartResult != 0 {
				t.Fatalf("first load: reused %q, result %d", res.Reused, res.StartResult)
			}
			os.RemoveAll(dir) // as Detach does: the mapping now reads "(deleted)"
		} else if !strings.HasSuffix(res.Reused, "(deleted)") || res.StartResult != 1 {
			t.Fatalf("cycle %d: reused %q, result %d; want the deleted copy and 1 (already running)", i, res.Reused, res.StartResult)
		}
		if tr := tracerPids(p.pid); len(tr) > 0 {
			t.Fatalf("cycle %d: threads still traced: %v", i, tr)
		}
		p.ping(t)
	}
	c := calls(t, conf)
	if len(c) != cycles {
		t.Fatalf("%d calls recorded, want %d", len(c), cycles)
	}
	for i, x := range c {
		if x[2] != 1 || x[3] != i+1 {
			t.Errorf("call %d: loads %d, calls %d; want the constructor once and call %d", i, x[2], x[3], i+1)
		}
	}
	if n := mappedCount(t, p.pid, agentName); n != 1 {
		t.Errorf("agent mapped %d times after %d loads", n, cycles)
	}
	if grew := rssKiB(t, p.pid) - rss0; grew > 2048 {
		t.Errorf("RSS grew by %d KiB over %d loads", grew, cycles)
	}
}

func inodeOr(p string) uint64 {
	var st syscall.Stat_t
	syscall.Stat(p, &st)
	return st.Ino
}

func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// A target killed while the injected call runs: the tracer returns at once with an error that
// says so, never hangs.
func TestTargetExitingMidCallDoesNotHang(t *testing.T) {
	requirePrivileged(t)
	lib, target := built(t)
	p := start(t, target, "parked")
	conf := writeConf(t, "sleep_ms=5000")
	done := make(chan error, 1)
	go func() {
		_, err := ptraceLoad(context.Background(), loadRequest{pid: p.pid, lib: lib, conf: conf, libInode: inodeOr(lib), safePointWait: 5 * time.Second})
		done <- err
	}()
	time.Sleep(500 * time.Millisecond) // dlopen done, pm_inject_start sleeping
	killed := time.Now()
	p.cmd.Process.Kill()
	select {
	case err := <-done:
		if !errors.Is(err, errExited) {
			t.Errorf("error %v, want one wrapping %v", err, errExited)
		}
		if d := time.Since(killed); d > 2*time.Second {
			t.Errorf("returned %v after the kill", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tracer hangs on a target that exited mid-call")
	}
}

// No thread ever parked: refused within the bound with a clear error, nothing left traced.
func TestRefusesWithoutSafePoint(t *testing.T) {
	requirePrivileged(t)
	lib, target := built(t)
	p := start(t, target, "busy")
	begin := time.Now()
	_, err := ptraceLoad(context.Background(), loadRequest{pid: p.pid, lib: lib, conf: writeConf(t), libInode: inodeOr(lib), safePointWait: 500 * time.Millisecond})
	if !errors.Is(err, ErrNoSafePoint) {
		t.Fatalf("error %v, want %v", err, ErrNoSafePoint)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("refusal took %v", d)
	}
	if !strings.Contains(err.Error(), "blocking system call") || !strings.Contains(err.Error(), "running") {
		t.Errorf("error does not explain itself: %v", err)
	}
	if tr := tracerPids(p.pid); len(tr) > 0 {
		t.Errorf("threads still traced: %v", tr)
	}
	if processGone(p.pid) {
		t.Error("target died")
	}
}

// dlopen failing in the target is reported with the target's dlerror text; the target goes on.
func TestDlopenFailureReportsDlerror(t *testing.T) {
	requirePrivileged(t)
	_, target := built(t)
	bad := filepath.Join(t.TempDir(), agentName)
	os.WriteFile(bad, []byte("not an ELF file, but long enough to have a header to reject ......................"), 0o644)
	p := start(t, target, "parked")
	_, err := ptraceLoad(context.Background(), loadRequest{pid: p.pid, lib: bad, conf: writeConf(t), libInode: inodeOr(bad), safePointWait: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "dlopen") || !strings.Contains(err.Error(), "invalid ELF header") {
		t.Fatalf("error %v, want dlopen's own message (invalid ELF header)", err)
	}
	if tr := tracerPids(p.pid); len(tr) > 0 {
		t.Errorf("threads still traced: %v", tr)
	}
	p.ping(t)
}

// pm_inject_start's negative return is an error naming it.
func TestNegativeStartIsAnError(t *testing.T) {
	requirePrivileged(t)
	lib, target := built(t)
	p := start(t, target, "parked")
	res, err := ptraceLoad(context.Background(), loadRequest{pid: p.pid, lib: lib, conf: writeConf(t, "ret=-5"), libInode: inodeOr(lib), safePointWait: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "returned -5") || res == nil || res.StartResult != -5 {
		t.Fatalf("err %v res %+v; want pm_inject_start returned -5", err, res)
	}
	p.ping(t)
}
