package export

import (
	"path/filepath"
	"strconv"
	"testing"
)

// h100Bundle is the real recording the lead makes on the H100 (make demo reads it too).
const h100Bundle = "../testdata/h100/session.tar.zst"

// TestH100Bundle checks invariants of the real H100 recording. The exact expected values
// are wired by the lead once the recording exists (see testdata/h100/README).
func TestH100Bundle(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	s, err := Export(h100Bundle, out)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range s.Warnings {
		t.Log("warning:", w)
	}
	kernels, graphs, apis := 0, 0, 0
	for _, st := range s.Streams {
		kernels += len(st.Kernels)
		graphs += len(st.Graphs)
		apis += len(st.APIs)
		for _, k := range st.Kernels {
			if k.EndNS < k.StartNS {
				t.Errorf("%s: kernel ends before it starts", st.File)
				break
			}
		}
	}
	if kernels+graphs == 0 || apis == 0 {
		t.Fatalf("no GPU or api records (kernels %d, graphs %d, api %d)", kernels, graphs, apis)
	}
	// every GPU record of a process joins to an api record (correlation ids), bar a few
	// launched before collection started
	j := s.join()
	joined, total := 0, 0
	for _, p := range j.procs {
		for i := range p.gpu {
			total++
			if p.gpu[i].api >= 0 {
				joined++
			}
		}
	}
	if float64(joined) < 0.95*float64(total) {
		t.Errorf("only %d of %d GPU records joined to their api record", joined, total)
	}
	// percentages of gpu_kernels.csv sum to 100
	k := readCSV(t, filepath.Join(out, "gpu_kernels.csv"))
	var sum float64
	for _, v := range col(t, k, "gpu_time_pct") {
		f, _ := strconv.ParseFloat(v, 64)
		sum += f
	}
	if len(k) > 1 && (sum < 99 || sum > 101) {
		t.Errorf("gpu_time_pct sums to %.2f", sum)
	}
	// a forward pass's GPU time fits in its GPU span; graph replays carry descriptors
	f := readCSV(t, filepath.Join(out, "forward_pass_timing.csv"))
	busy, span := col(t, f, "gpu_time_us"), col(t, f, "gpu_span_us")
	for i := range busy {
		b, _ := strconv.ParseFloat(busy[i], 64)
		sp, _ := strconv.ParseFloat(span[i], 64)
		if busy[i] != "" && b > sp+0.001 {
			t.Errorf("step %d: GPU time %v > span %v", i, b, sp)
		}
	}
	if graphs > 0 && len(f) > 1 {
		u := readCSV(t, filepath.Join(out, "cuda_graph_usage.csv"))
		withDesc := 0
		for _, m := range col(t, u, "runtime_mode") {
			if m != "" {
				withDesc++
			}
		}
		if withDesc == 0 {
			t.Error("no CUDA graph was joined to a BatchDescriptor")
		}
	}
	if err := WriteReportFile(s, filepath.Join(t.TempDir(), "r.html")); err != nil {
		t.Fatal(err)
	}
}
