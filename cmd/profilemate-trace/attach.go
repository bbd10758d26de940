package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/profilemate/profilemate-trace/internal/capture"
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

Exit codes: 0 done; 2 usage; 3 setup (permissions, output directory); 4 no such process.`,
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "pid", Aliases: []string{"p"}, Required: true, Usage: "process to attach to (its descendants are included)"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Usage: "stop after this long (e.g. 60s); default: until Ctrl-C or the process exits"},
			detailFlag(),
			&cli.UintFlag{Name: "sample-every", Usage: "kernel detail for one step in N only (0 = every step), to keep a long capture cheap"},
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
			cfg.Extra = ebpfExtra(c, cfg.Log, false)
			res, err := capture.Attach(ctx, cfg)
			if res != nil {
				summarize(res)
			}
			return err
		},
	}
}
