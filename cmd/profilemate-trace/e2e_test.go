package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profilemate/profilemate-trace/export"
)

// testlibs builds the agent, the mock libcupti and the fake libcuda (cupti/testdata) and
// returns the agent path and the directory of the test libraries.
func testlibs(t *testing.T) (agent, libdir string) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	out, err := exec.Command("make", "-s", "-C", filepath.Join(root, "cupti"), "testlibs").CombinedOutput()
	if err != nil {
		t.Fatalf("building the agent and its test doubles: %v\n%s", err, out)
	}
	return filepath.Join(root, "cupti/build/libprofilemate.so"), filepath.Join(root, "cupti/build/testlib")
}

// `run` on a program that drives the fake libcuda through the real agent and the mock
// CUPTI: the session and the bundle hold exactly what the program launched, per process.
func TestRunEndToEndWithAgent(t *testing.T) {
	agent, lib := testlibs(t)
	t.Setenv("LD_LIBRARY_PATH", lib)
	t.Setenv("PROFILEMATE_CUPTI_PATH", filepath.Join(lib, "libcupti.so.13"))
	for _, tc := range []struct {
		scenario string
		detail   string
		// per stream: kernels, graph launches, H2D bytes, D2H bytes
		want [][4]int
	}{
		{"basic", "graph", [][4]int{{27, 4, 8192, 3072}}},
		{"basic", "nodes", [][4]int{{27 + 4*3, 0, 8192, 3072}}},
		{"forkbefore", "graph", [][4]int{{3, 0, 0, 0}, {5, 0, 0, 0}}},
	} {
		t.Run(tc.scenario+"-"+tc.detail, func(t *testing.T) {
			base := t.TempDir()
			code := run([]string{"profilemate-trace", "run", "--detail", tc.detail, "--agent", agent, "--no-pyhook", "-o", base, "--",
				filepath.Join(lib, "e2e_prog"), tc.scenario})
			if code != 0 {
				t.Fatalf("run exited %d", code)
			}
			bundles, _ := filepath.Glob(filepath.Join(base, "session_*.tar.zst"))
			if len(bundles) != 1 {
				t.Fatalf("bundles: %v", bundles)
			}
			s, err := export.Load(bundles[0])
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Warnings) > 0 {
				t.Errorf("warnings: %v", s.Warnings)
			}
			var got [][4]int
			for _, st := range s.Streams {
				if st.Meta.Source != "cupti" {
					continue
				}
				var c [4]int
				c[0], c[1] = len(st.Kernels), len(st.Graphs)
				for _, m := range st.Memcpys {
					switch m.CopyKind {
					case 1:
						c[2] += int(m.Bytes)
					case 2:
						c[3] += int(m.Bytes)
					}
				}
				for _, k := range st.Kernels {
					if st.Names[k.NameID] == "" {
						t.Errorf("kernel with name id %d has no name record", k.NameID)
					}
					if k.EndNS <= k.StartNS {
						t.Errorf("kernel %s: end %d <= start %d", st.Names[k.NameID], k.EndNS, k.StartNS)
					}
				}
				got = append(got, c)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d cupti streams, want %d", len(got), len(tc.want))
			}
			// Streams are ordered by file name (pid); the fork child has the larger pid.
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("stream %d: kernels, graphs, h2d, d2h = %v, want %v", i, got[i], tc.want[i])
				}
			}
			// The derived files exist beside the bundle and carry the kernels.
			dirs, _ := filepath.Glob(filepath.Join(base, "session_*[0-9]"))
			b, err := os.ReadFile(filepath.Join(dirs[0], "gpu_kernels.csv"))
			if err != nil || !strings.Contains(string(b), "vectorized_elementwise_kernel") {
				t.Errorf("gpu_kernels.csv: %v\n%s", err, b)
			}
		})
	}
}
