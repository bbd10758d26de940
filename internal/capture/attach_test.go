package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/collect"
	"github.com/profilemate/profilemate-trace/internal/inject"
	"github.com/profilemate/profilemate-trace/internal/record"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

// attach --inject on a process that is neither CPython nor CUDA: nothing is loaded, the capture
// runs as a plain attach, and metadata.json says why nothing was injected.
func TestAttachInjectSkipsNonCandidates(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var stderr bytes.Buffer
	res, err := Attach(context.Background(), AttachConfig{Pid: cmd.Process.Pid, Duration: 300 * time.Millisecond, OutputDir: t.TempDir(),
		Detail: ring.DetailGraph, NoBundle: true, Stderr: &stderr,
		Inject: inject.Options{Method: inject.MethodPtrace, Agent: "/nonexistent/libprofilemate.so"}})
	if err != nil {
		t.Fatalf("attach: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(res.SessionDir, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		Injection struct {
			Requested string
			Processes []struct {
				Pid             int
				Method, Skipped string
			}
		}
	}
	if err := json.Unmarshal(b, &md); err != nil {
		t.Fatal(err)
	}
	if md.Injection.Requested != "ptrace" || len(md.Injection.Processes) != 1 || md.Injection.Processes[0].Method != "skipped" ||
		!strings.Contains(md.Injection.Processes[0].Skipped, "neither CPython nor libcuda") {
		t.Errorf("injection: %+v", md.Injection)
	}
	if !strings.Contains(stderr.String(), "not injected") {
		t.Errorf("stderr does not say why: %s", stderr.String())
	}
}

// A refused injection is a setup error (exit 3) and leaves no session directory.
func TestAttachInjectRefusalIsSetupError(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	if out, _ := exec.Command(py, "-c", "import sys; print(sys.version_info >= (3, 14))").Output(); strings.TrimSpace(string(out)) != "False" {
		t.Skip("python3 is 3.14 or later: remote-exec would not be refused")
	}
	cmd := exec.Command(py, "-c", "import time; time.sleep(30)")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(200 * time.Millisecond) // the interpreter is mapped
	base := t.TempDir()
	_, err = Attach(context.Background(), AttachConfig{Pid: cmd.Process.Pid, Duration: time.Second, OutputDir: base, NoBundle: true,
		Stderr: &bytes.Buffer{}, Inject: inject.Options{Method: inject.MethodRemoteExec, Agent: "/nonexistent/libprofilemate.so"}})
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != ExitSetup || !errors.Is(err, inject.ErrRefused) {
		t.Fatalf("error %v, want a setup error wrapping %v", err, inject.ErrRefused)
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Errorf("session written for a refused injection: %v", ents)
	}
}

// An attach beside another capture of the same process: the rings the other one holds are
// left to it, metadata.json names it under contended_rings with a warning, and the attach
// collects the ring once the other capture ends (a daemon window ending under a CLI attach).
func TestAttachBesideAnotherCapture(t *testing.T) {
	w, err := ring.Create(ring.SourcePyhook, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for i := uint64(0); ctx.Err() == nil; i++ {
			w.Write(record.AppendLog(nil, &record.Log{TsNS: i, Text: []byte("step")}))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	attach := func(d time.Duration, log *bytes.Buffer) *Result {
		var stderr bytes.Buffer
		res, err := Attach(ctx, AttachConfig{Pid: os.Getpid(), Duration: d, OutputDir: t.TempDir(), Detail: ring.DetailGraph,
			NoBundle: true, Stderr: &stderr, Log: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Errorf("attach: %v\n%s", err, stderr.String())
		}
		return res
	}
	var firstLog, secondLog bytes.Buffer // each written by its attach's logger only, read after it returned
	firstDone := make(chan *Result)
	go func() { firstDone <- attach(1500*time.Millisecond, &firstLog) }()
	time.Sleep(500 * time.Millisecond)
	second := attach(3*time.Second, &secondLog)
	first := <-firstDone
	if first == nil || second == nil {
		t.FailNow()
	}
	if len(first.Streams) != 1 || first.Streams[0].Records == 0 || len(second.Streams) != 1 || second.Streams[0].Records == 0 {
		t.Fatalf("streams: first %+v, second %+v (want the ring's records in both, each its own part)", first.Streams, second.Streams)
	}
	b, err := os.ReadFile(filepath.Join(second.SessionDir, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		ContendedRings []collect.Contention `json:"contended_rings"`
		Warnings       []string
	}
	if err := json.Unmarshal(b, &md); err != nil {
		t.Fatal(err)
	}
	if len(md.ContendedRings) != 1 {
		t.Fatalf("contended_rings %+v, want the pyhook ring", md.ContendedRings)
	}
	ct := md.ContendedRings[0]
	if ct.Pid != os.Getpid() || ct.Source != "pyhook" || ct.Holder != os.Getpid() || ct.TakenOverSec < 0.5 || ct.TakenOverSec > 2 {
		t.Errorf("contended ring %+v: want pid %d's pyhook ring, held by pid %d until the first capture ended ~1 s in", ct, os.Getpid(), os.Getpid())
	}
	if !slices.Contains(md.Warnings, ct.Message()) {
		t.Errorf("warnings %q lack %q", md.Warnings, ct.Message())
	}
	if !strings.Contains(secondLog.String(), "another tracer reads this ring") || !strings.Contains(secondLog.String(), "let go of this ring") {
		t.Errorf("the second attach did not warn when it found the ring held and when it took it over:\n%s", secondLog.String())
	}
	if strings.Contains(firstLog.String(), "another tracer") {
		t.Errorf("the first attach saw a contention:\n%s", firstLog.String())
	}
}
