//go:build linux

package tracer

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/profilemate/profilemate-trace/internal/record"
)

func TestDoctor(t *testing.T) {
	requirePrivileged(t)
	w := startWorkload(t, supportedPythons(t)[0], "1")
	byName := map[string]Check{}
	for _, c := range Doctor(w.pid) {
		byName[c.Name] = c
		t.Logf("%-12s %-4s %s %s", c.Name, c.Status, c.Detail, c.Fix)
	}
	for _, n := range []string{"kernel", "btf", "privileges", "bpf_loop", "ringbuf", "uprobe_multi", "pid", "libcuda", "cpython"} {
		if byName[n].Status != StatusOK {
			t.Errorf("%s: %+v", n, byName[n])
		}
	}
	if !strings.Contains(byName["libcuda"].Detail, "34 probe sites") || !strings.Contains(byName["cpython"].Detail, "gilstate key") {
		t.Errorf("details: %+v %+v", byName["libcuda"], byName["cpython"])
	}
	sleep := exec.Command("sleep", "30")
	sleep.Start()
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	for _, c := range Doctor(sleep.Process.Pid) {
		if (c.Name == "libcuda" || c.Name == "cpython") && c.Status != StatusWarn {
			t.Errorf("sleep: %+v", c)
		}
	}
	for _, c := range Doctor(1 << 30) {
		if c.Name == "pid" && (c.Status != StatusFail || !strings.Contains(c.Detail, "no such process")) {
			t.Errorf("missing pid: %+v", c)
		}
	}
}

// TestNotRoot runs New as an unprivileged user in a child process: a clear error, no panic.
func TestNotRoot(t *testing.T) {
	if os.Getenv("PM_NOTROOT_CHILD") == "1" {
		_, err := New(Config{})
		if !errors.Is(err, ErrPermission) {
			fmt.Printf("unexpected: %v\n", err)
			os.Exit(3)
		}
		fmt.Println("notroot-ok:", err)
		os.Exit(0)
	}
	requirePrivileged(t)
	dir, err := os.MkdirTemp("", "pm-notroot-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "tracer.test")
	self, _ := os.ReadFile(os.Args[0])
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run", "^TestNotRoot$")
	cmd.Env = append(os.Environ(), "PM_NOTROOT_CHILD=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "notroot-ok") {
		t.Fatalf("unprivileged New: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// TestWalkLimit: a launch deeper than MaxDepth below its phase is counted without a phase,
// flagged, and the walk-limit drop counter says how often.
func TestWalkLimit(t *testing.T) {
	requirePrivileged(t)
	w := startWorkload(t, supportedPythons(t)[0], "2", "--depth", "40")
	tab, _ := LoadPhaseTable("")
	c, tr, _ := traceRound(t, Config{Phases: tab, MaxDepth: 16}, w)
	limited := 0
	for _, b := range c.of(w.pid, record.TypeEbpfLaunch) {
		r, _ := record.DecodeEbpfLaunch(b)
		if r.Flags&1 != 0 {
			limited++
			if r.Phase != 0 || r.Depth != 16 {
				t.Errorf("limited launch with phase %d depth %d", r.Phase, r.Depth)
			}
		}
	}
	// execute_model's 5 launches + 1 Ex + 1 graph per step sit 40 frames down.
	if limited != 14 {
		t.Errorf("%d launches hit the frame limit, want 14", limited)
	}
	if got := tr.Drops()[3]; got != 14 {
		t.Errorf("walk-limit drops %d, want 14", got)
	}
}
