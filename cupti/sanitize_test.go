//go:build linux

package cupti

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/ring"
)

// TestAgentUnderSanitizers runs the agent built with AddressSanitizer and UBSan
// through the scenarios that exercise every path of the C code: conversion of all
// record kinds with garbage, drops and untimed kernels, detail switches and
// sampling, the discard-buffer path, fork after init, yield, and exit flushing.
// Any report fails the test.
func TestAgentUnderSanitizers(t *testing.T) {
	needBuild(t)
	wd, _ := os.Getwd()
	if out, err := exec.Command("make", "-s", "-C", wd, "asan").CombinedOutput(); err != nil {
		t.Fatalf("make asan: %v\n%s", err, out)
	}
	out, err := exec.Command("gcc", "-print-file-name=libasan.so").Output()
	libasan := strings.TrimSpace(string(out))
	if err != nil || !filepath.IsAbs(libasan) {
		t.Fatalf("libasan not found (%q, %v): install gcc's sanitizer runtime (libasan8)", libasan, err)
	}
	preload := "LD_PRELOAD=" + libasan + ":" + filepath.Join(buildDir, "asan", "libprofilemate.so")
	common := []string{preload, "ASAN_OPTIONS=detect_leaks=0", "UBSAN_OPTIONS=print_stacktrace=1", "PROFILEMATE_FLUSH_MS=40"}
	check := func(t *testing.T, p *proc) {
		if e := p.stderr(); strings.Contains(e, "AddressSanitizer") || strings.Contains(e, "runtime error") ||
			strings.Contains(e, "UndefinedBehaviorSanitizer") {
			t.Fatalf("sanitizer report:\n%s", e)
		}
	}
	for _, tc := range []struct {
		name     string
		scenario string
		env      []string
		args     []string
	}{
		{"basic-nodes-garbage", "basic", []string{"PROFILEMATE_START=nodes", "MOCK_CUPTI_GARBAGE=3", "MOCK_CUPTI_DROPS=5", "FAKECUDA_ZERO_TS_EVERY=4"}, nil},
		{"kernel9", "basic", []string{"PROFILEMATE_START=graph", "MOCK_CUPTI_VERSION=24"}, nil},
		{"budget", "flood", []string{"PROFILEMATE_START=graph", "PROFILEMATE_MAX_MB=4", "PROFILEMATE_RING_KB=64", "PROFILEMATE_BUFFER_KB=64"}, []string{"30000"}},
		{"forkafter", "forkafter", []string{"PROFILEMATE_START=graph"}, nil},
		{"forkbefore", "forkbefore", []string{"PROFILEMATE_START=graph"}, nil},
		{"busy", "busy", []string{"PROFILEMATE_START=graph"}, nil},
		{"hijack", "hijack", []string{"PROFILEMATE_START=graph"}, nil},
		{"manynames", "manynames", []string{"PROFILEMATE_START=graph", "FAKECUDA_DUP_NAMES=1"}, []string{"2500"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, baseEnv(false, append(append([]string{}, common...), tc.env...)...), tc.scenario, tc.args...)
			p.waitLine("READY", 60*time.Second)
			p.quit()
			check(t, p)
		})
	}
	t.Run("switches-yield-sigterm", func(t *testing.T) {
		p := start(t, baseEnv(false, common...), "loop")
		pid := pidOf(t, p.waitLine("PID", 5*time.Second))
		p.waitLine("READY", 10*time.Second)
		r := findRing(t, pid, 5*time.Second)
		steps := []func() error{
			func() error { return Enable(r, ring.DetailGraph, 5*time.Second) },
			func() error { return Enable(r, ring.DetailNodes, 5*time.Second) },
			func() error { r.SetControl(true, ring.DetailGraph, 3); return WaitAck(r, 5*time.Second) },
			func() error { return Enable(r, ring.DetailOff, 5*time.Second) },
			func() error { return Disable(r, 5*time.Second) },
			func() error { return Enable(r, ring.DetailNodes, 5*time.Second) },
			func() error { return Yield(r, 5*time.Second) },
		}
		for i, s := range steps {
			if err := s(); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			time.Sleep(150 * time.Millisecond)
			if _, err := r.Read(func([]byte) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
		p.quit()
		check(t, p)
		if st := r.Header().ProducerState; st != ring.StatePassive {
			t.Errorf("state after yield %d", st)
		}
	})
	t.Run("inject-cycles", func(t *testing.T) { // late start, enable, detach, again; then an orphan detach
		asanAgent := filepath.Join(buildDir, "asan", "libprofilemate.so")
		p := startCmd(t, baseEnv(false, "LD_PRELOAD="+libasan, "ASAN_OPTIONS=detect_leaks=0", "UBSAN_OPTIONS=print_stacktrace=1"),
			filepath.Join(testLib, "inject_prog"), asanAgent)
		pid := pidOf(t, p.waitLine("PID", 10*time.Second))
		p.waitLine("READY", 10*time.Second)
		dir := t.TempDir()
		conf := writeConf(t, dir, "flush_ms=20", "orphan_timeout_s=0.5", "log="+filepath.Join(dir, "agent.log"))
		for i := 0; i < 4; i++ {
			if rc := p.inject(conf); rc != 0 {
				t.Fatalf("cycle %d: pm_inject_start = %d; stderr %s", i, rc, p.stderr())
			}
			r := findRing(t, pid, 5*time.Second)
			if err := Enable(r, []ring.Detail{ring.DetailGraph, ring.DetailNodes}[i%2], 5*time.Second); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			r.Heartbeat()
			if i < 3 {
				if err := Detach(r, 5*time.Second); err != nil {
					t.Fatal(err)
				}
			} else {
				waitState(t, r, ring.StateDetached, 5*time.Second) // orphaned
			}
			r.Close()
			waitGone(t, pid, 2*time.Second)
		}
		p.quit()
		check(t, p)
	})
	t.Run("sigterm-handler", func(t *testing.T) {
		p := start(t, baseEnv(false, append(common, "PROFILEMATE_START=nodes")...), "sigterm-handler")
		p.waitLine("READY", 10*time.Second)
		time.Sleep(200 * time.Millisecond)
		p.cmd.Process.Signal(syscall.SIGTERM) // handled: exit() → bounded atexit flush
		p.wait(10 * time.Second)
		check(t, p)
	})
}
