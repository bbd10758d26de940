// Package inject loads the CUPTI agent and the Python hook into a running process that was started
// with neither (docs/injection.md).
package inject

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// PEP 768 (CPython 3.14's sys.remote_exec) lets a debugger ask an interpreter to run a script at
// its next safe point by writing into the target's memory: a script path and a pending flag in a
// thread state, and one bit of that thread's eval breaker. Everything the writer needs is in
// _Py_DebugOffsets at the start of _PyRuntime. docs/notes-pep768.md tells how and what it cannot do.

// ErrPEP768Unsupported is wrapped by every *VersionError: the target's CPython cannot take a PEP
// 768 request from this tracer (too old, a pre-release, or a layout this code does not know), so
// the caller should use another loader.
var ErrPEP768Unsupported = errors.New("CPython in the target does not support PEP 768 remote execution from this tracer")

// ErrRemoteDebugDisabled: the target runs CPython 3.14+ with remote debugging turned off.
var ErrRemoteDebugDisabled = errors.New("remote debugging is disabled in the target " +
	"(started with -X disable-remote-debug or PYTHON_DISABLE_REMOTE_DEBUG set); " +
	"restart it without them, or use the ptrace loader (--inject=ptrace)")

// ErrTargetGone: the target exited (or is exiting) before the request was complete.
var ErrTargetGone = errors.New("target process exited")

// ErrNotPickedUp: the request was written but no thread of the target took it in time (each
// thread only looks at its request between bytecodes; one blocked in a C call or a system call
// never does). RemoteExecWait withdraws the request before returning this.
var ErrNotPickedUp = errors.New("no thread of the target ran the script in time " +
	"(its threads are blocked outside Python bytecode, or the interpreter was built --without-remote-debug)")

// VersionError says which CPython the target runs and why PEP 768 cannot be used on it.
// errors.Is(err, ErrPEP768Unsupported) holds for every *VersionError.
type VersionError struct {
	Major, Minor int
	Hex          uint64 // PY_VERSION_HEX when known, else 0
	Reason       string
}

func (e *VersionError) Error() string {
	v := fmt.Sprintf("%d.%d", e.Major, e.Minor)
	if e.Major == 0 {
		v = "unknown version"
	}
	if e.Hex != 0 {
		v = fmt.Sprintf("%s (PY_VERSION_HEX %#x)", v, e.Hex)
	}
	return fmt.Sprintf("CPython %s: %s", v, e.Reason)
}

// Is makes errors.Is(err, ErrPEP768Unsupported) true.
func (e *VersionError) Is(target error) bool { return target == ErrPEP768Unsupported }

// pep768EvalPleaseStop is _PY_EVAL_PLEASE_STOP_BIT (Include/internal/pycore_ceval.h, 3.14): the
// eval-breaker bit whose handler also runs a pending remote-debugger script.
const pep768EvalPleaseStop = 1 << 5

// pep768OffsetsSize is sizeof(_Py_DebugOffsets) in 3.14 (95 uint64 fields).
const pep768OffsetsSize = 760

// pep768Offsets holds the fields of 3.14's _Py_DebugOffsets that the request needs: byte offsets
// in the runtime, interpreter and thread state structures, and sizes to check them against.
type pep768Offsets struct {
	Version, FreeThreaded uint64

	RuntimeSize, Finalizing, InterpretersHead uint64

	InterpSize, InterpNext, ThreadsHead, ThreadsMain, GILHolder uint64

	TStateSize, TStateNext, TStateInterp, TStateNativeTID uint64

	EvalBreaker, RemoteSupport, RemoteEnabled, PendingCall, ScriptPath, ScriptPathSize uint64
}

// Positions of the fields in 3.14's _Py_DebugOffsets (Include/internal/pycore_debug_offsets.h):
// every member is a uint64_t, grouped in sub-structs; the index is the member's ordinal.
const (
	doVersion          = 1
	doFreeThreaded     = 2
	doRuntimeSize      = 3  // runtime_state.size
	doFinalizing       = 4  // runtime_state.finalizing
	doInterpretersHead = 5  // runtime_state.interpreters_head
	doInterpSize       = 6  // interpreter_state.size
	doInterpNext       = 8  // interpreter_state.next
	doThreadsHead      = 9  // interpreter_state.threads_head
	doThreadsMain      = 10 // interpreter_state.threads_main
	doGILHolder        = 19 // interpreter_state.gil_runtime_state_holder
	doTStateSize       = 22 // thread_state.size
	doTStateNext       = 24 // thread_state.next
	doTStateInterp     = 25 // thread_state.interp
	doTStateNativeTID  = 28 // thread_state.native_thread_id
	doEvalBreaker      = 89 // debugger_support.eval_breaker
	doRemoteSupport    = 90 // debugger_support.remote_debugger_support
	doRemoteEnabled    = 91 // debugger_support.remote_debugging_enabled
	doPendingCall      = 92 // debugger_support.debugger_pending_call
	doScriptPath       = 93 // debugger_support.debugger_script_path
	doScriptPathSize   = 94 // debugger_support.debugger_script_path_size
)

// pep768ParseOffsets decodes a 3.14 _Py_DebugOffsets (b holds at least pep768OffsetsSize bytes
// read from the start of _PyRuntime) and checks that it is one this code can use: the cookie, the
// version (3.14 final releases only) and the internal consistency of the offsets it relies on.
func pep768ParseOffsets(b []byte) (pep768Offsets, error) {
	if len(b) < 16 || string(b[:8]) != "xdebugpy" {
		// No cookie: CPython before 3.13 (the caller finds out which from the binary).
		return pep768Offsets{}, &VersionError{Reason: "no _Py_DebugOffsets in _PyRuntime (CPython before 3.13); PEP 768 needs 3.14 or newer"}
	}
	le := binary.LittleEndian
	ver := le.Uint64(b[8:])
	major, minor := int(ver>>24&0xff), int(ver>>16&0xff)
	verr := func(reason string) error {
		return &VersionError{Major: major, Minor: minor, Hex: ver, Reason: reason}
	}
	switch {
	case major != 3 || minor < 14:
		return pep768Offsets{}, verr("PEP 768 remote execution needs CPython 3.14 or newer")
	case minor > 14:
		return pep768Offsets{}, verr(fmt.Sprintf("the layout of 3.%d's _Py_DebugOffsets is not known to this tracer (it reads 3.14's)", minor))
	case ver&0xf0 != 0xf0:
		return pep768Offsets{}, verr("pre-release interpreters change _Py_DebugOffsets between releases; only 3.14 final releases are supported")
	}
	if len(b) < pep768OffsetsSize {
		return pep768Offsets{}, fmt.Errorf("short _Py_DebugOffsets: %d bytes", len(b))
	}
	f := func(i int) uint64 { return le.Uint64(b[8*i:]) }
	o := pep768Offsets{
		Version: f(doVersion), FreeThreaded: f(doFreeThreaded),
		RuntimeSize: f(doRuntimeSize), Finalizing: f(doFinalizing), InterpretersHead: f(doInterpretersHead),
		InterpSize: f(doInterpSize), InterpNext: f(doInterpNext), ThreadsHead: f(doThreadsHead), ThreadsMain: f(doThreadsMain), GILHolder: f(doGILHolder),
		TStateSize: f(doTStateSize), TStateNext: f(doTStateNext), TStateInterp: f(doTStateInterp), TStateNativeTID: f(doTStateNativeTID),
		EvalBreaker: f(doEvalBreaker), RemoteSupport: f(doRemoteSupport), RemoteEnabled: f(doRemoteEnabled),
		PendingCall: f(doPendingCall), ScriptPath: f(doScriptPath), ScriptPathSize: f(doScriptPathSize),
	}
	// Every offset must land inside the structure it indexes; a miss means the struct is not the
	// 3.14 layout read above (a patched or mis-detected build): refuse rather than write blindly.
	within := func(off, width, size uint64) bool { return size > 0 && off+width <= size && off+width > off }
	checks := []struct {
		ok   bool
		what string
	}{
		{o.RuntimeSize > 0 && o.RuntimeSize < 1<<24, "runtime_state.size"},
		{o.InterpSize > 0 && o.InterpSize < 1<<24, "interpreter_state.size"},
		{o.TStateSize > 0 && o.TStateSize < 1<<20, "thread_state.size"},
		{within(o.Finalizing, 8, o.RuntimeSize), "runtime_state.finalizing"},
		{within(o.InterpretersHead, 8, o.RuntimeSize), "runtime_state.interpreters_head"},
		{within(o.InterpNext, 8, o.InterpSize), "interpreter_state.next"},
		{within(o.ThreadsHead, 8, o.InterpSize), "interpreter_state.threads_head"},
		{within(o.ThreadsMain, 8, o.InterpSize), "interpreter_state.threads_main"},
		{within(o.GILHolder, 8, o.InterpSize), "interpreter_state.gil_runtime_state_holder"},
		{within(o.RemoteEnabled, 4, o.InterpSize), "debugger_support.remote_debugging_enabled"},
		{within(o.TStateNext, 8, o.TStateSize), "thread_state.next"},
		{within(o.TStateInterp, 8, o.TStateSize), "thread_state.interp"},
		{within(o.TStateNativeTID, 8, o.TStateSize), "thread_state.native_thread_id"},
		{within(o.EvalBreaker, 8, o.TStateSize), "debugger_support.eval_breaker"},
		{o.ScriptPathSize >= 64 && o.ScriptPathSize <= 1<<16, "debugger_support.debugger_script_path_size"},
		{within(o.RemoteSupport+o.PendingCall, 4, o.TStateSize), "debugger_support.debugger_pending_call"},
		{within(o.RemoteSupport+o.ScriptPath, o.ScriptPathSize, o.TStateSize), "debugger_support.debugger_script_path"},
	}
	for _, c := range checks {
		if !c.ok {
			return pep768Offsets{}, verr(fmt.Sprintf("_Py_DebugOffsets field %s is out of range; not the 3.14 layout this tracer reads", c.what))
		}
	}
	return o, nil
}

// pep768CheckScriptPath validates the script path against the target's buffer: absolute (the
// target resolves it in its own working directory otherwise), no NUL, and with its terminating
// NUL no longer than the buffer.
func pep768CheckScriptPath(path string, size uint64) error {
	if path == "" || path[0] != '/' {
		return fmt.Errorf("script path %q must be absolute (the target opens it relative to its own working directory)", path)
	}
	for i := 0; i < len(path); i++ {
		if path[i] == 0 {
			return fmt.Errorf("script path %q contains a NUL byte", path)
		}
	}
	if uint64(len(path))+1 > size {
		return fmt.Errorf("script path is %d bytes; the target's buffer holds %d including the terminating NUL: stage the script under a shorter directory", len(path), size)
	}
	return nil
}
