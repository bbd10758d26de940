package capture

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profilemate/profilemate-trace/export"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

func TestRunPassesExitCodeAndWritesSession(t *testing.T) {
	base := t.TempDir()
	res, err := Run(context.Background(), RunConfig{Command: []string{"sh", "-c", "echo $PROFILEMATE_START > \"$PROFILEMATE_SESSION_DIR/../seen\"; exit 7"}, OutputDir: base, Detail: ring.DetailGraph})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 7 {
		t.Fatalf("exit code %d, want 7", res.ExitCode)
	}
	if got, _ := os.ReadFile(filepath.Join(base, "seen")); strings.TrimSpace(string(got)) != "graph" {
		t.Fatalf("child saw PROFILEMATE_START=%q", got)
	}
	st, err := os.Stat(res.SessionDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("session dir %v mode %v", err, st.Mode())
	}
	for _, f := range []string{"metadata.json", "gpu_kernels.csv", "cuda_graph_usage.csv", "cuda_graph_timeline.csv", "cuda_graph_captures.csv"} {
		if _, err := os.Stat(filepath.Join(res.SessionDir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	s, err := export.Load(res.Bundle)
	if err != nil {
		t.Fatalf("bundle: %v", err)
	}
	if s.Metadata["mode"] != "run" || s.Metadata["exit_code"].(float64) != 7 {
		t.Fatalf("bundle metadata: %v", s.Metadata)
	}
}

func TestRunErrorsBeforeLaunch(t *testing.T) {
	_, err := Run(context.Background(), RunConfig{Command: []string{"no-such-command-profilemate"}, OutputDir: t.TempDir()})
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != ExitNotFound {
		t.Fatalf("missing command: %v", err)
	}
	// A symbolic link where the session base should be is refused, and nothing runs.
	dir := t.TempDir()
	link := filepath.Join(dir, "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	_, err = Run(context.Background(), RunConfig{Command: []string{"touch", marker}, OutputDir: link})
	if !errors.As(err, &ce) || ce.Code != ExitSetup || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symlinked output: %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran although the output directory was refused")
	}
	_, err = Run(context.Background(), RunConfig{Command: []string{"true"}, OutputDir: t.TempDir(), Agent: "/nonexistent/libprofilemate.so"})
	if !errors.As(err, &ce) || ce.Code != ExitSetup {
		t.Fatalf("missing agent: %v", err)
	}
}

func TestChildEnv(t *testing.T) {
	env := childEnv([]string{"LD_PRELOAD=/x.so", "PYTHONPATH=/p", "PROFILEMATE_DETAIL=nodes", "HOME=/root"},
		RunConfig{Agent: "/a/libprofilemate.so", PyHook: "/h", Detail: ring.DetailNodes}, "/s.sock", "/sess")
	want := map[string]string{"LD_PRELOAD": "/a/libprofilemate.so:/x.so", "PYTHONPATH": "/h:/p", "PROFILEMATE_START": "nodes",
		"PROFILEMATE_CONTROL_SOCKET": "/s.sock", "HOME": "/root"}
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["PROFILEMATE_DETAIL"]; ok {
		t.Error("CLI-only variable leaked into the target")
	}
}
