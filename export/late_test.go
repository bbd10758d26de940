package export

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/profilemate/profilemate-trace/export/exporttest"
	"github.com/profilemate/profilemate-trace/internal/record"
)

const lateMoEReason = "expert counts unavailable: MoE layers run inside CUDA graphs captured before attach"

func patchRec(ts uint64, status uint32, name, reason string) []byte {
	return record.AppendPyPatchStatus(nil, &record.PyPatchStatus{TsNS: ts, Status: status, Text: []byte(name + "\x00" + reason)})
}

func exportJSON(t *testing.T, b *exporttest.Builder, name string) map[string]any {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "session_late")
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// A late attach with graphs captured before it: the hook reports its MoE patches unavailable,
// no layer has counts, and moe_summary.json says so instead of an empty (zero-looking) table.
// Matching is on the "moe." prefix and the status; other unavailable patches are not notes.
func TestMoESummaryLateAttachUnavailable(t *testing.T) {
	b := exporttest.New(t0)
	py := b.Stream(1234, "pyhook")
	py.Add(patchRec(at(1), 1, "moe.v1_runner", ""),
		patchRec(at(2), 2, "moe.v1_runner", lateMoEReason), // last state wins
		patchRec(at(2), 1, "moe.v2_runner", ""),
		patchRec(at(3), 2, "cudagraph.capture", "CUDA graphs were captured before attach (3 graphs)"),
		patchRec(at(4), 2, "moe_like", "not an moe. patch"))
	sp := b.Stream(1300, "pyhook")
	sp.Add(patchRec(at(1), 4, "moe.v2_runner", "some other reason text"))
	m := exportJSON(t, b, "moe_summary.json")
	if m["expert_counts"] != "unavailable" {
		t.Errorf("expert_counts = %v", m["expert_counts"])
	}
	want := []any{"pid 1234: moe.v1_runner: " + lateMoEReason, "pid 1300: moe.v2_runner: some other reason text"}
	if !reflect.DeepEqual(m["notes"], want) {
		t.Errorf("notes = %v, want %v", m["notes"], want)
	}
	if m["num_layers"] != 0.0 {
		t.Errorf("num_layers = %v", m["num_layers"])
	}
	rdir := filepath.Join(t.TempDir(), "session_report")
	if err := b.Write(rdir); err != nil {
		t.Fatal(err)
	}
	h := reportOf(t, rdir)
	if !strings.Contains(h, "No data:</b> MoE expert counts unavailable. pid 1234: moe.v1_runner: "+lateMoEReason) {
		t.Error("report does not say why the MoE counts are missing")
	}
}

// One process counted, another attached late: the layers are summarised and the note is
// there, but no "expert_counts": "unavailable".
func TestMoESummaryPartlyUnavailable(t *testing.T) {
	b := exporttest.New(t0)
	py := b.Stream(100, "pyhook")
	py.Add(patchRec(at(1), 1, "moe.v1_runner", ""),
		record.AppendPyMOEExpertCounts(nil, &record.PyMOEExpertCounts{TsNS: at(1000), WindowStartNS: at(0), LayerIdx: 0, NumExperts: 2, TopK: 1, Counts: exporttest.U64s(10, 10)}))
	late := b.Stream(101, "pyhook")
	late.Add(patchRec(at(1), 2, "moe.v1_runner", lateMoEReason))
	m := exportJSON(t, b, "moe_summary.json")
	if _, ok := m["expert_counts"]; ok {
		t.Errorf("expert_counts present with counted layers: %v", m["expert_counts"])
	}
	if !reflect.DeepEqual(m["notes"], []any{"pid 101: moe.v1_runner: " + lateMoEReason}) {
		t.Errorf("notes = %v", m["notes"])
	}
	if m["num_layers"] != 1.0 {
		t.Errorf("num_layers = %v", m["num_layers"])
	}
}

// Without unavailable MoE patches the summary has neither key (existing sessions unchanged).
func TestMoESummaryNoNotes(t *testing.T) {
	m := exportJSON(t, func() *exporttest.Builder {
		b := exporttest.New(t0)
		b.Stream(100, "pyhook").Add(patchRec(at(1), 1, "moe.v1_runner", ""), patchRec(at(1), 3, "moe.v2_runner", "disabled by config"))
		return b
	}(), "moe_summary.json")
	for _, k := range []string{"notes", "expert_counts"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s present: %v", k, m[k])
		}
	}
}

// A pool found in use by a late attach starts at num_free_blocks_at_attach (the config
// record's time), so usage is right from the first row; a pool without it starts at its
// first block record as before.
func TestKVUsageStartsAtAttachFreeCount(t *testing.T) {
	b := exporttest.New(t0)
	sp := b.Stream(spid, "pyhook")
	info := []byte(`{"attached_late": true, "num_free_blocks_at_attach": 60}`)
	sp.Add(record.AppendPyKVConfig(nil, &record.PyKVConfig{TsNS: at(10), PoolID: 0, NumGPUBlocks: 101, BlockSize: 16, EnableCaching: 1, InfoLen: uint32(len(info)), Info: info}),
		record.AppendPyKVConfig(nil, &record.PyKVConfig{TsNS: at(10), PoolID: 1, NumGPUBlocks: 11, BlockSize: 16, EnableCaching: 1}))
	sp.Add(exporttest.KV(kvAlloc, 0, 60, 0, at(500), 41), // unchanged free count: no row
		exporttest.KV(kvAlloc, 0, 58, 0, at(1000), 42, 43),
		exporttest.KV(kvAlloc, 1, 9, 0, at(1500), 1))
	dir := filepath.Join(t.TempDir(), "session_kv")
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "o")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	u := readCSV(t, filepath.Join(out, "kv_cache_usage.csv"))
	eq(t, "ts", col(t, u, "timestamp_sec"), []string{"0.010000", "1.000000", "1.500000"})
	eq(t, "pool", col(t, u, "pool_id"), []string{"0", "0", "1"})
	eq(t, "usage", col(t, u, "usage_pct"), []string{"40.00", "42.00", "10.00"})
	eq(t, "free", col(t, u, "num_free"), []string{"60", "58", "9"})
	eq(t, "op", col(t, u, "op"), []string{"attach", "alloc", "alloc"})
}

// metadata.json "injection" survives a bundle and its export, and the report shows one line
// about it.
func TestInjectionMetadataThroughBundle(t *testing.T) {
	b := exporttest.New(t0)
	b.Stream(100, "pyhook").Add(patchRec(at(1), 1, "kv_cache", ""))
	dir := filepath.Join(t.TempDir(), "session_20261127_230000")
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	injection := map[string]any{
		"requested": "ptrace", "staging_removed": true,
		"processes": []any{
			map[string]any{"pid": 100.0, "method": "ptrace", "python": "3.12.3", "tid": 101.0, "syscall": "epoll_wait", "load_ms": 41.5,
				"thread_stopped_ms": 40.2, "start_result": 0.0, "first_enable_stall_ms": 27.25, "detach": "acknowledged"},
			map[string]any{"pid": 99.0, "method": "skipped", "skipped": "not a CPython or CUDA process", "load_ms": 0.0},
		},
	}
	mdPath := filepath.Join(dir, "metadata.json")
	raw, err := os.ReadFile(mdPath)
	if err != nil {
		t.Fatal(err)
	}
	var md map[string]any
	if err := json.Unmarshal(raw, &md); err != nil {
		t.Fatal(err)
	}
	md["injection"] = injection
	raw, _ = json.Marshal(md)
	if err := os.WriteFile(mdPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "s.tar.zst")
	if err := WriteBundle(dir, bundle); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	s, err := Export(bundle, out)
	if err != nil {
		t.Fatal(err)
	}
	raw, err = os.ReadFile(filepath.Join(out, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got["injection"], injection) {
		t.Errorf("injection after export:\n got  %v\n want %v", got["injection"], injection)
	}
	var buf strings.Builder
	if err := WriteReport(s, &buf); err != nil {
		t.Fatal(err)
	}
	want := "Injected by attach --inject: pid 100 ptrace, load 41.5 ms, first-enable stall 27.2 ms; the process stays slower after detach until restart (CUPTI stays initialised)"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("report lacks the injection line %q", want)
	}
	if strings.Count(buf.String(), "Injected by attach") != 1 {
		t.Error("injection line not exactly once")
	}
	// Without an injection the line is absent; without a first enable, no "stays slower".
	if injectionLine(map[string]any{}) != "" {
		t.Error("line without injection")
	}
	noArm := map[string]any{"injection": map[string]any{"processes": []any{map[string]any{"pid": 7.0, "method": "remote-exec", "load_ms": 3.0}}}}
	if l := injectionLine(noArm); l != "Injected by attach --inject: pid 7 remote-exec, load 3.0 ms" {
		t.Errorf("line = %q", l)
	}
}

// Graphs captured while the hook was dormant are written (flags bit 7) at every enable; a session
// that enabled twice lists each capture once.
func TestDormantCapturesOnce(t *testing.T) {
	b := exporttest.New(t0)
	py := b.Stream(1234, "pyhook")
	dormant := func(tok uint32, start uint64) []byte {
		return record.AppendPyGraphCapture(nil, &record.PyGraphCapture{StartNS: start, EndNS: start + 15_000_000,
			TID: 11, RuntimeMode: 2, NumTokens: tok, NumReqs: int32(tok), Flags: 1 | 1<<6 | 1<<7, Source: 3})
	}
	for enable := 0; enable < 2; enable++ { // two enables re-emit the same two captures
		py.Add(dormant(8, at(1)), dormant(16, at(2)))
	}
	// a capture made while collecting, identical times but no bit 7: kept
	py.Add(record.AppendPyGraphCapture(nil, &record.PyGraphCapture{StartNS: at(3), EndNS: at(3) + 15_000_000,
		TID: 11, RuntimeMode: 2, NumTokens: 32, NumReqs: 32, Flags: 1 | 1<<6, Source: 3}))
	dir := filepath.Join(t.TempDir(), "session_dormant")
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	c := readCSV(t, filepath.Join(out, "cuda_graph_captures.csv"))
	eq(t, "capture sizes", col(t, c, "num_tokens"), []string{"8", "16", "32"})
	eq(t, "graphs per size", col(t, c, "graphs"), []string{"1", "1", "1"})
}
