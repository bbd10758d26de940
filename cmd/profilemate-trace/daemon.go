package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/profilemate/profilemate-trace/internal/capture"
	"github.com/profilemate/profilemate-trace/internal/daemon"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

func daemonFlagListen() *cli.StringFlag {
	return &cli.StringFlag{Name: "listen", Value: daemon.DefaultListen, EnvVars: []string{"PROFILEMATE_LISTEN"},
		Usage: "API address: unix:/path (default, root only), 127.0.0.1:PORT, or a non-loopback HOST:PORT (needs --token-file)"}
}

func tokenFileFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "token-file", EnvVars: []string{"PROFILEMATE_TOKEN_FILE"},
		Usage: "file holding the API token (mode 0600/0400); clients send \"Authorization: Bearer <token>\""}
}

func daemonCommand() *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run the node daemon: find vLLM processes, capture on request or on a schedule, keep the bundles",
		Description: `One daemon per node (the Kubernetes DaemonSet in deploy/). It watches the host's processes
for vLLM servers (any container; their engine-core and worker children included) and captures
them on request:

  profilemate-trace capture --pid 12345 --duration 60s --wait -o trace.tar.zst
  profilemate-trace capture --namespace ml --pod vllm-0 --duration 30s
  profilemate-trace captures

or periodically (--every 30m --window 60s). Bundles go to --bundle-dir (0700; files 0600) and
are removed oldest first beyond --retain-size or --retain-age. Metrics: GET /metrics.
SIGTERM ends every capture (rings go back to dormant, bundles are written) and exits.
See docs/kubernetes.md.`,
		Flags: append([]cli.Flag{
			daemonFlagListen(),
			&cli.StringFlag{Name: "metrics-listen", EnvVars: []string{"PROFILEMATE_METRICS_LISTEN"}, Usage: "extra listener serving only /metrics and /healthz (e.g. 0.0.0.0:9464 for Prometheus; no token needed)"},
			tokenFileFlag(),
			&cli.StringFlag{Name: "bundle-dir", Value: daemon.DefaultBundleDir, EnvVars: []string{"PROFILEMATE_BUNDLE_DIR"}, Usage: "where captures are kept (one directory per capture)"},
			&cli.StringFlag{Name: "retain-size", Value: "10GiB", EnvVars: []string{"PROFILEMATE_RETAIN_SIZE"}, Usage: "remove the oldest captures beyond this total size (e.g. 500MiB, 20GiB)"},
			&cli.DurationFlag{Name: "retain-age", Value: daemon.DefaultRetainAge, EnvVars: []string{"PROFILEMATE_RETAIN_AGE"}, Usage: "remove captures older than this"},
			&cli.BoolFlag{Name: "keep-dirs", EnvVars: []string{"PROFILEMATE_KEEP_DIRS"}, Usage: "keep each expanded session directory next to its bundle"},
			&cli.DurationFlag{Name: "max-duration", Value: daemon.DefaultMaxDuration, EnvVars: []string{"PROFILEMATE_MAX_DURATION"}, Usage: "refuse capture windows longer than this"},
			&cli.DurationFlag{Name: "default-duration", EnvVars: []string{"PROFILEMATE_DEFAULT_DURATION"}, Value: daemon.DefaultDuration, Usage: "window of a request that names none"},
			&cli.IntFlag{Name: "max-running", Value: daemon.DefaultMaxRunning, EnvVars: []string{"PROFILEMATE_MAX_RUNNING"}, Usage: "captures allowed at once"},
			&cli.DurationFlag{Name: "every", EnvVars: []string{"PROFILEMATE_EVERY"}, Usage: "start a periodic window on every vLLM process tree this often (e.g. 30m); off by default"},
			&cli.DurationFlag{Name: "window", EnvVars: []string{"PROFILEMATE_WINDOW"}, Usage: "length of each periodic window (e.g. 60s)"},
			&cli.StringFlag{Name: "schedule-detail", Value: "graph", EnvVars: []string{"PROFILEMATE_SCHEDULE_DETAIL"}, Usage: "kernel detail of periodic windows (graph, nodes, off)"},
			&cli.DurationFlag{Name: "scan-interval", EnvVars: []string{"PROFILEMATE_SCAN_INTERVAL"}, Value: daemon.DefaultScan, Usage: "how often /proc is rescanned for vLLM processes"},
			&cli.StringSliceFlag{Name: "allow-namespace", EnvVars: []string{"PROFILEMATE_ALLOW_NAMESPACE"}, Usage: "only processes of pods in these Kubernetes namespaces (repeat or comma-separate)"},
			&cli.StringSliceFlag{Name: "allow-pod-uid", EnvVars: []string{"PROFILEMATE_ALLOW_POD_UID"}, Usage: "only processes of these pod UIDs"},
			&cli.StringSliceFlag{Name: "allow-container", EnvVars: []string{"PROFILEMATE_ALLOW_CONTAINER"}, Usage: "only processes of containers whose id starts with one of these"},
			&cli.StringSliceFlag{Name: "allow-cgroup", EnvVars: []string{"PROFILEMATE_ALLOW_CGROUP"}, Usage: "only processes whose cgroup path contains one of these"},
			&cli.StringFlag{Name: "pods-log-dir", EnvVars: []string{"PROFILEMATE_PODS_LOG_DIR"}, Value: daemon.DefaultPodsLogDir, Usage: "the kubelet's pod log directory (maps pod UIDs to namespaces)"},
			&cli.BoolFlag{Name: "any-process", EnvVars: []string{"PROFILEMATE_ANY_PROCESS"}, Usage: "allow captures of processes not recognised as vLLM"},
			&cli.DurationFlag{Name: "shutdown-timeout", EnvVars: []string{"PROFILEMATE_SHUTDOWN_TIMEOUT"}, Value: daemon.DefaultShutdownTimeout, Usage: "on SIGTERM, how long to wait for bundles of captures cut short"},
			&cli.StringFlag{Name: "log-format", EnvVars: []string{"PROFILEMATE_LOG_FORMAT"}, Value: "text", Usage: "log format: text or json"},
		}, ebpfFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return &capture.Error{Code: exitUsage, Err: errors.New("daemon takes no arguments")}
			}
			size, err := parseSize(c.String("retain-size"))
			if err != nil {
				return &capture.Error{Code: exitUsage, Err: fmt.Errorf("--retain-size: %w", err)}
			}
			sd, err := ring.ParseDetail(c.String("schedule-detail"))
			if err != nil {
				return &capture.Error{Code: exitUsage, Err: fmt.Errorf("--schedule-detail: %w", err)}
			}
			cfg := daemon.Config{
				Listen: c.String("listen"), MetricsListen: c.String("metrics-listen"), BundleDir: c.String("bundle-dir"),
				RetainSize: size, RetainAge: c.Duration("retain-age"), KeepDirs: c.Bool("keep-dirs"),
				DefaultDuration: c.Duration("default-duration"), MaxDuration: c.Duration("max-duration"), MaxRunning: c.Int("max-running"),
				Every: c.Duration("every"), Window: c.Duration("window"), ScheduleDetail: sd, Scan: c.Duration("scan-interval"),
				PodsLogDir: c.String("pods-log-dir"), AnyProcess: c.Bool("any-process"), ShutdownMax: c.Duration("shutdown-timeout"),
				Allow: daemon.Allowlist{Namespaces: splitList(c.StringSlice("allow-namespace")), PodUIDs: splitList(c.StringSlice("allow-pod-uid")),
					Containers: splitList(c.StringSlice("allow-container")), Cgroups: splitList(c.StringSlice("allow-cgroup"))},
				Log: daemonLogger(c),
			}
			if tf := c.String("token-file"); tf != "" {
				if cfg.Token, err = daemon.ReadToken(tf); err != nil {
					return &capture.Error{Code: exitUsage, Err: err}
				}
			}
			if !c.Bool("no-ebpf") {
				cfg.Extra = ebpfExtra(c, daemonLogger(c), false)
			}
			d, err := daemon.New(cfg)
			if err != nil {
				code := capture.ExitSetup
				if errors.Is(err, daemon.ErrConfig) {
					code = exitUsage
				}
				return &capture.Error{Code: code, Err: err}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			if err := d.Run(ctx); err != nil {
				return &capture.Error{Code: exitError, Err: err}
			}
			return nil
		},
	}
}

func daemonLogger(c *cli.Context) *slog.Logger {
	lvl := slog.LevelInfo
	if c.Bool("verbose") {
		lvl = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.String("log-format") == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// parseSize parses 123, 500MB, 500MiB, 10GiB, 1TiB (decimal and binary units).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suf string
		mul int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suf) {
			s, mul = strings.TrimSpace(strings.TrimSuffix(s, u.suf)), u.mul
			break
		}
	}
	var n float64
	if _, err := fmt.Sscanf(s, "%g", &n); err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 500MiB, 10GiB)", s)
	}
	return int64(n * float64(mul)), nil
}

func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "daemon", Value: daemon.DefaultListen, EnvVars: []string{"PROFILEMATE_DAEMON"}, Usage: "daemon address (unix:/path, HOST:PORT or http://HOST:PORT)"},
		tokenFileFlag(),
	}
}

func newClient(c *cli.Context) (*daemon.Client, error) {
	var token string
	if tf := c.String("token-file"); tf != "" {
		b, err := os.ReadFile(tf)
		if err != nil {
			return nil, err
		}
		token = strings.TrimSpace(string(b))
	} else {
		token = os.Getenv("PROFILEMATE_TOKEN")
	}
	return daemon.NewClient(c.String("daemon"), token), nil
}

func captureCommand() *cli.Command {
	return &cli.Command{
		Name:  "capture",
		Usage: "ask the node daemon for a capture (of a pid, of pods matching a selector, or of every vLLM process)",
		Description: `Starts a capture in the daemon and prints its id. With --wait it waits for the bundle, and
with --output it also downloads it. Exit codes: 0 done; 1 the capture failed; 2 usage; 3 the
daemon refused (busy: 409, forbidden: 403, unknown pid: 404, …) or is unreachable.`,
		Flags: append(clientFlags(),
			&cli.IntFlag{Name: "pid", Aliases: []string{"p"}, Usage: "host pid of the vLLM process (its descendants are included); see `profilemate-trace captures --processes`"},
			&cli.StringFlag{Name: "namespace", Usage: "select process trees by Kubernetes namespace"},
			&cli.StringFlag{Name: "pod", Usage: "select process trees by pod name"},
			&cli.StringFlag{Name: "container", Usage: "select process trees by container id prefix"},
			&cli.BoolFlag{Name: "all", Usage: "capture every vLLM process tree on the node"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: daemon.DefaultDuration, Usage: "capture window"},
			detailFlag(),
			&cli.UintFlag{Name: "sample-every", Usage: "kernel detail for one step in N only"},
			&cli.StringFlag{Name: "label", Usage: "free text kept in the capture index"},
			&cli.BoolFlag{Name: "wait", Aliases: []string{"w"}, Usage: "wait until the bundle is written"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "with one capture: download the bundle here (implies --wait)"},
			&cli.BoolFlag{Name: "json", Usage: "print the capture index entries as JSON"},
		),
		Action: func(c *cli.Context) error {
			req := daemon.CaptureRequest{Pid: c.Int("pid"), All: c.Bool("all"), Detail: c.String("detail"),
				SampleEvery: uint32(c.Uint("sample-every")), Label: c.String("label")}
			sel := daemon.Selector{Namespace: c.String("namespace"), Pod: c.String("pod"), Container: c.String("container")}
			if sel != (daemon.Selector{}) {
				req.Selector = &sel
			}
			req.Duration, _ = json.Marshal(c.Duration("duration").String())
			cl, err := newClient(c)
			if err != nil {
				return &capture.Error{Code: exitUsage, Err: err}
			}
			caps, err := cl.Start(req)
			if err != nil {
				return clientErr(err)
			}
			wait := c.Bool("wait") || c.String("output") != ""
			if c.String("output") != "" && len(caps) != 1 {
				return &capture.Error{Code: exitUsage, Err: fmt.Errorf("--output needs exactly one capture; the selector matched %d (ids printed above)", len(caps))}
			}
			for i, cp := range caps {
				if wait {
					fmt.Fprintf(os.Stderr, "profilemate-trace: capture %s of pid %d running for %.0fs…\n", cp.ID, cp.Pid, cp.DurationSec)
					if caps[i], err = cl.Wait(context.Background(), cp.ID); err != nil {
						return clientErr(err)
					}
				}
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				enc.Encode(caps)
			} else {
				printCaptures(caps)
			}
			failed := false
			for _, cp := range caps {
				if cp.State == daemon.StateFailed {
					fmt.Fprintf(os.Stderr, "profilemate-trace: capture %s failed: %s\n", cp.ID, cp.Error)
					failed = true
				}
			}
			if out := c.String("output"); out != "" && !failed {
				n, err := cl.Download(caps[0].ID, out)
				if err != nil {
					return clientErr(err)
				}
				fmt.Fprintf(os.Stderr, "profilemate-trace: wrote %s (%d bytes); profilemate-trace export %s\n", out, n, out)
			}
			if failed {
				return &exitErr{exitError}
			}
			return nil
		},
	}
}

func clientErr(err error) error {
	var ae *daemon.APIError
	if errors.As(err, &ae) {
		return &capture.Error{Code: capture.ExitSetup, Err: fmt.Errorf("daemon: %s (HTTP %d)", ae.Msg, ae.Status)}
	}
	return &capture.Error{Code: capture.ExitSetup, Err: err}
}

func printCaptures(caps []daemon.Capture) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tPID\tPOD\tDETAIL\tWINDOW\tREQUESTED\tRECORDS\tDROPPED\tBUNDLE")
	for _, c := range caps {
		pod := c.PodName
		if c.Namespace != "" {
			pod = c.Namespace + "/" + c.PodName
		}
		if pod == "" {
			pod = "-"
		}
		b := "-"
		if c.Bundle != "" {
			b = fmt.Sprintf("%s (%s)", c.Bundle, human(c.BundleBytes))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%gs\t%s\t%d\t%d\t%s\n", c.ID, c.State, c.Pid, pod, c.Detail, c.DurationSec,
			c.Requested.Local().Format(time.DateTime), c.Records, c.Dropped, b)
	}
	tw.Flush()
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func capturesCommand() *cli.Command {
	return &cli.Command{
		Name:      "captures",
		Usage:     "list the node daemon's captures (or, with --processes, the vLLM processes it sees)",
		ArgsUsage: "[ID]",
		Flags: append(clientFlags(),
			&cli.BoolFlag{Name: "processes", Usage: "list the vLLM processes the daemon found instead"},
			&cli.StringFlag{Name: "stop", Usage: "end the running capture with this id now (its bundle is written)"},
			&cli.StringFlag{Name: "delete", Usage: "remove the finished capture with this id and its files"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "with ID: download its bundle here"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		),
		Action: func(c *cli.Context) error {
			cl, err := newClient(c)
			if err != nil {
				return &capture.Error{Code: exitUsage, Err: err}
			}
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			if id := c.String("stop"); id != "" {
				if err := cl.Stop(id); err != nil {
					return clientErr(err)
				}
				fmt.Fprintf(os.Stderr, "profilemate-trace: stopping %s; its bundle is being written\n", id)
				return nil
			}
			if id := c.String("delete"); id != "" {
				if err := cl.Delete(id); err != nil {
					return clientErr(err)
				}
				fmt.Fprintf(os.Stderr, "profilemate-trace: deleted %s\n", id)
				return nil
			}
			if c.Bool("processes") {
				ps, err := cl.Processes()
				if err != nil {
					return clientErr(err)
				}
				if c.Bool("json") {
					return enc.Encode(ps)
				}
				tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PID\tPPID\tROOT\tROLE\tCOMM\tAGENT\tHOOK\tNAMESPACE\tPOD\tCAPTURE")
				for _, p := range ps {
					fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%v\t%v\t%s\t%s\t%s\n", p.Pid, p.Ppid, p.Root, p.Role, p.Comm, p.Agent, p.Hook, dash(p.Namespace), dash(p.PodName), dash(p.Capture))
				}
				return tw.Flush()
			}
			if c.NArg() == 1 {
				cp, err := cl.Get(c.Args().First())
				if err != nil {
					return clientErr(err)
				}
				if out := c.String("output"); out != "" {
					n, err := cl.Download(cp.ID, out)
					if err != nil {
						return clientErr(err)
					}
					fmt.Fprintf(os.Stderr, "profilemate-trace: wrote %s (%d bytes)\n", out, n)
				}
				return enc.Encode(cp)
			}
			if c.NArg() > 1 {
				return &capture.Error{Code: exitUsage, Err: errors.New("captures takes at most one capture id")}
			}
			caps, err := cl.List()
			if err != nil {
				return clientErr(err)
			}
			if c.Bool("json") {
				return enc.Encode(caps)
			}
			printCaptures(caps)
			return nil
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
