package export

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profilemate/profilemate-trace/export/exporttest"
)

func TestColumnarRoundTrip(t *testing.T) {
	o := exporttest.DefaultSynthetic
	o.Steps = 300
	sb, _ := exporttest.Synthetic(o)
	files, err := sb.Files()
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range goldenFiles(t) {
		files["golden/"+name] = f
	}
	for name, raw := range files {
		if !strings.HasSuffix(name, ".pmr") {
			continue
		}
		col, err := encodeColumnar(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		back, err := decodeColumnar(col, len(raw))
		if err != nil || !bytes.Equal(back, raw) {
			t.Fatalf("%s: round trip differs (%v)", name, err)
		}
		t.Logf("%s: %d -> %d bytes", name, len(raw), len(col))
	}
}

// A bundle holds columnar members and reads back to the identical raw files.
func TestBundleRoundTrip(t *testing.T) {
	dir := golden(t)
	p := filepath.Join(t.TempDir(), "s"+BundleSuffix)
	if err := WriteBundle(dir, p); err != nil {
		t.Fatal(err)
	}
	name, members, err := ReadBundle(p)
	if err != nil || name != filepath.Base(dir) {
		t.Fatal(name, err)
	}
	n := 0
	for _, m := range members {
		want, err := os.ReadFile(filepath.Join(dir, m.Name))
		if err != nil || !bytes.Equal(want, m.Data) {
			t.Errorf("%s differs after the round trip (%v)", m.Name, err)
		}
		if strings.HasSuffix(m.Name, ".pmr") {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d raw streams read back, want 4", n)
	}
}

func FuzzColumnar(f *testing.F) {
	for name, raw := range goldenFiles(f) {
		if strings.HasSuffix(name, ".pmr") {
			col, _ := encodeColumnar(raw)
			f.Add(col)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := decodeColumnar(b, 1<<20)
		if err == nil && len(out) > 1<<20+1<<16 {
			t.Fatalf("decoded %d bytes past the bound", len(out))
		}
	})
}
