package inject

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// pep768Fake builds a 3.14-shaped _Py_DebugOffsets with the given version and plausible offsets.
func pep768Fake(version uint64) []byte {
	b := make([]byte, pep768OffsetsSize)
	copy(b, "xdebugpy")
	put := func(i int, v uint64) { binary.LittleEndian.PutUint64(b[8*i:], v) }
	put(doVersion, version)
	put(doRuntimeSize, 0x1000)
	put(doFinalizing, 0x10)
	put(doInterpretersHead, 0x20)
	put(doInterpSize, 0x8000)
	put(doInterpNext, 0x8)
	put(doThreadsHead, 0x60)
	put(doThreadsMain, 0x68)
	put(doGILHolder, 0x100)
	put(doRemoteEnabled, 0x200)
	put(doTStateSize, 0x400)
	put(doTStateNext, 0x8)
	put(doTStateInterp, 0x10)
	put(doTStateNativeTID, 0x48)
	put(doEvalBreaker, 0x18)
	put(doRemoteSupport, 0x100)
	put(doPendingCall, 0)
	put(doScriptPath, 4)
	put(doScriptPathSize, 512)
	return b
}

func TestPEP768ParseOffsets(t *testing.T) {
	o, err := pep768ParseOffsets(pep768Fake(0x030e0af0)) // 3.14.10 final
	if err != nil {
		t.Fatal(err)
	}
	if o.ScriptPathSize != 512 || o.RemoteSupport != 0x100 || o.ScriptPath != 4 || o.ThreadsMain != 0x68 || o.InterpNext != 8 {
		t.Fatalf("decoded %+v", o)
	}

	for _, tc := range []struct {
		name   string
		buf    []byte
		minor  int
		reason string
	}{
		{"no cookie (3.12)", make([]byte, pep768OffsetsSize), 0, "before 3.13"},
		{"3.13", pep768Fake(0x030d00f0), 13, "needs CPython 3.14"},
		{"3.15", pep768Fake(0x030f00f0), 15, "not known"},
		{"3.14 beta", pep768Fake(0x030e00b1), 14, "pre-release"},
	} {
		_, err := pep768ParseOffsets(tc.buf)
		var ve *VersionError
		if !errors.As(err, &ve) || !errors.Is(err, ErrPEP768Unsupported) {
			t.Errorf("%s: got %v, want a *VersionError", tc.name, err)
			continue
		}
		if ve.Minor != tc.minor || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: got minor %d, %q; want minor %d and %q", tc.name, ve.Minor, err, tc.minor, tc.reason)
		}
	}

	// Offsets outside their structure: refuse to write.
	bad := pep768Fake(0x030e0af0)
	binary.LittleEndian.PutUint64(bad[8*doScriptPath:], 0x400) // path buffer past the thread state
	if _, err := pep768ParseOffsets(bad); err == nil || !strings.Contains(err.Error(), "debugger_script_path") {
		t.Errorf("path buffer outside the thread state: got %v", err)
	}
	bad = pep768Fake(0x030e0af0)
	binary.LittleEndian.PutUint64(bad[8*doScriptPathSize:], 3)
	if _, err := pep768ParseOffsets(bad); err == nil || !strings.Contains(err.Error(), "debugger_script_path_size") {
		t.Errorf("tiny path buffer: got %v", err)
	}
	if _, err := pep768ParseOffsets(pep768Fake(0x030e0af0)[:100]); err == nil {
		t.Error("short buffer accepted")
	}
}

func TestPEP768CheckScriptPath(t *testing.T) {
	if err := pep768CheckScriptPath("/tmp/x/inject.py", 512); err != nil {
		t.Fatal(err)
	}
	long := "/" + strings.Repeat("a", 510) // 511 bytes + NUL = 512: fits exactly
	if err := pep768CheckScriptPath(long, 512); err != nil {
		t.Fatalf("511-byte path: %v", err)
	}
	for _, p := range []string{"", "inject.py", "/tmp/a\x00b", long + "b"} {
		if err := pep768CheckScriptPath(p, 512); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}
