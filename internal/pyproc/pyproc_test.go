package pyproc

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/pyproc/pyproctest"
)

// startTarget runs testdata/nested.py and waits until it blocks inside Scheduler.schedule.
func startTarget(t *testing.T, python string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(python, "testdata/nested.py")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("target did not start: %q %v", line, err)
	}
	return cmd, stdin
}

func TestOpenValidateWalk(t *testing.T) {
	pys := pyproctest.Interpreters()
	if len(pys) == 0 {
		t.Fatal("no python3 interpreter found")
	}
	for _, py := range pys {
		t.Run(py, func(t *testing.T) {
			minor := pyproctest.Minor(py)
			if minor < 8 {
				t.Logf("3.%d: too old for the test script (threading.get_native_id); not a supported target", minor)
				return
			}
			cmd, _ := startTarget(t, py)
			p, err := Open(cmd.Process.Pid)
			if minor < 10 || minor > 13 {
				// Before 3.10 there may be no _PyRuntime at all (ErrNotPython); after 3.13 the
				// debug offsets are refused until tested.
				if !errors.Is(err, ErrUnsupportedVersion) && !errors.Is(err, ErrNotPython) {
					t.Fatalf("3.%d: want ErrUnsupportedVersion or ErrNotPython, got %v", minor, err)
				}
				t.Logf("3.%d refused as expected: %v", minor, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Minor != minor {
				t.Fatalf("minor %d, want %d", p.Minor, minor)
			}
			threads, err := p.Validate()
			if err != nil {
				t.Fatal(err)
			}
			if len(threads) != 2 {
				t.Fatalf("%d threads, want 2", len(threads))
			}
			key, err := p.GilstateKey(threads)
			if err != nil {
				t.Fatalf("gilstate key: %v", err)
			}
			var names []string
			for _, th := range threads {
				fs, err := p.Walk(th.Tstate, 64)
				if err != nil {
					t.Fatal(err)
				}
				var q []string
				for _, f := range fs {
					c, err := p.ReadCode(f.Code)
					if err != nil {
						t.Fatal(err)
					}
					q = append(q, c.Qualname)
				}
				names = append(names, strings.Join(q, "<"))
			}
			all := strings.Join(names, " | ")
			wantSched := "inner_wait<Scheduler.schedule<<module>"
			if minor == 10 {
				wantSched = "inner_wait<schedule<<module>"
			}
			if !strings.Contains(all, wantSched) || !strings.Contains(all, "worker<") {
				t.Fatalf("stacks %q, want %q and a worker thread", all, wantSched)
			}
			t0 := time.Now()
			codes, err := p.ScanCodes(1<<30, func(n string) bool { return n == "schedule" }, func(c Code) bool { return true })
			scan := time.Since(t0)
			if err != nil {
				t.Fatal(err)
			}
			if len(codes) != 1 || !strings.HasSuffix(codes[0].Filename, "nested.py") || codes[0].FirstLineno != 5 {
				t.Fatalf("scan found %+v, want Scheduler.schedule of nested.py:5", codes)
			}
			t.Logf("%s: CPython %s at %s, %d threads, gilstate key %d, code scan %v, stacks %s", py, p.VersionString(), p.Path, len(threads), key, scan, all)
		})
	}
}

func TestNotPython(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if _, err := Open(cmd.Process.Pid); !errors.Is(err, ErrNotPython) {
		t.Fatalf("want ErrNotPython, got %v", err)
	}
	if _, err := Open(1 << 30); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("want ErrNoProcess, got %v", err)
	}
}

func TestAge(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(300 * time.Millisecond)
	a, err := Age(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// starttime has 10 ms ticks; /proc/uptime 10 ms resolution
	if a < 250*time.Millisecond || a > 5*time.Second {
		t.Errorf("a process started 300 ms ago is %v old", a)
	}
	if _, err := Age(1 << 30); err == nil {
		t.Error("no error for a pid that cannot exist")
	}
}
