package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/profilemate/profilemate-trace/export"
	"github.com/profilemate/profilemate-trace/internal/capture"
)

// kernelClassesFlag overrides the kernel classification rules (attention/ffn/moe/…).
func kernelClassesFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "kernel-classes", EnvVars: []string{export.KernelRulesEnv},
		Usage: "file of kernel classification rules tried before the built-in ones: one 'CATEGORY REGEXP' per line, # comments"}
}

// loadSession reads a bundle or session directory and applies --kernel-classes.
func loadSession(c *cli.Context, src string) (*export.Session, error) {
	s, err := export.Load(src)
	if err != nil {
		return nil, err
	}
	if p := c.String("kernel-classes"); p != "" {
		rules, err := export.LoadKernelRules(p)
		if err != nil {
			return nil, &capture.Error{Code: exitUsage, Err: err}
		}
		if err := s.SetKernelRules(rules); err != nil {
			return nil, &capture.Error{Code: exitUsage, Err: err}
		}
	}
	return s, nil
}

// sessionBase is the session name of a bundle path or session directory.
func sessionBase(src string) string {
	base := filepath.Base(filepath.Clean(src))
	return strings.TrimSuffix(base, export.BundleSuffix)
}

func warn(s *export.Session) {
	for _, w := range s.Warnings {
		fmt.Fprintln(os.Stderr, "profilemate-trace: warning:", w)
	}
}

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:      "report",
		Usage:     "write one self-contained HTML report of a bundle or session directory",
		ArgsUsage: "BUNDLE|SESSION_DIR",
		Description: `Writes a single HTML file (inline SVG and CSS, nothing fetched when viewed) with the
prefill/decode breakdown, attention/FFN/MoE/communication GPU time, CUDA-graph coverage and hot
graphs, KV cache usage over time, expert heatmaps and imbalance, CPU overhead, batch
utilization, preemptions, top kernels, and recommendations from the ProfileMate health ranges.
Sections without data say what is missing and how to capture it.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output file (default: SESSION.report.html in the current directory)"},
			kernelClassesFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				cli.ShowSubcommandHelp(c)
				return &capture.Error{Code: exitUsage, Err: errors.New("report takes one bundle or session directory")}
			}
			src := c.Args().First()
			out := c.String("output")
			if out == "" {
				out = sessionBase(src) + ".report.html"
			}
			s, err := loadSession(c, src)
			if err != nil {
				return err
			}
			if err := export.WriteReportFile(s, out); err != nil {
				return err
			}
			warn(s)
			fmt.Fprintf(os.Stderr, "profilemate-trace: wrote %s\n", out)
			return nil
		},
	}
}

// exportPerfetto writes the Perfetto/Chrome JSON trace of src to out.
func exportPerfetto(c *cli.Context, src, out string) error {
	if out == "" {
		out = sessionBase(src) + ".perfetto.json"
	}
	s, err := loadSession(c, src)
	if err != nil {
		return err
	}
	if err := export.WritePerfettoFile(s, out); err != nil {
		return err
	}
	warn(s)
	fmt.Fprintf(os.Stderr, "profilemate-trace: wrote %s (open it in https://ui.perfetto.dev)\n", out)
	return nil
}
