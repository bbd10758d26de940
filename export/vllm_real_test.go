package export

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/profilemate/profilemate-trace/export/exporttest"
)

// A real vLLM 0.26.0 engine (V2 model runner, FULL CUDA graphs, Triton attention, dummy
// weights) under `profilemate-trace run --detail graph` (testdata/vllm/README.md). The
// exported files must agree with what vLLM itself reported for the same run
// (testdata/vllm/run-graph.vllm.json) and with each other.
func TestRealVLLMBundleAgreesWithVLLM(t *testing.T) {
	out := t.TempDir()
	if _, err := Export("../testdata/vllm/run-graph.tar.zst", out); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Requests     int   `json:"requests"`
		OutputTokens int   `json:"output_tokens"`
		NumGPUBlocks int   `json:"num_gpu_blocks"`
		CaptureSizes []int `json:"cudagraph_capture_sizes"`
	}
	raw, err := os.ReadFile("../testdata/vllm/run-graph.vllm.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	var m struct {
		MetricsAfter map[string]float64 `json:"metrics_after"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []map[string]string {
		rows, err := exporttest.CSVRows(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }

	// Preemptions: vLLM's own counter (vllm:num_preemptions, warm-up included) at the end.
	preempted, resumed := 0, 0
	for _, r := range read("preemption_events.csv") {
		switch r["event"] {
		case "preempted":
			preempted++
		case "resumed":
			resumed++
		}
	}
	if want := int(m.MetricsAfter["vllm:num_preemptions"]); preempted != want || resumed != want {
		t.Errorf("preemption_events.csv: %d preempted, %d resumed; vLLM counted %d preemptions", preempted, resumed, want)
	}
	// Requests: the measured load plus the 32 warm-up requests; every one finished.
	finished, outTok := 0, 0
	for _, r := range read("request_lifecycle.csv") {
		if r["finished_sec"] != "" {
			finished++
			outTok += atoi(r["num_output_tokens"])
		}
	}
	if finished != v.Requests+32 || outTok < v.OutputTokens || outTok != 40576 {
		t.Errorf("request_lifecycle.csv: %d finished, %d output tokens; vLLM: %d measured (+32 warm-up), %d output tokens measured (40576 with warm-up)",
			finished, outTok, v.Requests, v.OutputTokens)
	}
	// KV cache: vLLM keeps block 0 as its null block, so the pool hands out num_gpu_blocks-1.
	kv := read("kv_cache_usage.csv")
	peak := 0.0
	for _, r := range kv {
		if atoi(r["total_blocks"]) != v.NumGPUBlocks-1 {
			t.Fatalf("kv_cache_usage.csv total_blocks %s, vLLM num_gpu_blocks %d", r["total_blocks"], v.NumGPUBlocks)
		}
		if p, _ := strconv.ParseFloat(r["usage_pct"], 64); p > peak {
			peak = p
		}
	}
	if len(kv) == 0 || peak != 100 {
		t.Errorf("kv_cache_usage.csv: %d rows, peak %.1f%%; the load was sized to fill the cache (it preempted)", len(kv), peak)
	}
	// CUDA graphs: one capture per size vLLM chose, and every graph replay on the GPU is a
	// forward pass the hook saw run through a CUDA graph.
	var sizes []int
	for _, r := range read("cuda_graph_captures.csv") {
		sizes = append(sizes, atoi(r["num_tokens"]))
	}
	sort.Ints(sizes)
	if len(sizes) != len(v.CaptureSizes) {
		t.Errorf("cuda_graph_captures.csv sizes %v, vLLM capture sizes %v", sizes, v.CaptureSizes)
	} else {
		for i := range sizes {
			if sizes[i] != v.CaptureSizes[i] {
				t.Errorf("cuda_graph_captures.csv sizes %v, vLLM capture sizes %v", sizes, v.CaptureSizes)
				break
			}
		}
	}
	replays := 0
	for _, r := range read("cuda_graph_usage.csv") {
		replays += atoi(r["replay_count"])
	}
	graphSteps, prefillGPU := 0, 0
	for _, r := range read("forward_pass_timing.csv") {
		if r["cuda_graph"] == "True" {
			graphSteps++
		}
		if r["phase"] == "prefill" && r["gpu_time_us"] != "" && r["gpu_time_us"] != "0" {
			prefillGPU++
		}
	}
	if replays != 1963 || graphSteps != replays {
		t.Errorf("%d graph replays on the GPU, %d forward passes through a CUDA graph; want 1963 each", replays, graphSteps)
	}
	if prefillGPU == 0 {
		t.Error("no prefill forward pass with GPU time")
	}
}
