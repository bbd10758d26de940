package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/profilemate/profilemate-trace/internal/capture"
	"github.com/profilemate/profilemate-trace/internal/record"
	"github.com/profilemate/profilemate-trace/tracer"
)

// ebpfFlags are the eBPF options shared by run and attach.
func ebpfFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "no-ebpf", Usage: "do not load eBPF probes (no launch attribution to Python phases)"},
		&cli.StringFlag{Name: "phases", EnvVars: []string{"PROFILEMATE_PHASES"}, Usage: "phase table file (`FILE`: one rule per line, 'phase-name qualname [file-suffix]'); default: vLLM's V1/V2 phases"},
		&cli.BoolFlag{Name: "follow-fast", Usage: "probe the libcuda file for every process so new children are traced from their first call (costs a trap on libcuda calls of untraced processes using the same file)"},
	}
}

// ebpfExtra returns the capture hook that runs the eBPF tracer beside the ring collector, or
// nil with --no-ebpf. Each traced process gets raw/<pid>.ebpf.pmr; pid 0 carries tracer-wide
// records. A tracer that cannot start (no root, no BTF) is reported and the capture goes on.
func ebpfExtra(c *cli.Context, log *slog.Logger, waitForLibcuda bool) capture.Extra {
	if c.Bool("no-ebpf") {
		return nil
	}
	return func(ctx context.Context, pid int, create func(string) (io.WriteCloser, error)) (func() error, error) {
		tab, err := tracer.LoadPhaseTable(c.String("phases"))
		if err != nil {
			return nil, fmt.Errorf("phase table: %w", err)
		}
		tr, err := tracer.New(tracer.Config{Phases: tab, Logger: log, WaitForLibcuda: waitForLibcuda, SystemWide: c.Bool("follow-fast")})
		if err != nil {
			return nil, err
		}
		if err := tr.Attach(pid); err != nil {
			tr.Close()
			return nil, err
		}
		w := &ebpfStreams{create: create, files: map[int]*ebpfFile{}}
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- tr.Run(runCtx, w.sink) }()
		return func() error {
			cancel()
			runErr := <-done
			if errors.Is(runErr, context.Canceled) {
				runErr = nil
			}
			st := tr.Stats()
			for _, p := range st.Procs {
				if p.PythonErr != "" && p.Probed {
					log.Warn("launches of this process have no Python phases", "pid", p.Pid, "why", p.PythonErr)
				}
			}
			return errors.Join(runErr, tr.Close(), w.close())
		}, nil
	}
}

type ebpfFile struct {
	f io.WriteCloser
	w *record.RawWriter
}

// ebpfStreams writes the tracer's records into one raw stream per pid. A process gets a file
// only once it does something the tracer records (a launch, a sync, a code object, counters):
// a short-lived helper child that never touches CUDA (a shell, ldconfig) leaves no empty
// stream behind. Until then its header records are held in pending.
type ebpfStreams struct {
	mu      sync.Mutex
	create  func(string) (io.WriteCloser, error)
	files   map[int]*ebpfFile
	pending map[int][]byte
	err     error
}

// headerOnly reports records that every stream starts with and that alone say nothing.
func headerOnly(t record.Type) bool {
	return t == record.TypeEbpfPhaseDef || t == record.TypeEbpfProc
}

func (e *ebpfStreams) sink(pid int, rec []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.files[pid]
	if f == nil && headerOnly(record.TypeOf(rec)) {
		if e.pending == nil {
			e.pending = map[int][]byte{}
		}
		e.pending[pid] = append(e.pending[pid], rec...)
		return nil
	}
	if f == nil {
		out, err := e.create(strconv.Itoa(pid) + ".ebpf.pmr")
		if err != nil {
			e.err = err
			return err
		}
		w, err := record.NewRawWriter(out, record.StreamMeta{Source: "ebpf", Pid: pid})
		if err != nil {
			out.Close()
			return err
		}
		f = &ebpfFile{f: out, w: w}
		e.files[pid] = f
		if held := e.pending[pid]; len(held) > 0 {
			delete(e.pending, pid)
			if err := f.w.Write(held); err != nil {
				return err
			}
		}
	}
	return f.w.Write(rec)
}

func (e *ebpfStreams) close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for _, f := range e.files {
		errs = append(errs, f.w.Flush(), f.f.Close())
	}
	return errors.Join(errs...)
}

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:      "doctor",
		Usage:     "check what tracing will and will not work here (kernel, BTF, privileges, a pid's libcuda and CPython)",
		ArgsUsage: "[--pid N]",
		Flags:     []cli.Flag{&cli.IntFlag{Name: "pid", Aliases: []string{"p"}, Usage: "also check this process"}},
		Description: `Prints one line per check: ok, warn (works, degraded) or fail (will not work), with the fix.
Exit code 0 when nothing failed, 1 otherwise.`,
		Action: func(c *cli.Context) error {
			failed := false
			for _, ch := range tracer.Doctor(c.Int("pid")) {
				line := fmt.Sprintf("%-5s %-13s %s", ch.Status, ch.Name, ch.Detail)
				if ch.Fix != "" && ch.Status != tracer.StatusOK {
					line += "\n      fix: " + ch.Fix
				}
				fmt.Fprintln(c.App.Writer, line)
				failed = failed || ch.Status == tracer.StatusFail
			}
			if failed {
				return &exitErr{exitError}
			}
			return nil
		},
	}
}
