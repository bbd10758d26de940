package inject

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/profilemate/profilemate-trace/internal/pyproc"
)

// RemoteExec asks the CPython 3.14+ interpreter in pid to run the Python file scriptPath (a path
// as the target sees it) at its next safe point, as sys.remote_exec(pid, scriptPath) does: it
// writes the path and the pending flag into the main thread's state (or, without one, the thread
// that last held the GIL) and sets that thread's eval-breaker bit. It returns once the request is
// written; the script runs later on that thread, when it next executes bytecode. Use
// RemoteExecWait to know that it was taken.
//
// Errors: a *VersionError (errors.Is ErrPEP768Unsupported) for an interpreter this cannot serve,
// ErrRemoteDebugDisabled, ErrTargetGone, pyproc.ErrNotPython, pyproc.ErrNoProcess, or one that
// says what failed and what to do.
func RemoteExec(pid int, scriptPath string) error {
	t, err := pep768Open(pid)
	if err != nil {
		return err
	}
	ts, err := t.mainOrHolder()
	if err != nil {
		return err
	}
	return t.request(ts, scriptPath)
}

// pep768MainGrace is how long RemoteExecWait leaves a request on the main thread before moving it
// to the thread holding the GIL: a main thread parked in a C call (join, a lock, a blocking read)
// never reaches a safe point, while one that sleeps in short steps takes it within one step.
var pep768MainGrace = 500 * time.Millisecond

// pep768Poll is RemoteExecWait's polling interval.
const pep768Poll = 2 * time.Millisecond

// RemoteExecWait is RemoteExec that waits, until ctx is done, for a thread of the target to take
// the request (the interpreter clears the pending flag just before it runs the script, so a nil
// return means the script has started, not that it finished or succeeded). A request the main
// thread has not taken after half a second moves to the thread holding the GIL. When ctx ends
// first, the request is withdrawn and the error wraps ErrNotPickedUp and ctx.Err().
//
// Moving or withdrawing a request races with the target taking it in the same microsecond, so in
// rare cases the script runs on both threads, or runs although ErrNotPickedUp is returned: the
// script must be idempotent (the injection script is: pm_inject_start and late.start are).
func RemoteExecWait(ctx context.Context, pid int, scriptPath string) error {
	t, err := pep768Open(pid)
	if err != nil {
		return err
	}
	ts, err := t.mainOrHolder()
	if err != nil {
		return err
	}
	if err := t.request(ts, scriptPath); err != nil {
		return err
	}
	main, _ := t.readPtr(t.interp + t.off.ThreadsMain)
	since := time.Now()
	tick := time.NewTicker(pep768Poll)
	defer tick.Stop()
	for {
		pending, err := t.pending(ts)
		if err != nil {
			return err
		}
		if pending == 0 {
			return nil
		}
		if ts == main && time.Since(since) >= pep768MainGrace {
			if h, err := t.gilHolder(); err == nil && h != 0 && h != ts {
				taken, err := t.withdraw(ts)
				if err != nil {
					return err
				}
				if taken {
					return nil
				}
				t.hook("retarget")
				if err := t.request(h, scriptPath); err != nil {
					return err
				}
				ts = h
			}
		}
		select {
		case <-ctx.Done():
			taken, err := t.withdraw(ts)
			if err != nil {
				return err
			}
			if taken {
				return nil
			}
			return fmt.Errorf("pid %d: %w: %w", pid, ErrNotPickedUp, ctx.Err())
		case <-tick.C:
		}
	}
}

// PythonVersion returns the major and minor version of the CPython in pid: from _Py_DebugOffsets
// (3.13+), else the Py_Version constant (3.11+), else the file name of the executable or library
// that holds _PyRuntime (3.10 and older).
func PythonVersion(pid int) (major, minor int, err error) {
	loc, err := pep768Locate(pid)
	if err != nil {
		return 0, 0, err
	}
	head := make([]byte, 16)
	if err := pep768Read(pid, loc.runtime, head); err != nil {
		return 0, 0, pep768MemErr(pid, "reading _PyRuntime", err)
	}
	if string(head[:8]) == "xdebugpy" {
		v := binary.LittleEndian.Uint64(head[8:])
		return int(v >> 24 & 0xff), int(v >> 16 & 0xff), nil
	}
	if loc.pyVersion != 0 {
		b := make([]byte, 4)
		if err := pep768Read(pid, loc.pyVersion, b); err != nil {
			return 0, 0, pep768MemErr(pid, "reading Py_Version", err)
		}
		v := binary.LittleEndian.Uint32(b)
		return int(v >> 24 & 0xff), int(v >> 16 & 0xff), nil
	}
	if m := pep768NameRe.FindStringSubmatch(filepath.Base(loc.path)); m != nil {
		major, _ = strconv.Atoi(m[1])
		minor, _ = strconv.Atoi(m[2])
		return major, minor, nil
	}
	return 0, 0, fmt.Errorf("pid %d: cannot tell the CPython version of %s (no _Py_DebugOffsets, no Py_Version, no version in its name)", pid, loc.path)
}

var pep768NameRe = regexp.MustCompile(`python(\d)\.(\d+)`)

// pep768Location is where _PyRuntime lives in the target.
type pep768Location struct {
	path      string // executable or libpython, as the target sees it
	runtime   uint64 // address of _PyRuntime
	pyVersion uint64 // address of Py_Version, 0 if absent
}

// pep768Locate finds _PyRuntime: the .PyRuntime section (3.13+ put _PyRuntime there for
// debuggers), else the _PyRuntime symbol, in the mapped libpython or the executable.
func pep768Locate(pid int) (pep768Location, error) {
	if err := pep768Alive(pid); err != nil {
		return pep768Location{}, err
	}
	maps, err := pyproc.ReadMaps(pid)
	if err != nil {
		return pep768Location{}, err
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	exe = strings.TrimSuffix(exe, " (deleted)")
	// Candidates: libpython (a shared build's executable has no runtime of its own), the
	// executable, then other files named like python (a renamed copy of libpython), never
	// extension modules (*.cpython-3xx-*.so: a vLLM process maps hundreds).
	var cands []pyproc.Mapping
	seen := map[string]bool{}
	add := func(keep func(pyproc.Mapping) bool) {
		for _, m := range maps {
			if m.Path == "" || m.Offset != 0 || seen[m.Path] || !keep(m) {
				continue
			}
			seen[m.Path] = true
			cands = append(cands, m)
		}
	}
	add(func(m pyproc.Mapping) bool { return strings.Contains(filepath.Base(m.Path), "libpython") })
	add(func(m pyproc.Mapping) bool { return strings.TrimSuffix(m.Path, " (deleted)") == exe })
	add(func(m pyproc.Mapping) bool {
		b := filepath.Base(m.Path)
		return strings.Contains(b, "python") && !strings.Contains(b, ".cpython-")
	})
	if len(maps) == 0 {
		// A zombie has no mappings left.
		return pep768Location{}, fmt.Errorf("pid %d: %w", pid, ErrTargetGone)
	}
	var errs []error
	for _, m := range cands {
		loc, err := pep768Inspect(pid, m)
		if err == nil {
			return loc, nil
		}
		errs = append(errs, err)
	}
	if err := pep768Alive(pid); err != nil {
		return pep768Location{}, err
	}
	return pep768Location{}, fmt.Errorf("pid %d: %w (looked in %d mapped files): %w", pid, pyproc.ErrNotPython, len(cands), errors.Join(errs...))
}

// pep768Inspect opens one mapped file (through /proc/PID/map_files, which works across mount
// namespaces and for deleted files, else /proc/PID/root) and finds _PyRuntime in it.
func pep768Inspect(pid int, m pyproc.Mapping) (pep768Location, error) {
	f, err := elf.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End))
	if err != nil {
		f, err = elf.Open(pyproc.HostPath(pid, strings.TrimSuffix(m.Path, " (deleted)")))
		if err != nil {
			return pep768Location{}, fmt.Errorf("opening %s: %w", m.Path, err)
		}
	}
	defer f.Close()
	var bias uint64
	if f.Type != elf.ET_EXEC {
		var first *elf.Prog
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD {
				first = p
				break
			}
		}
		if first == nil {
			return pep768Location{}, fmt.Errorf("%s: no PT_LOAD segment", m.Path)
		}
		bias = m.Start - (first.Vaddr &^ 0xfff)
	}
	loc := pep768Location{path: m.Path}
	if s := f.Section(".PyRuntime"); s != nil && s.Addr != 0 {
		loc.runtime = bias + s.Addr
	}
	look := func(syms []elf.Symbol) {
		for _, s := range syms {
			if s.Value == 0 || s.Section == elf.SHN_UNDEF {
				continue
			}
			switch s.Name {
			case "_PyRuntime":
				if loc.runtime == 0 {
					loc.runtime = bias + s.Value
				}
			case "Py_Version":
				loc.pyVersion = bias + s.Value
			}
		}
	}
	if ds, err := f.DynamicSymbols(); err == nil {
		look(ds)
	}
	if loc.runtime == 0 || loc.pyVersion == 0 {
		if ss, err := f.Symbols(); err == nil {
			look(ss)
		}
	}
	if loc.runtime == 0 {
		return pep768Location{}, fmt.Errorf("%s: no .PyRuntime section and no _PyRuntime symbol", m.Path)
	}
	return loc, nil
}

// pep768Target is an opened target: where its runtime is, its offsets, its main interpreter.
type pep768Target struct {
	pid    int
	loc    pep768Location
	off    pep768Offsets
	interp uint64
}

// pep768StepHook, when set (tests), is called between the steps of a request with the step's name.
var pep768StepHook func(step string)

func (t *pep768Target) hook(step string) {
	if pep768StepHook != nil {
		pep768StepHook(step)
	}
}

// pep768Open reads the target's _Py_DebugOffsets, checks the version and that remote debugging is
// enabled, and finds the main interpreter.
func pep768Open(pid int) (*pep768Target, error) {
	loc, err := pep768Locate(pid)
	if err != nil {
		return nil, err
	}
	t := &pep768Target{pid: pid, loc: loc}
	t.hook("located")
	b := make([]byte, pep768OffsetsSize)
	if err := pep768Read(pid, loc.runtime, b); err != nil {
		return nil, pep768MemErr(pid, "reading _Py_DebugOffsets", err)
	}
	off, err := pep768ParseOffsets(b)
	if err != nil {
		var ve *VersionError
		if errors.As(err, &ve) && ve.Major == 0 {
			// No cookie: name the version from Py_Version or the file name.
			if major, minor, verr := PythonVersion(pid); verr == nil {
				ve.Major, ve.Minor = major, minor
			}
		}
		return nil, fmt.Errorf("pid %d (%s): %w", pid, loc.path, err)
	}
	t.off = off
	t.hook("offsets")
	if fin, err := t.readPtr(loc.runtime + off.Finalizing); err != nil {
		return nil, err
	} else if fin != 0 {
		return nil, fmt.Errorf("pid %d: the interpreter is finalizing (exiting): %w", pid, ErrTargetGone)
	}
	interp, err := t.readPtr(loc.runtime + off.InterpretersHead)
	if err != nil {
		return nil, err
	}
	if interp == 0 {
		return nil, fmt.Errorf("pid %d: no interpreter in _PyRuntime yet (starting up or shutting down); retry in a moment", pid)
	}
	// The interpreters list is newest first; the main interpreter is the last one.
	for i := 0; i < 1024; i++ {
		next, err := t.readPtr(interp + off.InterpNext)
		if err != nil {
			return nil, err
		}
		if next == 0 {
			break
		}
		interp = next
	}
	t.interp = interp
	enabled := make([]byte, 4)
	if err := pep768Read(pid, interp+off.RemoteEnabled, enabled); err != nil {
		return nil, pep768MemErr(pid, "reading config.remote_debug", err)
	}
	if v := int32(binary.LittleEndian.Uint32(enabled)); v != 1 {
		return nil, fmt.Errorf("pid %d (CPython %d.%d, config.remote_debug=%d): %w", pid, off.Version>>24&0xff, off.Version>>16&0xff, v, ErrRemoteDebugDisabled)
	}
	return t, nil
}

// mainOrHolder picks the thread state for the request: the main thread's, else the one that last
// held the GIL, else the first in the list. It checks that the state belongs to the interpreter.
func (t *pep768Target) mainOrHolder() (uint64, error) {
	for _, pick := range []func() (uint64, error){
		func() (uint64, error) { return t.readPtr(t.interp + t.off.ThreadsMain) },
		t.gilHolder,
		func() (uint64, error) { return t.readPtr(t.interp + t.off.ThreadsHead) },
	} {
		ts, err := pick()
		if err != nil {
			return 0, err
		}
		if ts != 0 {
			if ok, err := t.owned(ts); err != nil {
				return 0, err
			} else if ok {
				return ts, nil
			}
		}
	}
	return 0, fmt.Errorf("pid %d: the main interpreter has no thread state that could run the script", t.pid)
}

// gilHolder returns the thread state that last held the main interpreter's GIL, 0 if none or if
// it is not (any more) one of this interpreter's threads.
func (t *pep768Target) gilHolder() (uint64, error) {
	h, err := t.readPtr(t.interp + t.off.GILHolder)
	if err != nil || h == 0 {
		return 0, err
	}
	// last_holder may point at a thread state that was freed since: accept it only if it is on
	// the interpreter's list.
	ts, err := t.readPtr(t.interp + t.off.ThreadsHead)
	for i := 0; err == nil && ts != 0 && i < 1<<16; i++ {
		if ts == h {
			return h, nil
		}
		ts, err = t.readPtr(ts + t.off.TStateNext)
	}
	return 0, err
}

// owned says whether ts's interp field points at the main interpreter (a torn read or a wrong
// layout gives something else).
func (t *pep768Target) owned(ts uint64) (bool, error) {
	ip, err := t.readPtr(ts + t.off.TStateInterp)
	return ip == t.interp, err
}

// request writes the script path and the pending flag into ts's remote-debugger support and sets
// ts's eval-breaker bit, in that order (the target reads the path only after it sees the flag).
func (t *pep768Target) request(ts uint64, scriptPath string) error {
	if err := pep768CheckScriptPath(scriptPath, t.off.ScriptPathSize); err != nil {
		return err
	}
	if _, err := os.Stat(pyproc.HostPath(t.pid, scriptPath)); err != nil {
		return fmt.Errorf("script %s is not visible to pid %d (through /proc/%d/root): %w", scriptPath, t.pid, t.pid, err)
	}
	base := ts + t.off.RemoteSupport
	path := append([]byte(scriptPath), 0)
	if err := pep768Write(t.pid, base+t.off.ScriptPath, path); err != nil {
		return pep768MemErr(t.pid, "writing debugger_script_path", err)
	}
	t.hook("path")
	one := []byte{1, 0, 0, 0}
	if err := pep768Write(t.pid, base+t.off.PendingCall, one); err != nil {
		return pep768MemErr(t.pid, "writing debugger_pending_call", err)
	}
	t.hook("pending")
	// The event bits are the low byte of eval_breaker; the bytes above hold the instrumentation
	// version. Reading and writing only the low byte keeps this unlocked read-modify-write from
	// ever clobbering the version; a bit the target sets or clears in between can be lost or
	// replayed, which its handlers tolerate (CPython's own sender writes the whole word).
	eb := make([]byte, 1)
	if err := pep768Read(t.pid, ts+t.off.EvalBreaker, eb); err != nil {
		return pep768MemErr(t.pid, "reading eval_breaker", err)
	}
	eb[0] |= pep768EvalPleaseStop
	if err := pep768Write(t.pid, ts+t.off.EvalBreaker, eb); err != nil {
		return pep768MemErr(t.pid, "writing eval_breaker", err)
	}
	t.hook("breaker")
	return nil
}

// pending reads ts's debugger_pending_call.
func (t *pep768Target) pending(ts uint64) (int32, error) {
	b := make([]byte, 4)
	if err := pep768Read(t.pid, ts+t.off.RemoteSupport+t.off.PendingCall, b); err != nil {
		return 0, pep768MemErr(t.pid, "reading debugger_pending_call", err)
	}
	return int32(binary.LittleEndian.Uint32(b)), nil
}

// withdraw clears a pending request on ts; taken reports that the target had already taken it.
func (t *pep768Target) withdraw(ts uint64) (taken bool, err error) {
	p, err := t.pending(ts)
	if err != nil || p == 0 {
		return err == nil, err
	}
	if err := pep768Write(t.pid, ts+t.off.RemoteSupport+t.off.PendingCall, []byte{0, 0, 0, 0}); err != nil {
		return false, pep768MemErr(t.pid, "clearing debugger_pending_call", err)
	}
	return false, nil
}

func (t *pep768Target) readPtr(addr uint64) (uint64, error) {
	b := make([]byte, 8)
	if err := pep768Read(t.pid, addr, b); err != nil {
		return 0, pep768MemErr(t.pid, fmt.Sprintf("reading %#x", addr), err)
	}
	return binary.LittleEndian.Uint64(b), nil
}

// pep768Read and pep768Write copy between this process and the target with process_vm_readv /
// process_vm_writev (no ptrace stop; the caller needs PTRACE_MODE_ATTACH rights on the target).
func pep768Read(pid int, addr uint64, b []byte) error {
	return pep768Copy(pid, addr, b, false)
}

func pep768Write(pid int, addr uint64, b []byte) error {
	return pep768Copy(pid, addr, b, true)
}

func pep768Copy(pid int, addr uint64, b []byte, write bool) error {
	for done := 0; done < len(b); {
		local := []unix.Iovec{{Base: (*byte)(unsafe.Pointer(&b[done]))}}
		local[0].SetLen(len(b) - done)
		remote := []unix.RemoteIovec{{Base: uintptr(addr) + uintptr(done), Len: len(b) - done}}
		var n int
		var err error
		if write {
			n, err = unix.ProcessVMWritev(pid, local, remote, 0)
		} else {
			n, err = unix.ProcessVMReadv(pid, local, remote, 0)
		}
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return syscall.EFAULT
		}
		done += n
	}
	return nil
}

// pep768MemErr turns a failed memory access into an error that says what to do: the target
// exited (ErrTargetGone), no permission, or an address that is not mapped.
func pep768MemErr(pid int, what string, err error) error {
	if errors.Is(err, syscall.ESRCH) || pep768Alive(pid) != nil {
		return fmt.Errorf("pid %d: %s: %w", pid, what, ErrTargetGone)
	}
	switch {
	case errors.Is(err, syscall.EPERM):
		return fmt.Errorf("pid %d: %s: %w (needs root or CAP_SYS_PTRACE, or the same uid with kernel.yama.ptrace_scope=0)", pid, what, err)
	case errors.Is(err, syscall.EFAULT):
		return fmt.Errorf("pid %d: %s: address not mapped (the interpreter is exiting, or its layout is not the one this tracer reads): %w", pid, what, err)
	}
	return fmt.Errorf("pid %d: %s: %w", pid, what, err)
}

// pep768Alive returns ErrTargetGone for an exited (zombie or dead) process, pyproc.ErrNoProcess
// for a pid that does not exist.
func pep768Alive(pid int) error {
	st, err := readStatState(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pid %d: %w", pid, pyproc.ErrNoProcess)
		}
		return nil
	}
	switch st {
	case 'Z', 'X', 'x':
		return fmt.Errorf("pid %d: %w", pid, ErrTargetGone)
	}
	return nil
}
