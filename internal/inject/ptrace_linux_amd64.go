//go:build linux && amd64

package inject

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The remote-call engine. One thread of the target, parked in a blocking system call, is
// seized (PTRACE_SEIZE on that thread only: the others keep running) and interrupted; its
// registers and extended FPU state are saved; each call builds a frame below the red zone with
// return address 0, sets orig_rax to -1 (so the interrupted system call is not restarted into
// the call), and continues the thread until the return faults at address 0. At the end the
// saved state is put back and the thread detached: the kernel then restarts its system call
// (or returns EINTR where the call does so after any stop, as with a debugger's attach).
//
// Every ptrace request comes from one OS thread (the tracer is a thread, not a process). On any
// failure before a call is in flight, that thread is left to exit without UnlockOSThread: the
// kernel then detaches the tracee and clears a pending interrupt, whatever state we were in.

const (
	redZone     = 128
	minStack    = 256 << 10 // stack the thread must have left below its stack pointer (dlopen, constructors)
	xstateMax   = 16 << 10  // NT_X86_XSTATE is at most ~11 KiB with AMX
	ntX86XState = 0x202

	// -ERESTART* and -EINTR: rax of a thread stopped on its way out of an interrupted system call.
	eRestartSys    = 512
	eRestartNoIntr = 513
	eRestartNoHand = 514
	eRestartBlock  = 516
)

// remoteThread is one seized thread with its saved state.
type remoteThread struct {
	pid, tid int
	nr       int // the system call it was parked in
	regs     unix.PtraceRegs
	xstate   []byte // NT_X86_XSTATE, or nil when saved with GETFPREGS into fpregs
	fpregs   [512]byte
	scratch  uint64 // lowest address below the red zone we may use for data (grows down)
	stopped  time.Time
	inCall   bool
	warn     func(string)
}

var errExited = errors.New("target exited")

// errWoke: the chosen thread left its system call between our look and its stop; it was
// released untouched and another may be tried. Every other failure of seize is final for the
// injection, since the thread may still be attached to this OS thread (which then exits, and
// the kernel detaches it).
var errWoke = errors.New("thread woke up")

// waitStop waits for tid to stop, up to d (0 = no limit except the target's exit). It polls with
// WNOHANG so that it is bounded and notices a target that went away.
func waitStop(pid, tid int, d time.Duration, onSlow func(time.Duration)) (unix.WaitStatus, error) {
	start := time.Now()
	sleep := 50 * time.Microsecond
	nextWarn := 5 * time.Second
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(tid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if err == unix.ECHILD {
				return 0, fmt.Errorf("thread %d of pid %d: %w", tid, pid, errExited)
			}
			return 0, fmt.Errorf("waiting for thread %d: %w", tid, err)
		}
		if wpid == tid {
			if ws.Exited() || ws.Signaled() {
				return ws, fmt.Errorf("thread %d of pid %d: %w", tid, pid, errExited)
			}
			return ws, nil
		}
		// A thread that is a zombie (its process exiting) never stops again.
		if threadGone(pid, tid) {
			return 0, fmt.Errorf("thread %d of pid %d: %w", tid, pid, errExited)
		}
		el := time.Since(start)
		if d > 0 && el > d {
			return 0, fmt.Errorf("thread %d did not stop within %v", tid, d)
		}
		if onSlow != nil && el > nextWarn {
			onSlow(el)
			nextWarn += 5 * time.Second
		}
		time.Sleep(sleep)
		if sleep < 5*time.Millisecond {
			sleep *= 2
		}
	}
}

// seize attaches to one thread and stops it. It returns an error (and leaves the thread
// running, detached) when the thread is not stopped inside its expected system call.
func seize(c candidate, pid int, stopWait time.Duration) (*remoteThread, error) {
	if err := unix.PtraceSeize(c.tid); err != nil {
		if err == unix.EPERM {
			return nil, fmt.Errorf("PTRACE_SEIZE thread %d of pid %d: %w (needs root or CAP_SYS_PTRACE; with Yama ptrace_scope 1 or 2, CAP_SYS_PTRACE; scope 3 forbids it)", c.tid, pid, err)
		}
		return nil, fmt.Errorf("PTRACE_SEIZE thread %d of pid %d: %w", c.tid, pid, err)
	}
	if err := unix.PtraceInterrupt(c.tid); err != nil {
		return nil, fmt.Errorf("PTRACE_INTERRUPT thread %d: %w", c.tid, err)
	}
	for {
		ws, err := waitStop(pid, c.tid, stopWait, nil)
		if err != nil {
			return nil, err
		}
		if ws.Stopped() && ws.StopSignal() != unix.SIGTRAP && ws.TrapCause() != unix.PTRACE_EVENT_STOP {
			// A signal arrived first: let the thread take it and wait for our interrupt.
			if err := unix.PtraceCont(c.tid, int(ws.StopSignal())); err != nil {
				return nil, fmt.Errorf("passing signal %v to thread %d: %w", ws.StopSignal(), c.tid, err)
			}
			continue
		}
		break
	}
	t := &remoteThread{pid: pid, tid: c.tid, nr: c.nr, stopped: time.Now()}
	if err := unix.PtraceGetRegs(c.tid, &t.regs); err != nil {
		unix.PtraceDetach(c.tid)
		return nil, fmt.Errorf("PTRACE_GETREGS thread %d: %w", c.tid, err)
	}
	rax := -int64(t.regs.Rax)
	inSyscall := int64(t.regs.Orig_rax) == int64(c.nr) &&
		(rax == eRestartSys || rax == eRestartNoIntr || rax == eRestartNoHand || rax == eRestartBlock || rax == int64(unix.EINTR))
	if !inSyscall {
		unix.PtraceDetach(c.tid)
		return nil, fmt.Errorf("thread %d left %s before it stopped (orig_rax %d, rax %d): %w", c.tid, syscallName(c.nr), int64(t.regs.Orig_rax), int64(t.regs.Rax), errWoke)
	}
	if err := t.saveXState(); err != nil {
		unix.PtraceDetach(c.tid)
		return nil, err
	}
	t.scratch = (t.regs.Rsp - redZone) &^ 15
	return t, nil
}

func (t *remoteThread) saveXState() error {
	buf := make([]byte, xstateMax)
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(t.tid), ntX86XState, uintptr(unsafe.Pointer(&iov)), 0, 0); e == 0 {
		t.xstate = buf[:iov.Len]
		return nil
	}
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETFPREGS, uintptr(t.tid), 0, uintptr(unsafe.Pointer(&t.fpregs[0])), 0, 0); e != 0 {
		return fmt.Errorf("saving the FPU state of thread %d: %w", t.tid, e)
	}
	return nil
}

func (t *remoteThread) restoreXState() error {
	if t.xstate != nil {
		iov := unix.Iovec{Base: &t.xstate[0]}
		iov.SetLen(len(t.xstate))
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETREGSET, uintptr(t.tid), ntX86XState, uintptr(unsafe.Pointer(&iov)), 0, 0); e != 0 {
			return fmt.Errorf("restoring the extended FPU state of thread %d: %w", t.tid, e)
		}
		return nil
	}
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETFPREGS, uintptr(t.tid), 0, uintptr(unsafe.Pointer(&t.fpregs[0])), 0, 0); e != 0 {
		return fmt.Errorf("restoring the FPU state of thread %d: %w", t.tid, e)
	}
	return nil
}

// pushString writes s NUL-terminated below the red zone and returns its address.
func (t *remoteThread) pushString(s string) (uint64, error) {
	b := append([]byte(s), 0)
	t.scratch = (t.scratch - uint64(len(b))) &^ 15
	if _, err := unix.PtracePokeData(t.tid, uintptr(t.scratch), b); err != nil {
		return 0, fmt.Errorf("writing to the stack of thread %d: %w", t.tid, err)
	}
	return t.scratch, nil
}

// readString reads a NUL-terminated string of at most max bytes.
func (t *remoteThread) readString(addr uint64, max int) (string, error) {
	var out []byte
	buf := make([]byte, 8)
	for len(out) < max {
		if _, err := unix.PtracePeekData(t.tid, uintptr(addr)+uintptr(len(out)), buf); err != nil {
			return "", err
		}
		for _, c := range buf {
			if c == 0 {
				return string(out), nil
			}
			out = append(out, c)
		}
	}
	return string(out), nil
}

// call runs fn(args…) on the thread and returns rax. It returns only when the function returned,
// the target died, or the function crashed (then the target gets its SIGSEGV as it would have
// without us): a thread is never taken back in the middle of a call, since a dynamic loader
// left with its lock held would hang the whole process at its next dlopen.
func (t *remoteThread) call(ctx context.Context, fn uint64, args ...uint64) (uint64, error) {
	if len(args) > 6 {
		return 0, errors.New("at most 6 arguments")
	}
	regs := t.regs
	sp := t.scratch &^ 15
	sp -= 8 // the return address: at function entry rsp+8 is 16-byte aligned
	if _, err := unix.PtracePokeData(t.tid, uintptr(sp), make([]byte, 8)); err != nil {
		return 0, fmt.Errorf("writing the call frame: %w", err)
	}
	regs.Rsp = sp
	regs.Rip = fn
	regs.Rax = 0
	regs.Orig_rax = ^uint64(0) // not in a system call: no restart into our function
	dst := []*uint64{&regs.Rdi, &regs.Rsi, &regs.Rdx, &regs.Rcx, &regs.R8, &regs.R9}
	for i, a := range args {
		*dst[i] = a
	}
	if err := unix.PtraceSetRegs(t.tid, &regs); err != nil {
		return 0, fmt.Errorf("PTRACE_SETREGS: %w", err)
	}
	if err := unix.PtraceCont(t.tid, 0); err != nil {
		return 0, fmt.Errorf("PTRACE_CONT: %w", err)
	}
	t.inCall = true
	for {
		ws, err := waitStop(t.pid, t.tid, 0, func(el time.Duration) {
			if t.warn != nil {
				t.warn(fmt.Sprintf("the call on thread %d of pid %d has run %v; waiting for it to return (taking the thread back mid-call would corrupt the dynamic loader)", t.tid, t.pid, el.Round(time.Second)))
			}
		})
		if err != nil {
			t.inCall = false
			return 0, err
		}
		if ws.TrapCause() == unix.PTRACE_EVENT_STOP {
			// A group stop (SIGSTOP to the process) or a late interrupt: keep going.
			if err := unix.PtraceCont(t.tid, 0); err != nil {
				return 0, fmt.Errorf("PTRACE_CONT: %w", err)
			}
			continue
		}
		sig := ws.StopSignal()
		if sig == unix.SIGSEGV {
			var r unix.PtraceRegs
			if err := unix.PtraceGetRegs(t.tid, &r); err != nil {
				return 0, fmt.Errorf("PTRACE_GETREGS: %w", err)
			}
			if r.Rip == 0 && r.Rsp == sp+8 {
				t.inCall = false
				return r.Rax, nil
			}
			// A real crash inside the call: deliver it, as the target would have crashed anyway.
			t.inCall = false
			ptraceDetachSig(t.tid, int(unix.SIGSEGV))
			return 0, fmt.Errorf("the target crashed (SIGSEGV at %#x) inside the injected call on thread %d", r.Rip, t.tid)
		}
		// Any other signal belongs to the program: deliver it and keep waiting.
		if err := unix.PtraceCont(t.tid, int(sig)); err != nil {
			return 0, fmt.Errorf("passing signal %v: %w", sig, err)
		}
	}
}

// release restores the saved state and detaches: the thread goes back into its system call.
func (t *remoteThread) release() error {
	if err := t.restoreXState(); err != nil {
		return err
	}
	if err := unix.PtraceSetRegs(t.tid, &t.regs); err != nil {
		return fmt.Errorf("restoring registers of thread %d: %w", t.tid, err)
	}
	if err := unix.PtraceDetach(t.tid); err != nil {
		return fmt.Errorf("PTRACE_DETACH thread %d: %w", t.tid, err)
	}
	return nil
}

func ptraceDetachSig(tid, sig int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(tid), 0, uintptr(sig), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// onTracerThread runs f on a goroutine locked to a fresh OS thread, which every ptrace request
// of one injection must come from. When f fails the thread is not unlocked, so it exits with the
// goroutine and the kernel detaches anything still attached.
func onTracerThread(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := f()
		if err == nil {
			runtime.UnlockOSThread()
		}
		ch <- err
	}()
	return <-ch
}
