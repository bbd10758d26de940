package main

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
)

func TestCLIHandler(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(newCLIHandler(&buf, slog.LevelWarn))
	l.Info("not shown")
	l.Warn("code scan incomplete", "pid", 2165, "error", errors.New("code scan stopped after 4294811648 bytes"))
	l.With("pid", 7).WithGroup("ebpf").Error("detach failed", "probe", "cuLaunchKernel")
	want := "profilemate-trace: warning: code scan incomplete (pid=2165 error=\"code scan stopped after 4294811648 bytes\")\n" +
		"profilemate-trace: error: detach failed (pid=7 ebpf.probe=cuLaunchKernel)\n"
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}
