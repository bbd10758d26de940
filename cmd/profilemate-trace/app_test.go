package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every command's help renders: flag definitions are only checked by urfave/cli when a
// command parses its flags, so a clash would otherwise surface as a panic in front of a user.
func TestHelpOfEveryCommand(t *testing.T) {
	app := newApp()
	for _, c := range app.Commands {
		if code := run([]string{"profilemate-trace", c.Name, "--help"}); code != 0 {
			t.Errorf("%s --help exited %d", c.Name, code)
		}
	}
	if code := run([]string{"profilemate-trace", "--help"}); code != 0 {
		t.Errorf("--help exited %d", code)
	}
}

func TestUsageErrors(t *testing.T) {
	if code := run([]string{"profilemate-trace", "run"}); code != exitUsage {
		t.Errorf("run without a command exited %d, want %d", code, exitUsage)
	}
	if code := run([]string{"profilemate-trace", "run", "--detail", "everything", "--", "true"}); code != exitUsage {
		t.Errorf("bad detail exited %d, want %d", code, exitUsage)
	}
	if code := run([]string{"profilemate-trace", "run", "-o", t.TempDir(), "--no-agent", "--", "sh", "-c", "exit 3"}); code != 3 {
		t.Errorf("exit code not passed through: %d", code)
	}
	if code := run([]string{"profilemate-trace", "export", filepath.Join(t.TempDir(), "missing.tar.zst")}); code != exitError {
		t.Errorf("export of a missing bundle exited %d", code)
	}
}

func TestFindBeside(t *testing.T) {
	if got := findBeside("rel/x.so"); !strings.HasPrefix(got, "/") {
		t.Errorf("explicit path not made absolute: %q", got)
	}
	exe, _ := os.Executable()
	dir := filepath.Dir(exe)
	if got := findBeside("", filepath.Base(exe)); got != filepath.Join(dir, filepath.Base(exe)) {
		t.Errorf("findBeside = %q", got)
	}
}
