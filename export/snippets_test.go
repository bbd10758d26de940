package export

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The analysis examples of the original ProfileMate README (pandas, awk, sort, cut, wc),
// copied verbatim into testdata/snippets/ (01.py … 09.py, in document order), run
// unmodified in an exported session directory. Only the lines that start a vLLM server
// (`python -m vllm…`, `--max-model-len`) are left out. Needs python3 with pandas and
// matplotlib (CI: pip install pandas matplotlib).

func runSnippet(t *testing.T, dir, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "snippets", file))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "python -m vllm") || strings.HasPrefix(l, "--max-model-len") {
			continue
		}
		lines = append(lines, l)
	}
	src := strings.Join(lines, "\n")
	var cmd *exec.Cmd
	if strings.HasSuffix(file, ".py") {
		cmd = exec.Command("python3", "-c", src)
	} else {
		cmd = exec.Command("bash", "-e", "-o", "pipefail", "-c", src)
	}
	cmd.Dir = dir
	// the snippets call `python`; make sure it is python3
	bin := t.TempDir()
	if py, err := exec.LookPath("python3"); err == nil {
		os.Symlink(py, filepath.Join(bin, "python"))
	}
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "MPLBACKEND=Agg")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s failed: %v\n%s", file, err, out)
	}
	return string(out)
}

func TestDocumentedSnippets(t *testing.T) {
	if err := exec.Command("python3", "-c", "import pandas, matplotlib").Run(); err != nil {
		t.Fatal("the documented snippets need python3 with pandas and matplotlib: pip install pandas matplotlib")
	}
	dir := exportGolden(t)
	cases := []struct {
		file string
		want []string
	}{
		// pandas: top graphs, KV plot, MoE per layer (moe_expert_tracking/ path)
		{"01.py", []string{"Top 10 CUDA Graphs:", "Layer 0:", "Expert coverage: 4/4", "Activation range: 14.29% - 42.86%", "Load balance ratio: 3.00",
			"Layer 1:", "Expert coverage: 3/3", "Load balance ratio: 1.00"}},
		// wc -l (3 lines: header + 2 captured descriptors); sort -k6 (graph 7 with 4 replays first);
		// awk mean usage (3+1+2+1+3)/5 = 2; peak usage 3.00
		{"02.sh", []string{"3 cuda_graph_captures.csv", "FULL,8,8,True,False,4,7,", "\n2\n", "3.00,3,100"}},
		// num_tokens column counted (graph 9 has no descriptor: an empty cell)
		{"03.sh", []string{"1 8\n", "1 16\n", "1 num_tokens"}},
		{"04.sh", []string{"3.00,3,100"}},
		// replays 4 + 1 + 1
		{"05.sh", []string{"Total CUDA graph replays: 6"}},
		// no eviction had lifetime < 10 s
		{"06.sh", []string{" blocks evicted quickly"}},
		// 2 layers; ratios
		{"07.sh", []string{"2\n", "Layer 0: load balance ratio = 3.00", "Layer 1: load balance ratio = 1.00"}},
		// head of coselection, weight stats (uniform over 0.25..0.75)
		{"08.sh", []string{"layer_idx,expert_id_1,expert_id_2,coselection_count", "0,2,3,10", "Mean: 0.5000", "Min: 0.2525", "Max: 0.7475"}},
		{"09.py", []string{`vllm_kv_cache_usage{timestamp="1.0"} 3.0`}},
	}
	for _, c := range cases {
		out := runSnippet(t, dir, c.file)
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", c.file, w, out)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "kv_cache_usage.png")); err != nil {
		t.Errorf("01.py did not save its plot: %v", err)
	}
}
