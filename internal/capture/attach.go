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
	"github.com/profilemate/profilemate-trace/internal/inject"
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
	// Inject loads the agent and the hook into processes of the tree started without them
	// (docs/injection.md); Method never (the zero value) attaches to preloaded agents only.
	Inject inject.Options
	// InjectRingWait bounds the wait for the injected producers' rings (0 = DefaultInjectRingWait).
	InjectRingWait time.Duration
}

// DefaultInjectRingWait bounds the wait for an injected agent's ring: pm_inject_start starts
// the agent's thread at once and it creates its ring within milliseconds; the hook's Python
// thread needs the GIL, which a busy server hands over every 5 ms.
const DefaultInjectRingWait = 10 * time.Second

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
	var inj *inject.Injection
	if m := cfg.Inject.Method; m != "" && m != inject.MethodNever {
		if cfg.Inject.Warn == nil {
			cfg.Inject.Warn = func(s string) { fmt.Fprintln(cfg.Stderr, "profilemate-trace:", s) }
		}
		if cfg.Inject.Log == nil {
			cfg.Inject.Log = cfg.Log
		}
		fmt.Fprintf(cfg.Stderr, "profilemate-trace: loading the agent and the hook into pid %d and its CPython/CUDA children (--inject=%s)\n", cfg.Pid, m)
		var err error
		if inj, err = inject.Inject(ctx, cfg.Pid, cfg.Inject); err != nil {
			return nil, &Error{ExitSetup, fmt.Errorf("injection: %w", err)}
		}
		for _, p := range inj.Processes {
			if p.Skipped != "" {
				fmt.Fprintf(cfg.Stderr, "profilemate-trace: pid %d: not injected: %s\n", p.Pid, p.Skipped)
			} else {
				fmt.Fprintf(cfg.Stderr, "profilemate-trace: pid %d: loaded by %s in %.1f ms%s\n", p.Pid, p.Method, p.LoadMs, threadNote(p))
			}
		}
	}
	detached := false
	detach := func() {
		if detached || inj == nil {
			return
		}
		detached = true
		if err := inj.Detach(inject.DefaultDetachWait); err != nil {
			fmt.Fprintln(cfg.Stderr, "profilemate-trace: warning:", err)
		}
	}
	defer detach()
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
	if len(inj.Injected()) > 0 {
		waitInjectedRings(runCtx, cfg, inj)
		fmt.Fprintln(cfg.Stderr, "profilemate-trace: warning: the capture now arms CUPTI kernel tracing in the injected processes; "+
			"in a process that already ran CUDA work this can stall its GPU work for up to a few seconds, once (measured and reported below)")
		go reportStalls(runCtx, cfg, inj)
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
		if !hasSource(col, "cupti") && !contended(col, "cupti") && len(inj.Injected()) == 0 {
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
	if inj != nil {
		// Detach before the last drain: the producers flush on detach, and Finish reads that.
		for _, p := range inj.Injected() {
			if d, ok := inject.FirstEnableStall(p.Pid); ok {
				v := float64(d.Microseconds()) / 1000
				p.FirstEnableStallMs = &v
			}
		}
		detach()
		for _, p := range inj.Injected() {
			if !strings.HasPrefix(p.Detach, "acknowledged") {
				warnings = append(warnings, fmt.Sprintf("pid %d: injected producers did not all detach: %s", p.Pid, p.Detach))
			}
		}
		if !inj.StagingRemoved {
			warnings = append(warnings, "injection: a staging directory could not be removed (see the message above)")
		}
		warnings = append(warnings, inj.Logs()...)
		md.Injection = inj
	}
	streams, ferr := col.Finish()
	if ferr != nil {
		md.Warnings = append(md.Warnings, ferr.Error())
	}
	if !hasStreamSource(streams, "cupti") && !contended(col, "cupti") {
		warnings = append(warnings, "no profilemate agent found in the process tree: no GPU kernel records")
	}
	res := &Result{SessionDir: sess.Path, Streams: streams}
	finishMeta(md, streams, col, warnings)
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

// contended reports whether a ring of src was found held by another tracer (the capture's
// warnings say so; "no agent" would be wrong).
func contended(col *collect.Collector, src string) bool {
	for _, c := range col.Contended() {
		if c.Source == src {
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

func threadNote(p *inject.Process) string {
	if p.Tid == 0 {
		return ""
	}
	s := fmt.Sprintf(" (thread %d, parked in %s, stopped %.1f ms", p.Tid, p.Syscall, p.ThreadStoppedMs)
	if p.AgentReused {
		s += "; agent already mapped from an earlier injection"
	}
	return s + ")"
}

// waitInjectedRings waits, bounded, until every injected process shows its agent ring (and, for
// CPython, its hook ring), so that the capture starts with them; it says which did not appear.
func waitInjectedRings(ctx context.Context, cfg AttachConfig, inj *inject.Injection) {
	wait := cfg.InjectRingWait
	if wait <= 0 {
		wait = DefaultInjectRingWait
	}
	deadline := time.Now().Add(wait)
	for _, p := range inj.Injected() {
		want := []string{ring.SourceCUPTI.String()}
		if p.Python != "" && cfg.Inject.PyHook != "" {
			want = append(want, ring.SourcePyhook.String())
		}
		for {
			have := map[string]bool{}
			if found, err := ring.Find(p.Pid); err == nil {
				for _, f := range found {
					have[f.Source] = true
				}
			}
			var missing []string
			for _, w := range want {
				if !have[w] {
					missing = append(missing, w)
				}
			}
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				fmt.Fprintf(cfg.Stderr, "profilemate-trace: warning: pid %d: no %s ring %v after the injection (the injection log is copied into metadata.json warnings)\n",
					p.Pid, strings.Join(missing, "/"), wait)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// reportStalls prints, once per injected process, how long the agent's first enable blocked
// (first_enable_ns in its ring header), as soon as the agent publishes it.
func reportStalls(ctx context.Context, cfg AttachConfig, inj *inject.Injection) {
	left := map[int]bool{}
	for _, p := range inj.Injected() {
		left[p.Pid] = true
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for len(left) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for pid := range left {
			if d, ok := inject.FirstEnableStall(pid); ok {
				fmt.Fprintf(cfg.Stderr, "profilemate-trace: pid %d: the agent armed CUPTI at the first enable in %.3f ms (the target's CUDA calls may have waited on it that long)\n", pid, float64(d.Microseconds())/1000)
				delete(left, pid)
			}
		}
	}
}
