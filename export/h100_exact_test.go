package export

import (
	"strings"
	"testing"
)

// The exact content of the real H100 recording (testdata/h100/README.md): what
// scripts/gpu/workload.py launched, per process, as CUPTI and eBPF saw it.
func TestH100BundleExact(t *testing.T) {
	s, err := Load(h100Bundle)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		needle  string
		kernels int
	}
	byPid := map[int][]want{
		503: {{"sin_kernel_cuda", 300}, {"nvjet_sm90", 40}, {"pm_triton_axpy", 61}},
		510: {{"exp_kernel_cuda", 30}},   // multiprocessing fork child, left through os._exit
		586: {{"log1p_kernel_cuda", 30}}, // spawn child
	}
	seen := map[int]bool{}
	for _, st := range s.Streams {
		switch st.Meta.Source {
		case "cupti":
			seen[st.Meta.Pid] = true
			for _, w := range byPid[st.Meta.Pid] {
				n := 0
				for _, k := range st.Kernels {
					if strings.Contains(st.Names[k.NameID], w.needle) {
						n++
					}
				}
				if n != w.kernels {
					t.Errorf("pid %d: %d %s kernels, want %d", st.Meta.Pid, n, w.needle, w.kernels)
				}
			}
			if st.Meta.Pid == 503 {
				var h2d, d2h uint64
				for _, m := range st.Memcpys {
					switch m.CopyKind {
					case 1:
						h2d += m.Bytes
					case 2:
						d2h += m.Bytes
					}
				}
				if len(st.Graphs) != 200 || h2d != 8<<20 || d2h != 8<<20 {
					t.Errorf("main process: %d graph replays, %d H2D, %d D2H bytes; want 200, 8 MiB, 8 MiB", len(st.Graphs), h2d, d2h)
				}
			}
		case "ebpf":
			if st.Meta.Pid == 503 && len(st.Launches) == 0 {
				t.Error("no eBPF launch records for the main process")
			}
		}
	}
	for pid := range byPid {
		if !seen[pid] {
			t.Errorf("no CUPTI stream for pid %d", pid)
		}
	}
}

// The attach recording: a dormant process (CUPTI untouched) attached for 3 s at graph level.
func TestH100AttachBundle(t *testing.T) {
	s, err := Load("../testdata/h100/attach.tar.zst")
	if err != nil {
		t.Fatal(err)
	}
	var kernels, inGraphs int
	late := false
	for _, st := range s.Streams {
		if st.Meta.Source != "cupti" {
			continue
		}
		kernels += len(st.Kernels)
		for _, k := range st.Kernels {
			if k.GraphID != 0 {
				inGraphs++
			}
		}
		for _, l := range st.Logs {
			if strings.Contains(string(l.Text), "armed CUPTI at the first enable") {
				late = true
			}
		}
	}
	// 364,756 kernels, 343,294 of them graph nodes: graph replays come per node after a late arm.
	if kernels != 364756 || inGraphs != 343294 || !late {
		t.Errorf("attach bundle: %d kernels, %d in graphs, late arm logged %v", kernels, inGraphs, late)
	}
	// Without graph-level records the node kernels of each launch fold into one replay:
	// 7,006 launches of a 49-node graph.
	usage, _ := graphUsage(s)
	if len(usage.rows) != 1 || usage.rows[0][5] != "7006" {
		t.Errorf("cuda_graph_usage.csv rows %v, want one graph with 7006 replays", usage.rows)
	}
}
