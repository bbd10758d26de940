//go:build !linux

package inject

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// Inject needs Linux (/proc, ptrace, mount namespaces).
func Inject(ctx context.Context, pid int, opts Options) (*Injection, error) {
	if opts.Method == MethodNever || opts.Method == "" {
		return &Injection{Requested: opts.Method}, nil
	}
	return nil, fmt.Errorf("injection on %s: %w", runtime.GOOS, ErrNotSupported)
}

// Detach has nothing to undo off Linux.
func (inj *Injection) Detach(wait time.Duration) error { return nil }

// Staging is Linux-only.
type Staging struct{}

// ReadLog is empty off Linux.
func (s *Staging) ReadLog(max int) string { return "" }

// FirstEnableStall is unknown off Linux.
func FirstEnableStall(pid int) (time.Duration, bool) { return 0, false }
