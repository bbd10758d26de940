package export

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/profilemate/profilemate-trace/internal/record"
)

// A session written by the hook alone (raw/ only) exports with a metadata.json that lists
// every patch, the unavailable ones with their reason.
func TestHookOnlySessionGetsMetadataWithPatches(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "session_20261127_120000")
	if err := os.MkdirAll(filepath.Join(dir, "raw"), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "raw", "42.pyhook.pmr"))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := record.NewRawWriter(f, record.StreamMeta{Source: "pyhook", Pid: 42})
	var b []byte
	b = record.AppendPyPatchStatus(b, &record.PyPatchStatus{TsNS: 1, Status: 1, Text: []byte("kv_cache\x00")})
	b = record.AppendPyPatchStatus(b, &record.PyPatchStatus{TsNS: 2, Status: 2, Text: []byte("cuda_graph_v2\x00BatchExecutionDescriptor not found")})
	b = record.AppendPyPatchStatus(b, &record.PyPatchStatus{TsNS: 3, Status: 1, Text: []byte("scheduler\x00")})
	b = record.AppendPyPatchStatus(b, &record.PyPatchStatus{TsNS: 4, Status: 4, Errors: 3, Text: []byte("scheduler\x00KeyError in schedule()")})
	if err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	f.Close()
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		Mode    string  `json:"mode"`
		Patches []Patch `json:"pyhook_patches"`
	}
	if err := json.Unmarshal(raw, &md); err != nil {
		t.Fatal(err)
	}
	want := []Patch{
		{Pid: 42, Name: "cuda_graph_v2", Status: "unavailable", Reason: "BatchExecutionDescriptor not found"},
		{Pid: 42, Name: "kv_cache", Status: "installed"},
		{Pid: 42, Name: "scheduler", Status: "failed", Errors: 3, Reason: "KeyError in schedule()"},
	}
	if md.Mode != "hook-only" || len(md.Patches) != len(want) {
		t.Fatalf("metadata: %s", raw)
	}
	for i := range want {
		if md.Patches[i] != want[i] {
			t.Errorf("patch %d = %+v, want %+v", i, md.Patches[i], want[i])
		}
	}
}
