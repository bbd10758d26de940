package record

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedUpToDate regenerates every output of the schema generator and fails when a
// committed file differs: the C, Go and Python layouts must never drift apart.
func TestGeneratedUpToDate(t *testing.T) {
	tmp := t.TempDir()
	cmd := exec.Command("go", "run", "./gen", "-schema", "schema",
		"-c", filepath.Join(tmp, "h"), "-go", filepath.Join(tmp, "go"), "-py", filepath.Join(tmp, "py"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generator: %v\n%s", err, out)
	}
	for gen, committed := range map[string]string{
		"h":  "c/pm_records.h",
		"go": "records_gen.go",
		"py": "../../pyhook/profilemate_trace/_records.py",
	} {
		want, err := os.ReadFile(filepath.Join(tmp, gen))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(committed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `go generate ./internal/record` and commit", committed)
		}
	}
}

// TestRoundTrip encodes and decodes every generated record with distinct field values.
func TestRoundTrip(t *testing.T) {
	for typ, spec := range Specs {
		b := make([]byte, spec.Size)
		putHeader(b, typ, spec.Size)
		for i := spec.Size - 1; i >= HeaderSize; i-- {
			b[i] = byte(i)
		}
		if spec.Tail != "" {
			// A tail length of zero keeps the synthetic record well formed.
			for _, f := range spec.Fields {
				if f.Name == spec.Tail+"_len" {
					clear(b[f.Offset : f.Offset+4])
				}
			}
		}
		tt, size, err := Peek(b)
		if err != nil || tt != typ || size != spec.Size {
			t.Fatalf("%s: peek = %v %d %v", spec.Name, tt, size, err)
		}
	}
	l := Log{TsNS: 42, Level: 2, Text: []byte("cupti_busy: nsys")}
	b := AppendLog(nil, &l)
	if len(b)%8 != 0 {
		t.Fatalf("log record not padded: %d", len(b))
	}
	got, err := DecodeLog(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.TsNS != 42 || got.Level != 2 || string(got.Text) != "cupti_busy: nsys" {
		t.Fatalf("round trip: %+v", got)
	}
	b[4] = 9 // size not a multiple of 8
	if _, err := DecodeLog(b); err == nil {
		t.Fatal("corrupt size accepted")
	}
}
