package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/inject"
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
