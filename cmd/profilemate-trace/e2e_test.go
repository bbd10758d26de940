package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/export"
	"github.com/profilemate/profilemate-trace/internal/record"
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

// `run` with eBPF on a CPython program whose vLLM-shaped phases launch through a fake
// libcuda: every launch lands in the session with its phase. Needs root (CI runs as root).
func TestRunWithEBPFPhases(t *testing.T) {
	requireRoot(t)
	root, _ := filepath.Abs("../..")
	lib := filepath.Join(t.TempDir(), "libcuda.so.1")
	if out, err := exec.Command("cc", "-O0", "-fno-omit-frame-pointer", "-fcf-protection=none", "-fPIC", "-shared",
		"-Wl,-soname,libcuda.so.1", "-o", lib, filepath.Join(root, "bpf/testdata/fakecuda.c"), "-ldl", "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("building the fake libcuda: %v\n%s", err, out)
	}
	t.Setenv("PM_FAKECUDA", lib)
	// The workload waits for "go" on stdin: give the tracer time to find libcuda first.
	r, w, _ := os.Pipe()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old }()
	go func() {
		time.Sleep(1500 * time.Millisecond)
		w.Write([]byte("go\n"))
		time.Sleep(500 * time.Millisecond)
		w.Close()
	}()
	base := t.TempDir()
	if code := run([]string{"profilemate-trace", "run", "--no-agent", "--no-pyhook", "--no-bundle", "-o", base, "--",
		"python3", filepath.Join(root, "tracer/testdata/workload.py"), "4"}); code != 0 {
		t.Fatalf("run exited %d", code)
	}
	dirs, _ := filepath.Glob(filepath.Join(base, "session_*"))
	s, err := export.Load(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	launches := map[string]int{}
	phaseName := map[uint16]string{}
	for _, st := range s.Streams {
		for _, d := range st.PhaseDefs {
			name, _, _ := strings.Cut(string(d.Name), "\t")
			phaseName[d.Phase] = name
		}
		for _, l := range st.Launches {
			launches[phaseName[l.Phase]]++
		}
	}
	// Per step (workload.py): schedule 2 copies, prepare_inputs 3 memsets, execute_model 5+1+1,
	// sampler 2+2 (one in a thread), sample_tokens 1 copy, update 1, and 1 launch outside.
	want := map[string]int{"scheduler.schedule": 8, "runner.prepare_inputs": 12, "runner.execute_model": 28,
		"sampler.forward": 16, "runner.sample_tokens": 4, "scheduler.update": 4, "": 4}
	for k, v := range want {
		if launches[k] != v {
			t.Errorf("phase %q: %d launches, want %d (all: %v)", k, launches[k], v, launches)
		}
	}
}

// A traced process in its own pid namespace (a container): its stream is named by its host
// pid, records the namespace pid, and maps the namespace thread ids that CUPTI reports to
// host thread ids. Needs root for unshare (CI runs as root).
func TestRunInPidNamespace(t *testing.T) {
	requireRoot(t)
	agent, lib := testlibs(t)
	t.Setenv("LD_LIBRARY_PATH", lib)
	t.Setenv("PROFILEMATE_CUPTI_PATH", filepath.Join(lib, "libcupti.so.13"))
	r, w, _ := os.Pipe()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old }()
	go func() {
		time.Sleep(1500 * time.Millisecond) // several collector scans while the process lives
		w.Write([]byte("quit\n"))
		w.Close()
	}()
	base := t.TempDir()
	code := run([]string{"profilemate-trace", "run", "--agent", agent, "--no-pyhook", "--no-ebpf", "--no-bundle", "-o", base, "--",
		"unshare", "--pid", "--fork", "--mount-proc", filepath.Join(lib, "e2e_prog"), "basic"})
	if code != 0 {
		t.Fatalf("run exited %d", code)
	}
	dirs, _ := filepath.Glob(filepath.Join(base, "session_*"))
	s, err := export.Load(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, st := range s.Streams {
		if st.Meta.Source != "cupti" {
			continue
		}
		found = true
		if st.Meta.NsPid != 1 || st.Meta.Pid == 1 || !strings.HasPrefix(st.File, "raw/"+strconv.Itoa(st.Meta.Pid)+".") {
			t.Errorf("stream %s: pid %d, ns pid %d; want the host pid in the name and ns pid 1", st.File, st.Meta.Pid, st.Meta.NsPid)
		}
		m := map[uint32]uint32{}
		for _, b := range st.Other[record.TypeTIDMap] {
			tm, err := record.DecodeTIDMap(b)
			if err != nil {
				t.Fatal(err)
			}
			m[tm.NSTID] = tm.HostTID
		}
		if m[1] != uint32(st.Meta.Pid) {
			t.Errorf("tid map %v: namespace tid 1 should map to host pid %d", m, st.Meta.Pid)
		}
		mainAPIs := 0
		for _, a := range st.APIs {
			if a.TID == 1 {
				mainAPIs++
			}
		}
		if mainAPIs == 0 {
			t.Error("no API record on the main thread (namespace tid 1)")
		}
	}
	if !found {
		t.Fatal("no CUPTI stream from the namespaced process")
	}
}

// unavailable skips a test whose prerequisite is missing here (why says which and how to get
// it), except under CI=true: CI runs as root on x86-64 and installs every prerequisite, so a
// skip there would hide a broken setup and the test fails instead. Only GPU tests skip in CI.
func unavailable(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: CI provides this, so the missing prerequisite is a failure)")
	}
	t.Skip(why)
}

// requireRoot: the test needs root (see unavailable).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "test requires root")
	}
}
