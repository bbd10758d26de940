package export

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profilemate/profilemate-trace/export/exporttest"
	"github.com/profilemate/profilemate-trace/internal/record"
)

// everything runs every derived output of a session (files, report, trace) in memory.
func everything(t testing.TB, s *Session) {
	for _, o := range outputs(s) {
		var err error
		switch x := o.(type) {
		case *table:
			err = x.writeTo(io.Discard)
		case *blob:
			_ = x.data
		case subdirOutput:
		}
		if err != nil {
			t.Fatalf("%s: %v", o.fileName(), err)
		}
	}
	if err := WriteReport(s, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := WritePerfetto(s, io.Discard); err != nil {
		t.Fatal(err)
	}
}

func goldenFiles(t testing.TB) map[string][]byte {
	b := exporttest.New(t0)
	dir := golden(t)
	_ = b
	out := map[string][]byte{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out[rel], _ = os.ReadFile(p)
		}
		return nil
	})
	return out
}

// FuzzStream feeds arbitrary bytes as a raw stream through the decoder and the whole
// joiner: it may warn, never panic.
func FuzzStream(f *testing.F) {
	for name, data := range goldenFiles(f) {
		if strings.HasSuffix(name, ".pmr") {
			f.Add(data)
			if len(data) > 200 {
				f.Add(data[:len(data)/2])
				c := append([]byte(nil), data...)
				c[150] ^= 0xff
				f.Add(c)
			}
		}
	}
	f.Add([]byte("PMRAW\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Session{Name: "fuzz"}
		s.addStream("raw/1.cupti.pmr", data)
		// the same bytes as every source, so that each decoder sees them
		s.addStream("raw/1.pyhook.pmr", data)
		s.finish()
		everything(t, s)
	})
}

// FuzzBundle feeds arbitrary bytes as a bundle file to Load.
func FuzzBundle(f *testing.F) {
	dir := golden(f)
	bundle := filepath.Join(f.TempDir(), "s"+BundleSuffix)
	if err := WriteBundle(dir, bundle); err != nil {
		f.Fatal(err)
	}
	data, _ := os.ReadFile(bundle)
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add([]byte{})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "b"+BundleSuffix)
		os.WriteFile(p, b, 0o600)
		s, err := Load(p)
		if err != nil {
			return
		}
		everything(t, s)
	})
}

func writeBundleOf(t *testing.T, dir string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s"+BundleSuffix)
	if err := WriteBundle(dir, p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	return b
}

// noLeftovers checks that a failed or finished Export left no temporary directories.
func noLeftovers(t *testing.T, parent string) {
	t.Helper()
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary output left behind: %s", e.Name())
		}
	}
}

func TestDamagedBundles(t *testing.T) {
	good := writeBundleOf(t, golden(t))
	cases := map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)*2/3],
		"tiny":      good[:20],
		"corrupted": func() []byte { c := append([]byte(nil), good...); c[len(c)/2] ^= 0x55; c[len(c)/2+1] ^= 0xaa; return c }(),
		"not zstd":  []byte("hello, this is not a bundle"),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			p := filepath.Join(base, "b"+BundleSuffix)
			os.WriteFile(p, data, 0o600)
			out := filepath.Join(base, "out")
			s, err := Export(p, out)
			if err != nil {
				if !errors.Is(err, ErrBundle) {
					t.Errorf("error does not wrap ErrBundle: %v", err)
				}
				if _, serr := os.Stat(out); serr == nil {
					t.Error("failed export left an output directory")
				}
			} else if len(s.Warnings) == 0 {
				t.Error("a damaged bundle was exported without a warning")
			} else {
				t.Logf("salvaged with warnings: %v", s.Warnings[0])
				if _, err := os.Stat(filepath.Join(out, "cuda_graph_usage.csv")); err != nil {
					t.Error(err)
				}
			}
			noLeftovers(t, base)
		})
	}
}

func TestVersionMismatchAndCorruptStream(t *testing.T) {
	dir := golden(t)
	// a stream of a future raw version, and a stream cut in the middle of a record
	p := filepath.Join(dir, "raw", "100.cupti.pmr")
	b, _ := os.ReadFile(p)
	b[8] = 9
	os.WriteFile(p, b, 0o600)
	q := filepath.Join(dir, "raw", "200.pyhook.pmr")
	c, _ := os.ReadFile(q)
	os.WriteFile(q, c[:len(c)-13], 0o600)
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ver, cut bool
	for _, w := range s.Warnings {
		ver = ver || (strings.Contains(w, "100.cupti.pmr") && strings.Contains(w, record.ErrVersion.Error()) && strings.Contains(w, "version 9"))
		cut = cut || (strings.Contains(w, "200.pyhook.pmr") && strings.Contains(w, "records before it are kept"))
	}
	if !ver || !cut {
		t.Errorf("warnings %v", s.Warnings)
	}
	everything(t, s)
	// the scheduler stream kept its records up to the cut
	n := 0
	for _, st := range s.Streams {
		n += len(st.KVBlocks)
	}
	if n == 0 {
		t.Error("nothing salvaged from the cut stream")
	}
}

func TestExportRefusesNonEmptyOutput(t *testing.T) {
	dir := golden(t)
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "keep"), []byte("x"), 0o600)
	if _, err := Export(dir, out); err == nil {
		t.Fatal("export into a non-empty directory succeeded")
	}
	if b, _ := os.ReadFile(filepath.Join(out, "keep")); string(b) != "x" {
		t.Error("existing output touched")
	}
}

func TestEmptySessionDir(t *testing.T) {
	if _, err := Load(t.TempDir()); err == nil {
		t.Error("an empty directory loaded as a session")
	}
	// metadata only: every file is written, empty, with the documented headers
	dir := filepath.Join(t.TempDir(), "session_y")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "metadata.json"), []byte(`{"start_monotonic_ns": 5}`), 0o600)
	out := filepath.Join(t.TempDir(), "o")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	h, _ := os.ReadFile(filepath.Join(out, "kv_cache_usage.csv"))
	if string(h) != "timestamp_sec,usage_pct,num_blocks,total_blocks,num_free,pool_id,pid,op\n" {
		t.Errorf("kv_cache_usage.csv = %q", h)
	}
	if _, err := os.Stat(filepath.Join(out, moeDir, "moe_expert_activations.csv")); err != nil {
		t.Error(err)
	}
	var buf bytes.Buffer
	s, _ := Load(dir)
	WriteReport(s, &buf)
	if !strings.Contains(buf.String(), "No data") {
		t.Error("empty report does not say what is missing")
	}
}
