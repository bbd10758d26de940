package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/profilemate/profilemate-trace/internal/capture"
	"github.com/profilemate/profilemate-trace/internal/inject"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

func attachCommand() *cli.Command {
	return &cli.Command{
		Name:  "attach",
		Usage: "trace a running process tree (a vLLM server) without restarting it",
		Description: `Attaches to PID and its descendants (engine core, workers, and children started later).
With the agent preloaded in the server (LD_PRELOAD=…/libprofilemate.so, dormant: it costs about
nothing until a tracer attaches), GPU capture is switched on for the capture and off again at
detach. Without it, attach says so once and records what eBPF alone sees. Ctrl-C or --duration
ends the capture; the session is written as with run.

A server started without the agent can be given it now with --inject (it and its CPython or
CUDA children are loaded; processes that already have an agent are left alone):
  never        load nothing (default)
  auto         CPython 3.14 and later only: the interpreter runs a loader script at its own
               safe point (PEP 768, as sys.remote_exec does); anything else is refused
  remote-exec  PEP 768 only (an error, not a suggestion, for anything else)
  ptrace       any glibc x86-64 process (CPython 3.10-3.13 included). Risk: one thread that
               sits in a blocking system call (a wait on a lock, queue, socket or timer) is
               stopped for a few milliseconds and the dynamic loader runs on it (dlopen, then
               the agent's start function, which only starts a thread); its registers are then
               restored and its system call restarted (a few calls, such as epoll_wait, return
               EINTR instead, as after any debugger attach). If no thread stays parked within
               3 s, nothing is touched and attach refuses. A call is never abandoned half-way:
               the tracer waits for it to return (leaving the loader with its lock held would
               hang the process). Needs root or CAP_SYS_PTRACE (Yama ptrace_scope 1 or 2:
               CAP_SYS_PTRACE; 3: impossible).
When the capture starts, arming CUPTI in a process that already ran CUDA work can stall its GPU
work for up to a few seconds, once; attach warns before and prints the measured time. At the end
the injected producers detach (the library stays mapped, inert) and the staging directory
(/tmp/profilemate-inject-PID-*, seen in the target's mount namespace) is removed. CUPTI cannot
be unloaded safely, so a process whose CUPTI was armed stays somewhat slower after detach until it
restarts (7-10 % on a CUDA-graph loop with a read-back per step, measured on an H200).

One tracer per process: a server's records can go to one capture only. If another capture (a
daemon window, a second attach) is reading a ring of the tree, attach leaves it alone, warns with
that tracer's pid and command, and takes the ring over when the other lets go; metadata.json
(contended_rings) says what went elsewhere.

Exit codes: 0 done; 2 usage; 3 setup (permissions, output directory, injection refused or
failed); 4 no such process.`,
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "pid", Aliases: []string{"p"}, Required: true, Usage: "process to attach to (its descendants are included)"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Usage: "stop after this long (e.g. 60s); default: until Ctrl-C or the process exits"},
			detailFlag(),
			&cli.UintFlag{Name: "sample-every", Usage: "kernel detail for one step in N only (0 = every step), to keep a long capture cheap"},
			&cli.StringFlag{Name: "inject", Value: "never", EnvVars: []string{"PROFILEMATE_INJECT"},
				Usage: "load the agent and the hook into a server started without them: never, auto (PEP 768, CPython 3.14+), remote-exec, or ptrace (stops one parked thread for a few ms; see the description)"},
			&cli.StringFlag{Name: "agent", EnvVars: []string{"PROFILEMATE_AGENT"}, Usage: "with --inject: path of libprofilemate.so (default: next to this binary, then lib/)"},
			&cli.StringFlag{Name: "pyhook", EnvVars: []string{"PROFILEMATE_PYHOOK_DIR"}, Usage: "with --inject: directory holding the profilemate_trace package (default: pyhook/ next to this binary)"},
			&cli.BoolFlag{Name: "no-pyhook", Usage: "with --inject: load the agent only, not the Python hook"},
		}, append(sessionFlags(), ebpfFlags()...)...),
		Action: func(c *cli.Context) error {
			d, err := ring.ParseDetail(c.String("detail"))
			if err != nil {
				return &capture.Error{Code: exitUsage, Err: err}
			}
			if c.NArg() > 0 {
				return &capture.Error{Code: exitUsage, Err: errors.New("attach takes no arguments; did you mean run -- COMMAND?")}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg := capture.AttachConfig{
				Pid: c.Int("pid"), Duration: c.Duration("duration"), OutputDir: c.String("output"), Detail: d,
				SampleEvery: uint32(c.Uint("sample-every")), NoBundle: c.Bool("no-bundle"), Verbose: c.Bool("verbose"),
				LogInterval: c.Int("log-interval"), Log: logger(c),
			}
			method, err := inject.ParseMethod(c.String("inject"))
			if err != nil {
				return &capture.Error{Code: exitUsage, Err: err}
			}
			cfg.Inject = inject.Options{Method: method, Log: cfg.Log}
			if method != inject.MethodNever {
				cfg.Inject.Agent = findBeside(c.String("agent"), "libprofilemate.so", "lib/libprofilemate.so", "../lib/libprofilemate.so", "cupti/build/libprofilemate.so", "../cupti/build/libprofilemate.so")
				if cfg.Inject.Agent == "" {
					return &capture.Error{Code: capture.ExitSetup, Err: errors.New("--inject: libprofilemate.so not found next to this binary (build it with `make`, or pass --agent)")}
				}
				if !c.Bool("no-pyhook") {
					cfg.Inject.PyHook = findBeside(c.String("pyhook"), "pyhook", "../pyhook", "../share/profilemate/pyhook")
				}
			}
			cfg.Extra = ebpfExtra(c, cfg.Log, false)
			res, err := capture.Attach(ctx, cfg)
			if res != nil {
				summarize(res)
			}
			return err
		},
	}
}
