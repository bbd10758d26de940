package export

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profilemate/profilemate-trace/export/exporttest"
	"github.com/profilemate/profilemate-trace/internal/record"
)

// Timeline of the hand-computed session (ms after the session start at 1 s).
const (
	t0   = uint64(1_000_000_000)
	ms   = uint64(1_000_000)
	us1  = uint64(1_000)
	wtid = 11 // worker thread
	wpid = 100
	spid = 200 // scheduler process
)

func at(msec float64) uint64 { return t0 + uint64(msec*float64(ms)) }

// golden builds the session every join test checks by hand (see the comments for the
// expected values).
func golden(t testing.TB) string {
	b := exporttest.New(t0)
	cu := b.Stream(wpid, "cupti")
	py := b.Stream(wpid, "pyhook")
	cu.Add(exporttest.Name(1, "_Z16flash_fwd_kernelILi128EEvPf"), exporttest.Name(2, "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT"),
		exporttest.Name(3, "fused_moe_kernel"), exporttest.Name(4, "ncclDevKernel_AllReduce_Sum_bf16_RING_LL"))
	// step 1, prefill, eager: flash 105-107 ms, nvjet 107-110, memcpy 109.5-111 -> union 105-111 = 6000 us
	py.Add(exporttest.Forward(1, wtid, 1, 512, 2, at(100), at(110)), exporttest.Dispatch(1, wtid, 0, 512, -1, false, at(101)))
	cu.Add(exporttest.API(1, wtid, 307, at(102), at(102.1)), exporttest.Kernel(1, 1, at(105), at(107)))
	cu.Add(exporttest.API(2, wtid, 307, at(103), at(103.1)), exporttest.Kernel(2, 2, at(107), at(110)))
	cu.Add(exporttest.API(3, wtid, 279, at(104), at(104.1)), exporttest.Memcpy(3, 4096, at(109.5), at(111)))
	// step 2, decode, FULL 8/8: graph 7, 400 us
	py.Add(exporttest.Forward(2, wtid, 2, 8, 8, at(200), at(205)), exporttest.Dispatch(2, wtid, 2, 8, 8, true, at(201)))
	cu.Add(exporttest.API(10, wtid, 514, at(202), at(202.05)), exporttest.Graph(10, 7, at(203), at(203.4)))
	// step 3, decode, FULL 16/16: graph 8 600 us, moe 100 us, nccl 200 us -> busy 900, span 1000
	py.Add(exporttest.Forward(3, wtid, 2, 16, 16, at(300), at(305)), exporttest.Dispatch(3, wtid, 2, 16, 16, true, at(301)))
	cu.Add(exporttest.API(20, wtid, 514, at(302), at(302.05)), exporttest.Graph(20, 8, at(303), at(303.6)))
	cu.Add(exporttest.API(21, wtid, 307, at(302.5), at(302.55)), exporttest.Kernel(21, 3, at(303.7), at(303.8)))
	cu.Add(exporttest.API(22, wtid, 307, at(302.6), at(302.65)), exporttest.Kernel(22, 4, at(303.8), at(304)))
	// step 4, decode, FULL 8/8: graph 7 500 us
	py.Add(exporttest.Forward(4, wtid, 2, 8, 8, at(400), at(405)), exporttest.Dispatch(4, wtid, 2, 8, 8, true, at(401)))
	cu.Add(exporttest.API(30, wtid, 514, at(402), at(402.05)), exporttest.Graph(30, 7, at(403), at(403.5)))
	// graph 7 launched outside any forward pass: takes the last dispatch (8/8), 200 us
	cu.Add(exporttest.API(40, wtid, 514, at(500), at(500.05)), exporttest.Graph(40, 7, at(503), at(503.2)))
	// graph 7 replay whose api record was lost: the graph's descriptor, 300 us
	cu.Add(exporttest.Graph(41, 7, at(600), at(600.3)))
	// step 5: graph 9 launched with no dispatch inside the step: no descriptor, 100 us
	py.Add(exporttest.Forward(5, wtid, 2, 4, 4, at(700), at(705)))
	cu.Add(exporttest.API(50, wtid, 514, at(702), at(702.05)), exporttest.Graph(50, 9, at(703), at(703.1)))

	// eBPF: one launch inside api record 1
	eb := b.Stream(wpid, "ebpf")
	eb.Add(record.AppendEbpfPhaseDef(nil, &record.EbpfPhaseDef{Phase: 1, Name: []byte("forward\tGPUModelRunner.execute_model\t")}),
		record.AppendEbpfCodeInfo(nil, &record.EbpfCodeInfo{Code: 0xabc, PID: wpid, Name: []byte("Attention.forward\tattn.py")}),
		record.AppendEbpfLaunch(nil, &record.EbpfLaunch{TsNS: at(102.05), PID: wpid, TID: wtid, API: 3, Phase: 1, PyCode: 0xabc}),
		// a driver entry probed 10 us before CUPTI's driver record of the same call starts
		record.AppendEbpfLaunch(nil, &record.EbpfLaunch{TsNS: at(302.49), PID: wpid, TID: wtid, API: 1, Phase: 1}),
		record.AppendEbpfLaunch(nil, &record.EbpfLaunch{TsNS: at(900), PID: wpid, TID: wtid, API: 3, Phase: 0}),
		record.AppendEbpfSync(nil, &record.EbpfSync{StartNS: at(206), EndNS: at(206.25), PID: wpid, TID: wtid, API: 9, Phase: 1}))
	// encoder calls: one inside step 1 that launched api 1 (flash, 2000 us GPU, joined from
	// CUPTI), one with CUDA-event GPU time 700 us
	py.Add(record.AppendPyEncoder(nil, &record.PyEncoder{StartNS: at(101.9), EndNS: at(102.2), StepID: 1, TID: wtid, NumItems: 2, Runner: 1}),
		record.AppendPyEncoder(nil, &record.PyEncoder{StartNS: at(800), EndNS: at(801), GPUNS: 700 * us1, StepID: 6, TID: wtid, NumItems: 1, Runner: 1}))

	// MoE, layer 0: 4 experts, top-2
	py.Add(record.AppendPyMOEExpertCounts(nil, &record.PyMOEExpertCounts{TsNS: at(1000), WindowStartNS: at(0), LayerIdx: 0, NumExperts: 4, TopK: 2, Counts: exporttest.U64s(10, 20, 30, 40)}),
		record.AppendPyMOEExpertCounts(nil, &record.PyMOEExpertCounts{TsNS: at(2000), WindowStartNS: at(1000), LayerIdx: 0, NumExperts: 4, TopK: 2, Counts: exporttest.U64s(10, 0, 30, 0)}),
		record.AppendPyMOEExpertCounts(nil, &record.PyMOEExpertCounts{TsNS: at(2000), WindowStartNS: at(0), LayerIdx: 1, NumExperts: 4, TopK: 2, Counts: exporttest.U64s(5, 5, 5, 0)}),
		record.AppendPyMOECoselect(nil, &record.PyMOECoselect{TsNS: at(1000), LayerIdx: 0, NumExperts: 4, Pairs: exporttest.U32s(0, 1, 7, 2, 3, 9)}),
		record.AppendPyMOECoselect(nil, &record.PyMOECoselect{TsNS: at(2000), LayerIdx: 0, NumExperts: 4, Pairs: exporttest.U32s(2, 3, 1)}),
		record.AppendPyMOEWeightHist(nil, &record.PyMOEWeightHist{TsNS: at(2000), Lo: 0, Hi: 1, LayerIdx: 0, NumBins: 4, Bins: exporttest.U64s(0, 10, 10, 0)}))

	// scheduler process: KV pool of 100 usable blocks (101 with the null block)
	sp := b.Stream(spid, "pyhook")
	sp.Add(record.AppendPyKVConfig(nil, &record.PyKVConfig{TsNS: at(0), PoolID: 0, NumGPUBlocks: 101, BlockSize: 16, EnableCaching: 1}))
	sp.Add(exporttest.KV(kvAlloc, 0, 97, 0, at(1000), 1, 2, 3), // 3 %
		exporttest.KV(kvFree, 0, 99, 0, at(2000), 1, 2),   // 1 %
		exporttest.KV(kvTouch, 0, 98, 1, at(3000), 1),     // 2 %
		exporttest.KV(kvFree, 0, 99, 0, at(4000), 1),      // 1 %
		exporttest.KV(kvEvict, 0, 99, 0, at(19000), 1),    // lifetime 18 s, idle 15 s
		exporttest.KV(kvEvict, 0, 99, 0, at(19000), 2),    // lifetime 18 s, idle 17 s
		exporttest.KV(kvEvict, 0, 99, 0, at(19000), 9),    // allocated before tracing: unknown
		exporttest.KV(kvAlloc, 0, 97, 0, at(19000), 1, 2)) // 3 %
	sp.Add(record.AppendPySchedStep(nil, &record.PySchedStep{StartNS: at(99), EndNS: at(99.1), StepID: 1, TID: 5, ScheduledTokens: 512, ScheduledReqs: 2,
		MaxNumBatchedTokens: 2048, MaxNumSeqs: 256, NumWaiting: 3, NumRunning: 2, NumNewReqs: 2, NumPrefillReqs: 2, NumPrefillTokens: 512}),
		record.AppendPySchedStep(nil, &record.PySchedStep{StartNS: at(199), EndNS: at(199.2), StepID: 2, TID: 5, ScheduledTokens: 1024, ScheduledReqs: 8,
			MaxNumBatchedTokens: 2048, MaxNumSeqs: 256, NumRunning: 8, NumDecodeReqs: 8, NumDecodeTokens: 1024}))
	req := func(ev, detail uint32, msec float64) []byte {
		return record.AppendPyRequestEvent(nil, &record.PyRequestEvent{TsNS: at(msec), ReqHash: 42, TID: 5, Event: ev, Detail: detail, NumPromptTokens: 100, NumOutputTokens: 7, ReqID: []byte("r1")})
	}
	sp.Add(req(1, 0, 500), req(3, 0, 600), req(4, 0, 700), req(5, 1, 800), req(6, 0, 1300), req(7, 1, 2000))
	sp.Add(record.AppendPyPreempt(nil, &record.PyPreempt{TsNS: at(800), StepID: 9, ReqHash: 42, TID: 5, Reason: 1, NumComputedTokens: 100, NumPreemptions: 1, ReqID: []byte("r1")}))
	sp.Add(record.AppendPyCPUScope(nil, &record.PyCPUScope{StartNS: at(99), EndNS: at(99.1), StepID: 1, TID: 5, Scope: 1, Name: []byte("schedule")}),
		record.AppendPyCPUScope(nil, &record.PyCPUScope{StartNS: at(199), EndNS: at(199.1), StepID: 2, TID: 5, Scope: 1, Name: []byte("schedule")}),
		record.AppendPyCPUScope(nil, &record.PyCPUScope{StartNS: at(210), EndNS: at(210.05), StepID: 2, TID: 5, Scope: 4, Name: []byte("sample")}))
	// graph capture: FULL 8/8 (two pieces of the same descriptor) and a throw-away capture
	py.Add(record.AppendPyGraphCapture(nil, &record.PyGraphCapture{StartNS: at(10), EndNS: at(20), TID: wtid, RuntimeMode: 2, NumTokens: 8, NumReqs: 8, Flags: 1, Source: 1}),
		record.AppendPyGraphCapture(nil, &record.PyGraphCapture{StartNS: at(21), EndNS: at(31), TID: wtid, RuntimeMode: 2, NumTokens: 8, NumReqs: 8, Flags: 1, Source: 1}),
		record.AppendPyGraphCapture(nil, &record.PyGraphCapture{StartNS: at(40), EndNS: at(50), TID: wtid, RuntimeMode: 1, NumTokens: 1024, NumReqs: -1, Source: 1}),
		record.AppendPyGraphCapture(nil, &record.PyGraphCapture{StartNS: at(5), EndNS: at(6), TID: wtid, RuntimeMode: 2, NumTokens: 4, NumReqs: 4, Flags: 32, Source: 1}))
	dir := filepath.Join(t.TempDir(), "session_20261127_000000")
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readCSV(t *testing.T, p string) [][]string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// col returns the named column of rows (header first).
func col(t *testing.T, rows [][]string, name string) []string {
	t.Helper()
	for i, h := range rows[0] {
		if h == name {
			var v []string
			for _, r := range rows[1:] {
				v = append(v, r[i])
			}
			return v
		}
	}
	t.Fatalf("no column %s in %v", name, rows[0])
	return nil
}

func eq(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}

func exportGolden(t *testing.T) string {
	t.Helper()
	src := golden(t)
	out := filepath.Join(t.TempDir(), "out")
	s, err := Export(src, out)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range s.Warnings {
		t.Log("warning:", w)
	}
	return out
}

func TestGoldenGraphJoin(t *testing.T) {
	out := exportGolden(t)
	u := readCSV(t, filepath.Join(out, "cuda_graph_usage.csv"))
	eq(t, "usage header", u[0][:6], []string{"runtime_mode", "num_tokens", "num_reqs", "uniform", "has_lora", "replay_count"})
	// graph 7: 4 replays (dispatch 8/8 for three, the graph's own descriptor for the one with no api record)
	eq(t, "graph 7", u[1][:14], []string{"FULL", "8", "8", "True", "False", "4", "7", "100", "0", "1400.000", "350.000", "300.000", "500.000", "0.203000"})
	eq(t, "graph 8", u[2][:10], []string{"FULL", "16", "16", "True", "False", "1", "8", "100", "0", "600.000"})
	eq(t, "graph 9 has no descriptor", u[3][:10], []string{"", "", "", "", "", "1", "9", "100", "0", "100.000"})
	eq(t, "graph 7 pct", col(t, u, "gpu_time_pct")[:1], []string{"66.67"})
	tl := readCSV(t, filepath.Join(out, "cuda_graph_timeline.csv"))
	eq(t, "timeline source", col(t, tl, "descriptor_source"), []string{"dispatch", "dispatch", "dispatch", "dispatch", "graph", ""})
	eq(t, "timeline tokens", col(t, tl, "num_tokens"), []string{"8", "16", "8", "8", "8", ""})
	eq(t, "timeline step", col(t, tl, "step_id"), []string{"2", "3", "4", "", "", "5"})
	eq(t, "timeline gpu", col(t, tl, "gpu_duration_us"), []string{"400.000", "600.000", "500.000", "200.000", "300.000", "100.000"})

	c := readCSV(t, filepath.Join(out, "cuda_graph_captures.csv"))
	eq(t, "captures header", c[0][:6], []string{"runtime_mode", "num_tokens", "num_reqs", "uniform", "has_lora", "capture_time_sec"})
	eq(t, "capture 1", c[1][:8], []string{"FULL", "8", "8", "True", "False", "0.010", "0.020000", "2"})
	eq(t, "capture 2", c[2][:6], []string{"PIECEWISE", "1024", "None", "False", "False", "0.040"})
	if len(c) != 3 {
		t.Errorf("captures: %d rows, want 2 (throw-away capture left out)", len(c)-1)
	}
}

func TestGoldenForward(t *testing.T) {
	out := exportGolden(t)
	f := readCSV(t, filepath.Join(out, "forward_pass_timing.csv"))
	eq(t, "phase", col(t, f, "phase"), []string{"prefill", "decode", "decode", "decode", "decode"})
	eq(t, "gpu_time_us", col(t, f, "gpu_time_us"), []string{"6000.000", "400.000", "900.000", "500.000", "100.000"})
	eq(t, "gpu_span_us", col(t, f, "gpu_span_us"), []string{"6000.000", "400.000", "1000.000", "500.000", "100.000"})
	eq(t, "cpu_time_us", col(t, f, "cpu_time_us"), []string{"10000.000", "5000.000", "5000.000", "5000.000", "5000.000"})
	eq(t, "launches", col(t, f, "gpu_launches"), []string{"3", "1", "3", "1", "1"})
	eq(t, "cuda_graph", col(t, f, "cuda_graph"), []string{"False", "True", "True", "True", "True"})
	eq(t, "runtime_mode", col(t, f, "runtime_mode"), []string{"NONE", "FULL", "FULL", "FULL", ""})
	var sum struct {
		Phases map[string]struct {
			GPU pctStats `json:"gpu_time_us"`
		} `json:"phases"`
		Cov graphCoverage `json:"cuda_graph_coverage"`
	}
	readJSON(t, filepath.Join(out, "forward_pass_summary.json"), &sum)
	d := sum.Phases["decode"].GPU
	// decode steps 400, 900, 500, 100: p50 (nearest rank) 400, p95 = p99 = 900
	if d.Count != 4 || d.P50 != 400 || d.P95 != 900 || d.P99 != 900 || d.Total != 1900 {
		t.Errorf("decode stats %+v", d)
	}
	// graph time 400+600+500+200+300+100 = 2100 of 2100 + eager 2000+3000+1500+100+200 = 8900 -> 23.596 %
	if sum.Cov.GPUTimeUnderGraphsPct != 23.596 || sum.Cov.StepsUnderGraphs != 4 || sum.Cov.Steps != 5 || sum.Cov.Replays != 6 {
		t.Errorf("coverage %+v", sum.Cov)
	}
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func TestGoldenCategories(t *testing.T) {
	out := exportGolden(t)
	c := readCSV(t, filepath.Join(out, "kernel_categories.csv"))
	got := map[string]string{}
	for _, r := range c[1:] {
		got[r[0]+"/"+r[1]] = r[3]
	}
	want := map[string]string{
		"all/attention": "2000.000", "all/ffn": "3000.000", "all/moe": "100.000", "all/communication": "200.000",
		"all/cuda_graph": "2100.000", "all/memcpy": "1500.000",
		"prefill/attention": "2000.000", "prefill/ffn": "3000.000", "prefill/memcpy": "1500.000",
		"decode/moe": "100.000", "decode/communication": "200.000", "decode/cuda_graph": "1600.000",
		"unattributed/cuda_graph": "500.000",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	k := readCSV(t, filepath.Join(out, "gpu_kernels.csv"))
	eq(t, "kernel order", col(t, k, "kernel_name"), []string{"nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "flash_fwd_kernel", "ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "fused_moe_kernel"})
	eq(t, "kernel category", col(t, k, "category"), []string{"ffn", "attention", "communication", "moe"})
	eq(t, "kernel prefill", col(t, k, "prefill_us"), []string{"3000.000", "2000.000", "0.000", "0.000"})
}

func TestGoldenKernelRulesOverride(t *testing.T) {
	s, err := Load(golden(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetKernelRules([]KernelRule{{"attention", "nvjet"}}); err != nil {
		t.Fatal(err)
	}
	by, _ := categories(s)
	if by["all"][CatAttention].ns != 5000*us1 || by["all"][CatFFN] != nil {
		t.Errorf("override: attention %v", by["all"][CatAttention])
	}
}

func TestGoldenKV(t *testing.T) {
	out := exportGolden(t)
	u := readCSV(t, filepath.Join(out, "kv_cache_usage.csv"))
	eq(t, "kv header", u[0][:4], []string{"timestamp_sec", "usage_pct", "num_blocks", "total_blocks"})
	eq(t, "usage", col(t, u, "usage_pct"), []string{"3.00", "1.00", "2.00", "1.00", "3.00"})
	eq(t, "ts", col(t, u, "timestamp_sec"), []string{"1.000000", "2.000000", "3.000000", "4.000000", "19.000000"})
	eq(t, "total", col(t, u, "total_blocks"), []string{"100", "100", "100", "100", "100"})
	e := readCSV(t, filepath.Join(out, "kv_cache_evictions.csv"))
	eq(t, "evictions header", e[0][:3], []string{"timestamp_sec", "lifetime_sec", "idle_sec"})
	eq(t, "lifetime", col(t, e, "lifetime_sec"), []string{"18.000", "18.000"})
	eq(t, "idle", col(t, e, "idle_sec"), []string{"15.000", "17.000"})
	txt, _ := os.ReadFile(filepath.Join(out, "kv_cache_summary.txt"))
	for _, want := range []string{"1 more of blocks allocated before tracing", "OVER-PROVISIONED", "mean 2.00"} {
		if !strings.Contains(string(txt), want) {
			t.Errorf("kv_cache_summary.txt lacks %q:\n%s", want, txt)
		}
	}
}

func TestGoldenMoE(t *testing.T) {
	out := exportGolden(t)
	for _, dir := range []string{out, filepath.Join(out, moeDir)} {
		a := readCSV(t, filepath.Join(dir, "moe_expert_activations.csv"))
		eq(t, "activations header", a[0][:4], []string{"layer_idx", "expert_id", "activation_count", "percentage"})
		eq(t, "counts", col(t, a, "activation_count"), []string{"20", "20", "60", "40", "5", "5", "5"})
		eq(t, "pct", col(t, a, "percentage"), []string{"14.29", "14.29", "42.86", "28.57", "33.33", "33.33", "33.33"})
	}
	imb := readCSV(t, filepath.Join(out, "moe_load_imbalance.csv"))
	eq(t, "std", col(t, imb, "std_dev")[:2], []string{"11.18", "12.25"})
	eq(t, "ratio", col(t, imb, "max_min_ratio")[:2], []string{"4.00", "inf"})
	c := readCSV(t, filepath.Join(out, "moe_expert_coselection.csv"))
	eq(t, "cosel", col(t, c, "coselection_count"), []string{"10", "7"})
	eq(t, "cosel e1", col(t, c, "expert_id_1"), []string{"2", "0"})
	h := readCSV(t, filepath.Join(out, "moe_routing_weights_hist.csv"))
	w := col(t, h, "weight")
	if len(w) != weightPoints || w[0] != "0.252500" || w[len(w)-1] != "0.747500" {
		t.Errorf("weights: %d points, %v … %v", len(w), w[0], w[len(w)-1])
	}
	var sum struct {
		Layers []moeLayerSummary `json:"layers"`
	}
	readJSON(t, filepath.Join(out, "moe_summary.json"), &sum)
	if len(sum.Layers) != 2 || *sum.Layers[0].LoadBalanceRatio != 3 || sum.Layers[1].LoadBalanceRatio != nil || sum.Layers[1].CoveragePct != 75 {
		t.Errorf("moe summary %+v", sum.Layers)
	}
}

func TestGoldenSchedulerFiles(t *testing.T) {
	out := exportGolden(t)
	b := readCSV(t, filepath.Join(out, "batch_utilization.csv"))
	eq(t, "token util", col(t, b, "token_utilization_pct"), []string{"25.00", "50.00"})
	eq(t, "seq util", col(t, b, "seq_utilization_pct"), []string{"0.78", "3.12"})
	p := readCSV(t, filepath.Join(out, "preemption_events.csv"))
	eq(t, "preempt events", col(t, p, "event"), []string{"preempted", "resumed"})
	eq(t, "preempt reason", col(t, p, "reason"), []string{"kv_cache_exhausted", ""})
	eq(t, "resume delay", col(t, p, "resume_delay_sec"), []string{"", "0.500000"})
	l := readCSV(t, filepath.Join(out, "request_lifecycle.csv"))
	eq(t, "lifecycle", l[1][:12], []string{"r1", "0.500000", "0.600000", "0.700000", "2.000000", "0.100000", "0.200000", "1.500000", "100", "7", "1", "stopped"})
	cpu := readCSV(t, filepath.Join(out, "cpu_operations_timing.csv"))
	eq(t, "cpu ops", col(t, cpu, "operation"), []string{"scheduling", "scheduling", "gpu_sync_wait", "sampling"})
	eq(t, "cpu dur", col(t, cpu, "duration_us"), []string{"100.000", "100.000", "250.000", "50.000"})
	var ps map[string]any
	readJSON(t, filepath.Join(out, "preemption_summary.json"), &ps)
	if ps["total_preemptions"].(float64) != 1 || ps["preemptions_per_1000_steps"].(float64) != 500 {
		t.Errorf("preemption summary %v", ps)
	}
}

func TestGoldenEncoderAndSync(t *testing.T) {
	out := exportGolden(t)
	e := readCSV(t, filepath.Join(out, "encoder_decoder_timing.csv"))
	eq(t, "components", col(t, e, "component"), []string{"decoder", "encoder", "decoder", "decoder", "decoder", "decoder", "encoder"})
	// step 1: 6000 us of GPU time, 2000 of it launched by the encoder call inside it
	eq(t, "gpu", col(t, e, "gpu_time_us"), []string{"4000.000", "2000.000", "400.000", "900.000", "500.000", "100.000", "700.000"})
	eq(t, "source", col(t, e, "gpu_time_source"), []string{"cupti", "cupti", "cupti", "cupti", "cupti", "cupti", "cuda_events"})
	cpu := readCSV(t, filepath.Join(out, "cpu_operations_timing.csv"))
	ops, names, durs := col(t, cpu, "operation"), col(t, cpu, "name"), col(t, cpu, "duration_us")
	found := false
	for i := range ops {
		if ops[i] == "gpu_sync_wait" {
			found = names[i] == "ebpf:forward" && durs[i] == "250.000"
		}
	}
	if !found {
		t.Errorf("eBPF sync wait not in cpu_operations_timing.csv: %v %v", ops, names)
	}
}

func TestGoldenLaunchAttribution(t *testing.T) {
	out := exportGolden(t)
	l := readCSV(t, filepath.Join(out, "launch_attribution.csv"))
	eq(t, "corr", col(t, l, "correlation_id"), []string{"1", "21", ""})
	eq(t, "phase", col(t, l, "phase"), []string{"forward", "forward", "none"})
	eq(t, "probe", col(t, l, "api"), []string{"cuLaunchKernelEx", "cuLaunchKernel", "cuLaunchKernelEx"})
	eq(t, "fn", col(t, l, "python_function"), []string{"Attention.forward", "", ""})
	eq(t, "api", col(t, l, "cuda_api"), []string{"cuLaunchKernel", "cuLaunchKernel", ""})
	eq(t, "kernel", col(t, l, "gpu_name"), []string{"flash_fwd_kernel", "fused_moe_kernel", ""})
	// GPU start 105 ms - probe 102.05 ms; 303.7 - 302.49
	eq(t, "latency", col(t, l, "launch_to_gpu_us"), []string{"2950.000", "1210.000", ""})
	eq(t, "step", col(t, l, "step_id"), []string{"1", "3", ""})
}

// Producers in a container report namespace thread ids; eBPF reports host ids. With the
// collector's extra.tid_map the launch still joins.
func TestGoldenNamespaceTids(t *testing.T) {
	b := exporttest.New(t0)
	cu := b.Stream(wpid, "cupti")
	cu.Meta.Extra = map[string]any{"tid_map": map[string]any{"7": 4007}}
	cu.Add(exporttest.Name(1, "k"), exporttest.API(1, 7, 307, at(1), at(2)), exporttest.Kernel(1, 1, at(3), at(4)))
	eb := b.Stream(wpid, "ebpf")
	eb.Add(record.AppendEbpfLaunch(nil, &record.EbpfLaunch{TsNS: at(1.5), PID: wpid, TID: 4007, API: 1}))
	dir := filepath.Join(t.TempDir(), "session_ns")
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "o")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	l := readCSV(t, filepath.Join(out, "launch_attribution.csv"))
	eq(t, "corr", col(t, l, "correlation_id"), []string{"1"})
}
