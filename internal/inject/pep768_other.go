//go:build !linux

package inject

import (
	"context"
	"errors"
)

var errPEP768NotLinux = errors.New("PEP 768 remote execution is implemented for Linux targets only")

// RemoteExec is implemented on Linux only.
func RemoteExec(pid int, scriptPath string) error { return errPEP768NotLinux }

// RemoteExecWait is implemented on Linux only.
func RemoteExecWait(ctx context.Context, pid int, scriptPath string) error { return errPEP768NotLinux }

// PythonVersion is implemented on Linux only.
func PythonVersion(pid int) (major, minor int, err error) { return 0, 0, errPEP768NotLinux }
