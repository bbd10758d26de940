// Package capture runs one capture end to end: it launches (run) or joins (attach) a process
// tree, collects its streams into a session directory, writes metadata.json, the derived
// files and the bundle.
package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/profilemate/profilemate-trace/export"
	"github.com/profilemate/profilemate-trace/internal/collect"
	"github.com/profilemate/profilemate-trace/internal/meta"
	"github.com/profilemate/profilemate-trace/internal/ring"
	"github.com/profilemate/profilemate-trace/internal/session"
)

// Version is set by the CLI from the build.
var Version = "dev"

// Exit codes beyond the target's own.
const (
	ExitUsage         = 2   // bad flags or arguments
	ExitSetup         = 3   // could not prepare the capture (output directory, socket)
	ExitNotFound      = 127 // the command does not exist (as a shell reports it)
	ExitNotExecutable = 126
)

// Error carries an exit code for the CLI.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// RunConfig configures `profilemate-trace run`.
type RunConfig struct {
	Command   []string
	OutputDir string // session base; "" = $VLLM_PROFILING_DIR or the default
	Detail    ring.Detail
	Agent     string // libprofilemate.so; "" = not preloaded
	PyHook    string // directory put on PYTHONPATH; "" = none
	NoBundle  bool
	Verbose   bool
	// LogInterval is VLLM_PROFILING_LOG_INTERVAL: with Verbose, a progress line every this
	// many GPU launches (kernels and graph replays), at most once a second.
	LogInterval int
	Log         *slog.Logger
	Stderr      io.Writer
	// Extra (the eBPF tracer) is started on the command's pid right after launch.
	Extra Extra
}

// Result summarises a finished capture.
type Result struct {
	SessionDir string
	Bundle     string
	ExitCode   int
	Warnings   []string
	Streams    []collect.StreamInfo
	Drops      meta.Drops
}

// Run launches cfg.Command with the agent and the hook armed, follows its process tree and
// writes the session when it exits (or on the second interrupt).
func Run(ctx context.Context, cfg RunConfig) (*Result, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if len(cfg.Command) == 0 {
		return nil, &Error{ExitUsage, errors.New("run needs a command after --")}
	}
	path, err := exec.LookPath(cfg.Command[0])
	if err != nil {
		code := ExitNotFound
		if errors.Is(err, os.ErrPermission) {
			code = ExitNotExecutable
		}
		return nil, &Error{code, fmt.Errorf("command %q: %w", cfg.Command[0], err)}
	}
	var warnings []string
	if cfg.Agent != "" {
		if _, err := os.Stat(cfg.Agent); err != nil {
			return nil, &Error{ExitSetup, fmt.Errorf("agent library: %w", err)}
		}
	} else {
		warnings = append(warnings, "GPU capture off: libprofilemate.so not found (build it with `make`, or pass --agent)")
	}
	start := time.Now()
	sess, err := session.Create(cfg.OutputDir, start)
	if err != nil {
		return nil, &Error{ExitSetup, err}
	}
	defer sess.Close()
	ctlDir, err := os.MkdirTemp("", "profilemate-ctl-")
	if err != nil {
		return nil, &Error{ExitSetup, err}
	}
	defer os.RemoveAll(ctlDir)
	sock, err := ring.ListenControl(ctlDir)
	if err != nil {
		return nil, &Error{ExitSetup, fmt.Errorf("control socket: %w", err)}
	}
	defer sock.Close()

	md := &meta.Metadata{Tool: "profilemate-trace", Version: Version, Session: sess.Name, Mode: "run",
		Command: cfg.Command, StartTime: start.UTC(), Clock: "CLOCK_MONOTONIC", StartMonotonicNs: meta.MonotonicNs(),
		WallMinusMonotonicNs: meta.WallMinusMonotonic(), Detail: cfg.Detail.String(), Host: meta.NewHost(),
		Sources: map[string]string{}}
	md.GPU = meta.ProbeGPU()
	if !md.GPU.Available {
		warnings = append(warnings, "NVML not available ("+md.GPU.Reason+"): GPU and driver details are missing from metadata.json")
	}
	for _, w := range warnings {
		fmt.Fprintln(cfg.Stderr, "profilemate-trace: "+w)
	}
	md.Warnings = append(md.Warnings, warnings...)

	cmd := exec.Command(path, cfg.Command[1:]...)
	cmd.Args[0] = cfg.Command[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = childEnv(os.Environ(), cfg, sock.Path(), sess.Path)

	col := collect.New(collect.Options{
		Create:   func(name string) (io.WriteCloser, error) { return sess.Create(filepath.Join("raw", name)) },
		Detail:   cfg.Detail,
		Log:      cfg.Log,
		Progress: progress(cfg),
	})
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return nil, &Error{ExitNotExecutable, fmt.Errorf("starting %s: %w", cfg.Command[0], err)}
	}
	col.Watch(cmd.Process.Pid)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { col.Run(runCtx, sock); close(done) }()
	var stopExtra func() error
	if cfg.Extra != nil {
		create := func(name string) (io.WriteCloser, error) { return sess.Create(filepath.Join("raw", name)) }
		var err error
		if stopExtra, err = cfg.Extra(runCtx, cmd.Process.Pid, create); err != nil {
			msg := "eBPF attribution off: " + err.Error()
			fmt.Fprintln(cfg.Stderr, "profilemate-trace: "+msg)
			md.Warnings = append(md.Warnings, msg)
		}
	}

	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var waitErr error
	interrupts := 0
loop:
	for {
		select {
		case waitErr = <-waited:
			break loop
		case <-ctx.Done():
			break loop
		case sig := <-sigs:
			interrupts++
			if interrupts >= 2 {
				fmt.Fprintln(cfg.Stderr, "profilemate-trace: second interrupt: writing the session now; the command keeps running untraced")
				break loop
			}
			fmt.Fprintln(cfg.Stderr, "profilemate-trace: waiting for the command to exit (interrupt again to stop tracing now)")
			if sig == syscall.SIGINT {
				// The terminal already delivered SIGINT to the whole foreground group; send it
				// ourselves only if the command is still alive a moment later (kill -INT).
				go func(p *os.Process) {
					time.Sleep(2 * time.Second)
					p.Signal(syscall.SIGINT)
				}(cmd.Process)
			} else {
				cmd.Process.Signal(sig)
			}
		}
	}
	stop()
	<-done
	if stopExtra != nil {
		if err := stopExtra(); err != nil {
			md.Warnings = append(md.Warnings, "eBPF: "+err.Error())
		}
	}
	res := &Result{SessionDir: sess.Path, ExitCode: exitCode(waitErr, cmd)}
	if interrupts >= 2 || ctx.Err() != nil {
		res.ExitCode = 130
	}
	md.ExitCode = &res.ExitCode
	printed := len(md.Warnings) // shown before launch already
	streams, ferr := col.Finish()
	if ferr != nil {
		md.Warnings = append(md.Warnings, ferr.Error())
	}
	res.Streams = streams
	finishMeta(md, streams, col, nil)
	res.Drops = md.Drops
	res.Warnings = md.Warnings[printed:]
	if err := writeOutputs(sess, md, cfg.NoBundle, res); err != nil {
		return res, err
	}
	return res, nil
}

func progress(cfg RunConfig) func(collect.Totals) {
	if !cfg.Verbose {
		return nil
	}
	every := uint64(cfg.LogInterval)
	if every == 0 {
		every = 100
	}
	var next uint64 = every
	var last time.Time
	return func(t collect.Totals) {
		if t.Launches < next || time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		next = (t.Launches/every + 1) * every
		fmt.Fprintf(cfg.Stderr, "profilemate-trace: %d streams, %d records, %d GPU launches, %d dropped\n", t.Streams, t.Records, t.Launches, t.Dropped)
	}
}

func childEnv(env []string, cfg RunConfig, sock, sessDir string) []string {
	set := map[string]string{
		"PROFILEMATE_CONTROL_SOCKET": sock,
		"PROFILEMATE_SESSION_DIR":    sessDir,
	}
	if cfg.Detail != ring.DetailOff {
		set["PROFILEMATE_START"] = cfg.Detail.String()
	}
	if cfg.Agent != "" {
		set["LD_PRELOAD"] = prepend(lookup(env, "LD_PRELOAD"), cfg.Agent, ":")
	}
	if cfg.PyHook != "" {
		set["PYTHONPATH"] = prepend(lookup(env, "PYTHONPATH"), cfg.PyHook, ":")
	}
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; ok || cliOnly[k] {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range set {
		out = append(out, k+"="+v)
	}
	return out
}

// cliOnly are variables the CLI reads; the agent would warn about them as unknown.
var cliOnly = map[string]bool{"PROFILEMATE_DETAIL": true, "PROFILEMATE_AGENT": true}

func lookup(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func prepend(list, item, sep string) string {
	if list == "" {
		return item
	}
	for _, e := range strings.Split(list, sep) {
		if e == item {
			return list
		}
	}
	return item + sep + list
}

func exitCode(err error, cmd *exec.Cmd) int {
	if cmd.ProcessState == nil {
		return 1
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

func finishMeta(md *meta.Metadata, streams []collect.StreamInfo, col *collect.Collector, warnings []string) {
	md.EndTime = time.Now().UTC()
	md.EndMonotonicNs = meta.MonotonicNs()
	md.DurationSec = float64(md.EndMonotonicNs-md.StartMonotonicNs) / 1e9
	md.Streams = streams
	md.Warnings = append(md.Warnings, warnings...)
	if ct := col.Contended(); len(ct) > 0 {
		md.ContendedRings = ct
		for _, c := range ct {
			md.Warnings = append(md.Warnings, c.Message())
		}
	}
	pids := col.Pids()
	seen := map[int]bool{}
	for _, s := range streams {
		md.Drops.RingRecords += s.RecordsDropped
		md.Drops.RingBytes += s.BytesDropped
		md.Drops.SourceRecords += s.SourceDropped
		if s.CuptiVersion != 0 {
			if md.GPU.CuptiVersions == nil {
				md.GPU.CuptiVersions = map[string]uint32{}
			}
			md.GPU.CuptiVersions[fmt.Sprint(s.Pid)] = s.CuptiVersion
		}
		if s.Source == "cupti" {
			md.Sources["cupti"] = "captured"
			if s.ProducerState == "passive" {
				md.Warnings = append(md.Warnings, fmt.Sprintf("pid %d: CUPTI is held by another tool; GPU records missing for it", s.Pid))
			}
		}
		if s.Source == "pyhook" {
			md.Sources["pyhook"] = "captured"
		}
		if s.Source == "ebpf" {
			md.Sources["ebpf"] = "captured"
		}
		for _, m := range s.Messages {
			md.Warnings = append(md.Warnings, fmt.Sprintf("pid %d (%s): %s", s.Pid, s.Source, m))
		}
		seen[s.Pid] = true
	}
	md.Drops.Total = md.Drops.RingRecords + md.Drops.SourceRecords
	for _, p := range pids {
		seen[p] = true
	}
	for p := range seen {
		md.Processes = append(md.Processes, meta.Process{Pid: p})
	}
	for _, src := range []string{"cupti", "pyhook", "ebpf"} {
		if _, ok := md.Sources[src]; !ok {
			md.Sources[src] = "no stream"
		}
	}
}

func writeOutputs(sess *session.Dir, md *meta.Metadata, noBundle bool, res *Result) error {
	b, err := md.Marshal()
	if err != nil {
		return err
	}
	if err := sess.WriteFile("metadata.json", b); err != nil {
		return err
	}
	s, err := export.Load(sess.Path)
	if err != nil {
		return fmt.Errorf("reading back the session: %w", err)
	}
	if patches := export.Patches(s); len(patches) > 0 {
		md.PyhookPatches = patches
		if b, err = md.Marshal(); err != nil {
			return err
		}
		if err := sess.WriteFile("metadata.json", b); err != nil {
			return err
		}
	}
	if _, err := export.WriteDerived(s, sess.Path); err != nil {
		return err
	}
	if noBundle {
		return nil
	}
	res.Bundle = sess.Path + export.BundleSuffix
	if err := export.WriteBundle(sess.Path, res.Bundle); err != nil {
		return fmt.Errorf("writing bundle: %w", err)
	}
	return nil
}
