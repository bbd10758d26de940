package main

import (
	"context"
	"errors"
	"io"

	"github.com/urfave/cli/v2"
)

// ebpfExtra starts eBPF launch attribution for a capture. It is wired to tracer/ once the
// tracer lands; until then attach reports eBPF attribution as unavailable.
func ebpfExtra(c *cli.Context) func(ctx context.Context, pid int, create func(string) (io.WriteCloser, error)) (func() error, error) {
	return func(ctx context.Context, pid int, create func(string) (io.WriteCloser, error)) (func() error, error) {
		return nil, errors.New("this build has no eBPF tracer")
	}
}
