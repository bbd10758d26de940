package bpf

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedUpToDate rebuilds the eBPF object and bindings with the pinned clang into a
// temporary directory and compares them with the committed files (the object depends on the
// clang version, so only the pinned one can check it). Without that clang the test skips with a
// message, except under CI=true, where CI must install it and a skip is a failure.
func TestGeneratedUpToDate(t *testing.T) {
	clang, flags := makeVar(t, "BPF_CLANG"), makeVar(t, "BPF_CFLAGS")
	if _, err := exec.LookPath(clang); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed: CI must install it (apt-get install %s) to check the committed eBPF object", clang, clang)
		}
		t.Skipf("%s not installed: cannot check the committed eBPF object (apt-get install %s)", clang, clang)
	}
	args := generateArgs(t)
	dir := t.TempDir()
	args = append([]string{"tool", "bpf2go", "-output-dir", dir}, args...)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "BPF_CLANG="+clang, "BPF_CFLAGS="+flags, "GOPACKAGE=bpf")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, out)
	}
	for _, f := range []string{"pmtracer_x86_bpfel.go", "pmtracer_x86_bpfel.o"} {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `make -C bpf generate` and commit it", f)
		}
	}
}

// makeVar reads "NAME ?= value" from the Makefile (expanding $(CLANG_VERSION)).
func makeVar(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "?=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		for vk, vv := range vars {
			v = strings.ReplaceAll(v, "$("+vk+")", vv)
		}
		vars[strings.TrimSpace(k)] = v
	}
	if vars[name] == "" {
		t.Fatalf("Makefile has no %s", name)
	}
	return vars[name]
}

// generateArgs returns the bpf2go arguments of gen.go's go:generate line, env-expanded.
func generateArgs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "//go:generate go tool bpf2go "); ok {
			var out []string
			for _, f := range strings.Fields(rest) {
				switch f {
				case "${BPF_CLANG}":
					f = makeVar(t, "BPF_CLANG")
				case "${BPF_CFLAGS}":
					f = makeVar(t, "BPF_CFLAGS")
				}
				out = append(out, f)
			}
			return out
		}
	}
	t.Fatal("no go:generate bpf2go line in gen.go")
	return nil
}
