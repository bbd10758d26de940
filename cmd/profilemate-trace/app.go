package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/profilemate/profilemate-trace/export"
	"github.com/profilemate/profilemate-trace/internal/capture"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

// version is set with -ldflags "-X main.version=…" by the Makefile.
var version = "dev"

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func run(args []string) int {
	capture.Version = version
	app := newApp()
	err := app.Run(args)
	if err == nil {
		return exitOK
	}
	var ee *exitErr
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "profilemate-trace:", err)
	var ce *capture.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return exitError
}

// exitErr ends the program with a code and nothing more to print.
type exitErr struct{ code int }

func (e *exitErr) Error() string { return "exit " + strconv.Itoa(e.code) }

func newApp() *cli.App {
	return &cli.App{
		Name:    "profilemate-trace",
		Usage:   "trace where the time goes inside a live vLLM server (GPU, CPU and vLLM's own meaning)",
		Version: version,
		Description: `profilemate-trace joins three sources on one clock: a CUPTI agent inside each CUDA
process (what the GPU did), eBPF probes on libcuda (which Python phase launched it), and a
Python hook (vLLM's BatchDescriptors, KV blocks, experts, scheduler decisions). A session is
written to $VLLM_PROFILING_DIR/session_YYYYMMDD_HHMMSS/ (default /tmp/vllm_profiling) as the
ProfileMate CSV/JSON set plus raw streams, and packed into session_….tar.zst.

Examples:
  profilemate-trace run -- vllm serve meta-llama/Llama-3.1-8B
  profilemate-trace run --detail nodes -- python bench.py
  profilemate-trace export /tmp/vllm_profiling/session_20261127_101500.tar.zst -o ./out`,
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", EnvVars: []string{"VLLM_PROFILING_VERBOSE"}, Usage: "log progress and details to stderr"},
		},
		Commands:       []*cli.Command{runCommand(), attachCommand(), exportCommand(), reportCommand(), doctorCommand(), daemonCommand(), captureCommand(), capturesCommand()},
		ExitErrHandler: func(c *cli.Context, err error) {},
	}
}

func logger(c *cli.Context) *slog.Logger {
	lvl := slog.LevelWarn
	if c.Bool("verbose") {
		lvl = slog.LevelDebug
	}
	return slog.New(newCLIHandler(os.Stderr, lvl))
}

// sessionFlags are the session-writing options shared by run and attach.
func sessionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, EnvVars: []string{"VLLM_PROFILING_DIR"}, Usage: "session base directory (default /tmp/vllm_profiling)"},
		&cli.BoolFlag{Name: "no-bundle", Usage: "write the session directory only, no .tar.zst"},
		&cli.IntFlag{Name: "log-interval", EnvVars: []string{"VLLM_PROFILING_LOG_INTERVAL"}, Value: 100, Usage: "with --verbose, print progress every N GPU launches"},
	}
}

func detailFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "detail", Value: "graph", EnvVars: []string{"PROFILEMATE_DETAIL"},
		Usage: "kernel detail: graph (one record per CUDA-graph replay plus every eager kernel; cheap, the default), nodes (every kernel inside graphs too; costly, for bounded windows) or off (no kernel records)"}
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "launch a command with GPU capture armed and trace its whole process tree",
		ArgsUsage: "[flags] -- COMMAND [ARGS…]",
		Description: `Launches COMMAND with the CUPTI agent preloaded (LD_PRELOAD arms CUDA injection; the
agent starts inside each process's first cuInit, so forked and spawned workers are traced too)
and the Python hook on PYTHONPATH. Records stream out of every process continuously; when the
command exits (or on a second Ctrl-C) the session directory, metadata.json, the derived CSVs and
the bundle are written. The command's exit code is passed through.

Environment: VLLM_PROFILING_DIR (session base), VLLM_PROFILING_VERBOSE=1 (progress),
VLLM_PROFILING_LOG_INTERVAL=N (progress every N GPU launches, at most once a second).`,
		Flags: append([]cli.Flag{
			detailFlag(),
			&cli.StringFlag{Name: "agent", EnvVars: []string{"PROFILEMATE_AGENT"}, Usage: "path of libprofilemate.so (default: next to this binary, then lib/)"},
			&cli.StringFlag{Name: "pyhook", EnvVars: []string{"PROFILEMATE_PYHOOK_DIR"}, Usage: "directory of the Python hook put on PYTHONPATH (default: pyhook/ next to this binary)"},
			&cli.BoolFlag{Name: "no-agent", Usage: "do not preload the CUPTI agent"},
			&cli.BoolFlag{Name: "no-pyhook", Usage: "do not put the Python hook on PYTHONPATH"},
		}, append(sessionFlags(), ebpfFlags()...)...),
		Action: func(c *cli.Context) error {
			d, err := ring.ParseDetail(c.String("detail"))
			if err != nil {
				return &capture.Error{Code: exitUsage, Err: err}
			}
			if c.NArg() == 0 {
				cli.ShowSubcommandHelp(c)
				return &capture.Error{Code: exitUsage, Err: errors.New("run needs a command: profilemate-trace run -- COMMAND [ARGS…]")}
			}
			cfg := capture.RunConfig{
				Command: c.Args().Slice(), OutputDir: c.String("output"), Detail: d,
				Verbose: c.Bool("verbose"), LogInterval: c.Int("log-interval"), Log: logger(c), NoBundle: c.Bool("no-bundle"),
			}
			if !c.Bool("no-agent") {
				cfg.Agent = findBeside(c.String("agent"), "libprofilemate.so", "lib/libprofilemate.so", "../lib/libprofilemate.so", "cupti/build/libprofilemate.so", "../cupti/build/libprofilemate.so")
			}
			if !c.Bool("no-pyhook") {
				cfg.PyHook = findBeside(c.String("pyhook"), "pyhook", "../pyhook", "../share/profilemate/pyhook")
			}
			cfg.Extra = ebpfExtra(c, cfg.Log, true)
			res, err := capture.Run(context.Background(), cfg)
			if res != nil {
				summarize(res)
			}
			if err != nil {
				return err
			}
			if res.ExitCode != 0 {
				return &exitErr{res.ExitCode}
			}
			return nil
		},
	}
}

// findBeside returns explicit when set, else the first candidate that exists relative to
// this executable's directory.
func findBeside(explicit string, candidates ...string) string {
	if explicit != "" {
		if abs, err := filepath.Abs(explicit); err == nil {
			return abs
		}
		return explicit
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	dir := filepath.Dir(exe)
	for _, c := range candidates {
		p := filepath.Join(dir, c)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func summarize(res *capture.Result) {
	for _, w := range res.Warnings {
		fmt.Fprintln(os.Stderr, "profilemate-trace: warning:", w)
	}
	var recs uint64
	for _, s := range res.Streams {
		recs += s.Records
	}
	raw, _ := filepath.Glob(filepath.Join(res.SessionDir, "raw", "*.pmr"))
	fmt.Fprintf(os.Stderr, "profilemate-trace: session %s (%d raw streams; %d agent and hook records", res.SessionDir, len(raw), recs)
	if res.Drops.Total > 0 {
		fmt.Fprintf(os.Stderr, ", %d DROPPED: see metadata.json drops", res.Drops.Total)
	}
	fmt.Fprintln(os.Stderr, ")")
	if res.Bundle != "" {
		fmt.Fprintf(os.Stderr, "profilemate-trace: bundle %s\n", res.Bundle)
	}
}

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "recreate a session's files from a bundle or session directory",
		ArgsUsage: "BUNDLE|SESSION_DIR",
		Description: `Reads the raw streams and metadata.json of a bundle (.tar.zst) or a session directory and
writes a complete session directory: metadata.json, raw/ and every derived CSV/JSON file.
The output is built under a temporary name and renamed when complete.
With --format perfetto it writes a Perfetto/Chrome JSON trace instead (-o names the file).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output directory (must not exist, or be empty); default: the bundle's session name in the current directory"},
			&cli.StringFlag{Name: "format", Value: "csv", Usage: "csv (the session directory) or perfetto (a JSON trace for ui.perfetto.dev)"},
			kernelClassesFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				cli.ShowSubcommandHelp(c)
				return &capture.Error{Code: exitUsage, Err: errors.New("export takes one bundle or session directory")}
			}
			src := c.Args().First()
			out := c.String("output")
			switch c.String("format") {
			case "csv":
			case "perfetto":
				return exportPerfetto(c, src, out)
			default:
				return &capture.Error{Code: exitUsage, Err: fmt.Errorf("--format %q: want csv or perfetto", c.String("format"))}
			}
			if p := c.String("kernel-classes"); p != "" {
				if _, err := export.LoadKernelRules(p); err != nil {
					return &capture.Error{Code: exitUsage, Err: err}
				}
				os.Setenv(export.KernelRulesEnv, p)
			}
			if out == "" {
				base := filepath.Base(src)
				for _, suf := range []string{export.BundleSuffix} {
					if len(base) > len(suf) && base[len(base)-len(suf):] == suf {
						base = base[:len(base)-len(suf)]
					}
				}
				out = base
			}
			s, err := export.Export(src, out)
			if err != nil {
				return err
			}
			for _, w := range s.Warnings {
				fmt.Fprintln(os.Stderr, "profilemate-trace: warning:", w)
			}
			fmt.Fprintf(os.Stderr, "profilemate-trace: wrote %s (%d streams)\n", out, len(s.Streams))
			return nil
		},
	}
}
