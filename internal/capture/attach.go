package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/profilemate/profilemate-trace/internal/collect"
	"github.com/profilemate/profilemate-trace/internal/meta"
	"github.com/profilemate/profilemate-trace/internal/ring"
	"github.com/profilemate/profilemate-trace/internal/session"
)

// ExitNoProcess is returned when the pid to attach to does not exist.
const ExitNoProcess = 4

// AttachConfig configures `profilemate-trace attach`.
type AttachConfig struct {
	Pid         int
	Duration    time.Duration // 0 = until ctx ends or the process exits
	OutputDir   string
	Detail      ring.Detail
	SampleEvery uint32
	NoBundle    bool
	Verbose     bool
	LogInterval int
	Log         *slog.Logger
	Stderr      io.Writer
	// Mode is written to metadata.json ("attach", or "daemon" for captures it triggers).
	Mode string
	// Extra, when set, is started with the session and stopped before outputs are written
	// (the eBPF tracer). It writes its own raw streams through create.
	Extra Extra
}

// Extra is a further source started beside the ring collector for the process tree of pid
// (the eBPF tracer); it writes its own raw streams through create, and stop ends it.
type Extra func(ctx context.Context, pid int, create func(name string) (io.WriteCloser, error)) (stop func() error, err error)

// Attach joins a running process tree: every dormant agent and hook ring found in it is
// switched on at cfg.Detail, drained into a session, and switched back to dormant at the end.
func Attach(ctx context.Context, cfg AttachConfig) (*Result, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Mode == "" {
		cfg.Mode = "attach"
	}
	if cfg.Pid <= 0 {
		return nil, &Error{ExitUsage, errors.New("attach needs --pid N")}
	}
	if err := syscall.Kill(cfg.Pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return nil, &Error{ExitNoProcess, fmt.Errorf("pid %d: no such process", cfg.Pid)}
	}
	if _, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(cfg.Pid), "fd")); err != nil {
		return nil, &Error{ExitSetup, fmt.Errorf("pid %d: cannot read its file descriptors (%v); run as root or with CAP_SYS_PTRACE", cfg.Pid, err)}
	}
	start := time.Now()
	sess, err := session.Create(cfg.OutputDir, start)
	if err != nil {
		return nil, &Error{ExitSetup, err}
	}
	defer sess.Close()
	md := &meta.Metadata{Tool: "profilemate-trace", Version: Version, Session: sess.Name, Mode: cfg.Mode,
		Command: readCmdline(cfg.Pid), StartTime: start.UTC(), Clock: "CLOCK_MONOTONIC", StartMonotonicNs: meta.MonotonicNs(),
		WallMinusMonotonicNs: meta.WallMinusMonotonic(), Detail: cfg.Detail.String(), Host: meta.NewHost(), Sources: map[string]string{}}
	md.GPU = meta.ProbeGPU()
	create := func(name string) (io.WriteCloser, error) { return sess.Create(filepath.Join("raw", name)) }
	col := collect.New(collect.Options{Create: create, Enable: true, Detail: cfg.Detail, SampleEvery: cfg.SampleEvery,
		DisableOnFinish: true, Log: cfg.Log, Progress: progress(RunConfig{Verbose: cfg.Verbose, LogInterval: cfg.LogInterval, Stderr: cfg.Stderr})})
	col.Watch(cfg.Pid)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(runCtx, cfg.Duration)
		defer cancel()
	}
	var warnings []string
	var stopExtra func() error
	if cfg.Extra != nil {
		stopExtra, err = cfg.Extra(runCtx, cfg.Pid, create)
		if err != nil {
			warnings = append(warnings, "eBPF attribution off: "+err.Error())
			fmt.Fprintln(cfg.Stderr, "profilemate-trace: eBPF attribution off:", err)
		}
	}
	done := make(chan struct{})
	go func() { col.Run(runCtx, nil); close(done) }()
	// Tell the user once what this attach can see.
	go func() {
		select {
		case <-time.After(2 * collect.DefaultScan):
		case <-runCtx.Done():
			return
		}
		if !hasSource(col, "cupti") {
			msg := fmt.Sprintf("no profilemate agent in pid %d or its children: GPU kernel records are unavailable. Start the server with LD_PRELOAD=<path>/libprofilemate.so (dormant until attached) to get them", cfg.Pid)
			fmt.Fprintln(cfg.Stderr, "profilemate-trace:", msg)
		}
	}()
	// End when the root process exits, too.
	go func() {
		for runCtx.Err() == nil {
			if syscall.Kill(cfg.Pid, 0) != nil {
				stop()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	<-runCtx.Done()
	<-done
	if stopExtra != nil {
		if err := stopExtra(); err != nil {
			warnings = append(warnings, "eBPF: "+err.Error())
		}
	}
	streams, ferr := col.Finish()
	if ferr != nil {
		md.Warnings = append(md.Warnings, ferr.Error())
	}
	if !hasStreamSource(streams, "cupti") {
		warnings = append(warnings, "no profilemate agent found in the process tree: no GPU kernel records")
	}
	res := &Result{SessionDir: sess.Path, Streams: streams}
	finishMeta(md, streams, col.Pids(), warnings)
	res.Drops = md.Drops
	res.Warnings = md.Warnings
	if err := writeOutputs(sess, md, cfg.NoBundle, res); err != nil {
		return res, err
	}
	return res, nil
}

func hasSource(col *collect.Collector, src string) bool {
	for _, s := range col.Sources() {
		if s == src {
			return true
		}
	}
	return false
}

func hasStreamSource(streams []collect.StreamInfo, src string) bool {
	for _, s := range streams {
		if s.Source == src {
			return true
		}
	}
	return false
}

func readCmdline(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}
