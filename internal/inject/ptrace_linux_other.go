//go:build linux && !amd64

package inject

import (
	"context"
	"fmt"
	"runtime"
)

// ptraceLoad is implemented for x86-64 only: the call frame, registers and system-call restart
// rules are per architecture.
func ptraceLoad(ctx context.Context, req loadRequest) (*LoadResult, error) {
	return nil, fmt.Errorf("ptrace injection supports x86-64 only (this is %s): %w", runtime.GOARCH, ErrNotSupported)
}
