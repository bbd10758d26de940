package pyproc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Layout is the part of a CPython build's memory layout that the tracer needs (x86-64 and arm64,
// default GIL build). Offsets are in bytes; None marks an absent field.
type Layout struct {
	Minor int // 10..14

	// _PyRuntime
	RuntimeInterpHead uint64 // interpreters.head
	RuntimeAutoTSS    uint64 // autoTSSkey (Py_tss_t {int initialized; unsigned key}); None if not a pthread key (3.14)

	// PyInterpreterState
	InterpThreadsHead uint64

	// PyThreadState
	TstateNext     uint64
	TstateInterp   uint64
	TstateFrame    uint64 // 3.10 frame, 3.11/3.12 cframe, 3.13+ current_frame
	CframeFrame    uint64 // cframe->current_frame, None for 3.10 and 3.13+
	TstateThreadID uint64 // pthread_t (== thread pointer on x86-64 glibc)
	TstateNativeID uint64 // native_thread_id, None on 3.10

	// frame (_PyInterpreterFrame, PyFrameObject for 3.10)
	FrameCode      uint64
	FramePrev      uint64
	FrameOwner     uint64 // None on 3.10
	OwnerSkipMin   uint8  // owner values >= this are C-stack shims / interpreter-owned frames
	ExecutableMask uint64 // 3.14: f_executable is a tagged _PyStackRef

	// PyCodeObject
	CodeFilename    uint64
	CodeName        uint64
	CodeQualname    uint64 // None on 3.10
	CodeFirstLineno uint64

	// PyUnicodeObject
	UnicodeLength uint64
	UnicodeState  uint64
	ASCIIData     uint64 // sizeof(PyASCIIObject)
	CompactData   uint64 // sizeof(PyCompactUnicodeObject)

	FromDebugOffsets bool
}

// None marks an absent offset.
const None = ^uint64(0)

// ErrUnsupportedVersion reports a CPython version the tracer has no layout for.
var ErrUnsupportedVersion = errors.New("unsupported CPython version")

// TableLayout returns the hard-coded layout for 3.10-3.12 (x86-64, default build), measured on
// pyenv 3.10.13, 3.11.7, 3.12.1 and Debian 3.11.2 (see docs/notes-ebpf.md); validated at attach.
func TableLayout(minor int) (Layout, error) {
	base := Layout{Minor: minor, TstateNext: 8, TstateInterp: 16, UnicodeLength: 16, UnicodeState: 32,
		ExecutableMask: ^uint64(0)}
	switch minor {
	case 10:
		l := base
		l.RuntimeInterpHead, l.RuntimeAutoTSS = 32, 584
		l.InterpThreadsHead = 8
		l.TstateFrame, l.CframeFrame, l.TstateThreadID, l.TstateNativeID = 24, None, 176, None
		l.FrameCode, l.FramePrev, l.FrameOwner, l.OwnerSkipMin = 32, 24, None, 0
		l.CodeFilename, l.CodeName, l.CodeQualname, l.CodeFirstLineno = 104, 112, None, 40
		l.ASCIIData, l.CompactData = 48, 72
		return l, nil
	case 11:
		l := base
		l.RuntimeInterpHead, l.RuntimeAutoTSS = 40, 592
		l.InterpThreadsHead = 16
		l.TstateFrame, l.CframeFrame, l.TstateThreadID, l.TstateNativeID = 56, 8, 152, 160
		l.FrameCode, l.FramePrev, l.FrameOwner, l.OwnerSkipMin = 32, 48, 69, 3 // owners 0-2 are Python frames
		l.CodeFilename, l.CodeName, l.CodeQualname, l.CodeFirstLineno = 112, 120, 128, 72
		l.ASCIIData, l.CompactData = 48, 72
		return l, nil
	case 12:
		l := base
		l.RuntimeInterpHead, l.RuntimeAutoTSS = 40, 1544
		l.InterpThreadsHead = 72
		l.TstateFrame, l.CframeFrame, l.TstateThreadID, l.TstateNativeID = 56, 0, 136, 144
		l.FrameCode, l.FramePrev, l.FrameOwner, l.OwnerSkipMin = 0, 8, 70, 3 // 3 = FRAME_OWNED_BY_CSTACK
		l.CodeFilename, l.CodeName, l.CodeQualname, l.CodeFirstLineno = 112, 120, 128, 68
		l.ASCIIData, l.CompactData = 40, 56
		return l, nil
	}
	return Layout{}, fmt.Errorf("%w: 3.%d has no offset table (3.13+ uses _Py_DebugOffsets)", ErrUnsupportedVersion, minor)
}

// autoTSS offsets for 3.13 (not in _Py_DebugOffsets); validated at attach like the rest.
var autoTSS313 = uint64(2160)

// debugOffsetsLayout decodes _Py_DebugOffsets at the start of _PyRuntime (3.13; 3.14 differs and
// is refused until tested). b holds at least 512 bytes of _PyRuntime.
func debugOffsetsLayout(b []byte) (Layout, uint64, error) {
	if len(b) < 512 || string(b[:8]) != "xdebugpy" {
		return Layout{}, 0, errors.New("no _Py_DebugOffsets cookie in _PyRuntime")
	}
	u := func(off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }
	version := u(8)
	minor := int(version>>16) & 0xff
	if version>>24 != 3 {
		return Layout{}, version, fmt.Errorf("%w: _Py_DebugOffsets version %#x", ErrUnsupportedVersion, version)
	}
	if u(16) != 0 {
		return Layout{}, version, fmt.Errorf("%w: free-threaded build (3.%dt)", ErrUnsupportedVersion, minor)
	}
	if minor != 13 {
		return Layout{}, version, fmt.Errorf("%w: 3.%d _Py_DebugOffsets layout not supported yet (tested: 3.13)", ErrUnsupportedVersion, minor)
	}
	// 3.13 layout (Include/internal/pycore_runtime.h): cookie, version, free_threaded,
	// runtime_state{size, finalizing, interpreters_head} @24,
	// interpreter_state{size, id, next, threads_head, gc, imports_modules, sysdict, builtins,
	//   ceval_gil, gil_runtime_state, gil_runtime_state_enabled, gil_runtime_state_locked,
	//   gil_runtime_state_holder} @48,
	// thread_state{size, prev, next, interp, current_frame, thread_id, native_thread_id,
	//   datastack_chunk, status} @152,
	// interpreter_frame{size, previous, executable, instr_ptr, localsplus, owner} @224,
	// code_object{size, filename, name, qualname, linetable, firstlineno, argcount,
	//   localsplusnames, localspluskinds, co_code_adaptive} @272, pyobject @352, ...
	l := Layout{Minor: minor, FromDebugOffsets: true, ExecutableMask: ^uint64(0)}
	l.RuntimeInterpHead = u(40)
	l.RuntimeAutoTSS = autoTSS313
	l.InterpThreadsHead = u(72)
	tsSize := u(152)
	l.TstateNext, l.TstateInterp, l.TstateFrame = u(168), u(176), u(184)
	l.TstateThreadID, l.TstateNativeID = u(192), u(200)
	l.CframeFrame = None
	frSize := u(224)
	l.FramePrev, l.FrameCode, l.FrameOwner = u(232), u(240), u(264)
	l.OwnerSkipMin = 3 // FRAME_OWNED_BY_CSTACK
	coSize := u(272)
	l.CodeFilename, l.CodeName, l.CodeQualname, l.CodeFirstLineno = u(280), u(288), u(296), u(312)
	l.UnicodeLength, l.UnicodeState = 16, 32
	l.ASCIIData, l.CompactData = 40, 56
	for _, c := range []struct {
		name      string
		off, size uint64
	}{
		{"thread_state.next", l.TstateNext, tsSize}, {"thread_state.current_frame", l.TstateFrame, tsSize},
		{"thread_state.thread_id", l.TstateThreadID, tsSize}, {"interpreter_frame.previous", l.FramePrev, frSize},
		{"interpreter_frame.executable", l.FrameCode, frSize}, {"interpreter_frame.owner", l.FrameOwner, frSize},
		{"code_object.qualname", l.CodeQualname, coSize}, {"code_object.filename", l.CodeFilename, coSize},
	} {
		if c.off+1 > c.size || c.size > 1<<20 {
			return Layout{}, version, fmt.Errorf("_Py_DebugOffsets: %s offset %d outside size %d", c.name, c.off, c.size)
		}
	}
	return l, version, nil
}
