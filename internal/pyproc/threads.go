package pyproc

import (
	"errors"
	"fmt"
)

// Thread is one PyThreadState of the main interpreter.
type Thread struct {
	Tstate   uint64
	ThreadID uint64 // pthread_self(): the thread pointer (fsbase) on x86-64 glibc
	NativeID uint32 // kernel tid in the process's pid namespace (0 on 3.10)
	TopFrame uint64
}

// glibc x86-64: struct pthread.specific_1stblock (glibc 2.27-2.39 and later; checked at attach).
const PthreadSpecific1stBlock = 0x310

// maxThreads bounds the thread-list walk (a corrupt list must not loop forever).
const maxThreads = 4096

// Threads walks _PyRuntime.interpreters.head -> threads.head -> next.
func (p *Process) Threads() ([]Thread, error) {
	l := p.Layout
	interp, err := p.ReadU64(p.Runtime + l.RuntimeInterpHead)
	if err != nil {
		return nil, fmt.Errorf("reading interpreters.head: %w", err)
	}
	if interp == 0 {
		return nil, errors.New("no interpreter yet (interpreters.head is NULL)")
	}
	p.Interp = interp
	ts, err := p.ReadU64(interp + l.InterpThreadsHead)
	if err != nil {
		return nil, fmt.Errorf("reading threads.head: %w", err)
	}
	var out []Thread
	for i := 0; ts != 0 && i < maxThreads; i++ {
		t := Thread{Tstate: ts}
		if in, err := p.ReadU64(ts + l.TstateInterp); err != nil || in != interp {
			return out, fmt.Errorf("thread state %#x: interp %#x, want %#x (layout mismatch?)", ts, in, interp)
		}
		t.ThreadID, _ = p.ReadU64(ts + l.TstateThreadID)
		if l.TstateNativeID != None {
			v, _ := p.ReadU32(ts + l.TstateNativeID)
			t.NativeID = v
		}
		t.TopFrame, _ = p.TopFrame(ts)
		out = append(out, t)
		ts, err = p.ReadU64(ts + l.TstateNext)
		if err != nil {
			return out, fmt.Errorf("reading next thread state: %w", err)
		}
	}
	return out, nil
}

// TopFrame returns the current frame of a thread state (0 when it runs no Python).
func (p *Process) TopFrame(tstate uint64) (uint64, error) {
	l := p.Layout
	f, err := p.ReadU64(tstate + l.TstateFrame)
	if err != nil || f == 0 || l.CframeFrame == None {
		return f, err
	}
	return p.ReadU64(f + l.CframeFrame)
}

// Frame is one Python frame of a walk.
type Frame struct {
	Addr, Code uint64
}

// Walk returns the Python frames of a thread from the innermost outwards (user-space twin of the
// BPF walk, for validation and tests). C-stack shim frames are skipped.
func (p *Process) Walk(tstate uint64, max int) ([]Frame, error) {
	l := p.Layout
	f, err := p.TopFrame(tstate)
	if err != nil {
		return nil, err
	}
	var out []Frame
	for i := 0; f != 0 && i < max; i++ {
		code, err := p.ReadU64(f + l.FrameCode)
		if err != nil {
			return out, err
		}
		prev, err := p.ReadU64(f + l.FramePrev)
		if err != nil {
			return out, err
		}
		skip := false
		if l.FrameOwner != None {
			var b [1]byte
			if err := p.Read(f+l.FrameOwner, b[:]); err == nil && b[0] >= l.OwnerSkipMin {
				skip = true
			}
		}
		code &= l.ExecutableMask
		if !skip && code != 0 {
			out = append(out, Frame{Addr: f, Code: code})
		}
		f = prev
	}
	return out, nil
}

// GilstateKey reads _PyRuntime.autoTSSkey and checks it against the thread list: for each thread
// the pthread key slot at thread_id + PthreadSpecific1stBlock + 16*key + 8 must hold its tstate.
// It returns -1 and the reason when the key cannot be used (the tracer then relies on the
// fsbase -> tstate map alone).
func (p *Process) GilstateKey(threads []Thread) (int32, error) {
	l := p.Layout
	if l.RuntimeAutoTSS == None {
		return -1, errors.New("no autoTSSkey in this version")
	}
	init, err := p.ReadU32(p.Runtime + l.RuntimeAutoTSS)
	if err != nil {
		return -1, err
	}
	key, err := p.ReadU32(p.Runtime + l.RuntimeAutoTSS + 4)
	if err != nil {
		return -1, err
	}
	if init != 1 || key >= 32 {
		return -1, fmt.Errorf("autoTSSkey not usable (initialized=%d key=%d)", init, key)
	}
	// Most threads must agree: right after fork the child's list still holds the parent's
	// other threads until PyOS_AfterFork_Child prunes it, and a thread may be exiting.
	match, miss := 0, 0
	var lastErr error
	for _, t := range threads {
		if t.ThreadID == 0 {
			continue
		}
		v, err := p.ReadU64(t.ThreadID + PthreadSpecific1stBlock + 16*uint64(key) + 8)
		if err == nil && v == t.Tstate {
			match++
			continue
		}
		miss++
		lastErr = fmt.Errorf("pthread key %d slot of thread %#x holds %#x, not its tstate %#x (%v)", key, t.ThreadID, v, t.Tstate, err)
	}
	if match == 0 || miss > match {
		if lastErr == nil {
			lastErr = errors.New("no thread to check the gilstate key against")
		}
		return -1, lastErr
	}
	p.GilKey = int32(key)
	return p.GilKey, nil
}

// Validate checks the layout on the live process: the thread list is consistent and every
// thread's frames hold code objects.
func (p *Process) Validate() ([]Thread, error) {
	threads, err := p.Threads()
	if err != nil {
		return nil, fmt.Errorf("CPython %s layout check: %w", p.VersionString(), err)
	}
	if len(threads) == 0 {
		return nil, fmt.Errorf("CPython %s layout check: empty thread list", p.VersionString())
	}
	frames := 0
	for _, t := range threads {
		fs, err := p.Walk(t.Tstate, 256)
		if err != nil {
			return nil, fmt.Errorf("CPython %s layout check: walking thread %#x: %w", p.VersionString(), t.Tstate, err)
		}
		for _, f := range fs {
			if _, err := p.ReadCode(f.Code); err != nil {
				return nil, fmt.Errorf("CPython %s layout check: frame %#x: %w", p.VersionString(), f.Addr, err)
			}
			frames++
		}
	}
	if frames == 0 {
		return nil, fmt.Errorf("CPython %s layout check: no Python frame on any of %d threads", p.VersionString(), len(threads))
	}
	return threads, nil
}
