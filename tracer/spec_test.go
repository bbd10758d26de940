package tracer

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/profilemate/profilemate-trace/bpf"
	"github.com/profilemate/profilemate-trace/internal/pyproc"
	"github.com/profilemate/profilemate-trace/internal/record"
)

func TestPhaseTable(t *testing.T) {
	tab, err := LoadPhaseTable("")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tab.Phases(), ","); got != "engine.step,scheduler.schedule,scheduler.update,runner.execute_model,runner.prepare_inputs,runner.model_forward,runner.sample_tokens,runner.mm_encoder,sampler.forward" {
		t.Fatalf("phases %s", got)
	}
	cases := []struct {
		q, file string
		hasQ    bool
		want    string
	}{
		{"Scheduler.schedule", "/x/vllm/v1/core/sched/scheduler.py", true, "scheduler.schedule"},
		{"Scheduler.schedule", "/x/other.py", true, ""}, // file suffix filter
		{"GPUModelRunner.execute_model", "/x/vllm/v1/worker/gpu/model_runner.py", true, "runner.execute_model"},
		{"GPUModelRunner.prepare_inputs", "/x/vllm/v1/worker/gpu/model_runner.py", true, "runner.prepare_inputs"},
		{"execute_model", "/x/vllm/v1/worker/gpu_model_runner.py", false, "runner.execute_model"}, // 3.10: co_name only
		{"forward", "/x/vllm/model_executor/layers/linear.py", false, ""},
		{"Sampler.forward", "/x/vllm/v1/sample/sampler.py", true, "sampler.forward"},
	}
	for _, c := range cases {
		if got := tab.Name(tab.Match(c.q, c.file, c.hasQ)); got != c.want {
			t.Errorf("Match(%q, %q) = %q, want %q", c.q, c.file, got, c.want)
		}
	}
	custom, err := ParsePhaseTable(strings.NewReader("# sglang\nsched Scheduler.event_loop_normal\nfwd ModelRunner.forward python/sglang/srt/model_executor/model_runner.py\n"))
	if err != nil {
		t.Fatal(err)
	}
	if custom.Match("Scheduler.event_loop_normal", "any.py", true) != 1 || custom.Name(2) != "fwd" {
		t.Fatalf("custom table %+v", custom.Rules)
	}
	for _, bad := range []string{"", "only-one-field", "a b c d"} {
		if _, err := ParsePhaseTable(strings.NewReader(bad)); err == nil {
			t.Errorf("ParsePhaseTable(%q) accepted", bad)
		}
	}
}

func TestPlan(t *testing.T) {
	plan := Plan(map[string]bool{"cuLaunchKernel": true, "cuStreamSynchronize": true, "cuGraphLaunch": true, "cuFoo": true})
	var got []string
	for _, p := range plan {
		s := p.API.Symbol
		if p.Return {
			s += "(ret)"
		}
		got = append(got, s)
	}
	if strings.Join(got, ",") != "cuLaunchKernel,cuGraphLaunch,cuStreamSynchronize,cuStreamSynchronize(ret)" {
		t.Fatalf("plan %v", got)
	}
	for i, a := range APIs {
		if int(a.ID) != i+1 {
			t.Fatalf("API ids must be dense and stable: %s has %d at index %d", a.Symbol, a.ID, i)
		}
		if c := a.Cookie(); uint16(c) != a.ID || uint8(c>>16) != a.Args {
			t.Fatalf("cookie %#x of %s", c, a.Symbol)
		}
	}
}

func TestNewSpec(t *testing.T) {
	for _, multi := range []bool{true, false} {
		spec, err := NewSpec(Config{MaxDepth: 32, CountersOnly: true, RingBytes: 1 << 16}, multi)
		if err != nil {
			t.Fatal(err)
		}
		_, hasMulti := spec.Programs[progEntryMulti]
		_, hasSingle := spec.Programs[progEntry]
		if hasMulti != multi || hasSingle == multi {
			t.Fatalf("multi=%v: programs %v", multi, spec.Programs)
		}
		if spec.Maps["pm_events"].MaxEntries != 1<<16 {
			t.Fatal("ring size not applied")
		}
		var depth, emit uint32
		if err := spec.Variables["pm_max_depth"].Get(&depth); err != nil || depth != 32 {
			t.Fatalf("pm_max_depth %d %v", depth, err)
		}
		if err := spec.Variables["pm_emit_launches"].Get(&emit); err != nil || emit != 0 {
			t.Fatalf("pm_emit_launches %d %v", emit, err)
		}
	}
	for _, bad := range []Config{{RingBytes: 1000}, {MaxDepth: bpf.MaxDepth + 1}} {
		if _, err := NewSpec(bad, true); err == nil {
			t.Errorf("NewSpec(%+v) accepted", bad)
		}
	}
}

// TestRecordLayoutInObject checks that the record structs compiled into the BPF object have the
// generated layout (internal/record) field by field: BPF samples are written as records.
func TestRecordLayoutInObject(t *testing.T) {
	spec, err := bpf.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []record.Type{record.TypeEbpfLaunch, record.TypeEbpfSync, record.TypeEbpfCodeSeen, record.TypeEbpfTstateMiss, record.TypeEbpfProc} {
		rs := record.Specs[typ]
		var st *btf.Struct
		if err := spec.Types.TypeByName("pm_rec_"+rs.Name, &st); err != nil {
			t.Fatalf("%s: %v", rs.Name, err)
		}
		if int(st.Size) != rs.Size {
			t.Errorf("%s: size %d in the object, %d generated", rs.Name, st.Size, rs.Size)
		}
		off := map[string]int{}
		for _, m := range st.Members {
			off[m.Name] = int(m.Offset.Bytes())
		}
		for _, f := range rs.Fields {
			if got, ok := off[f.Name]; !ok || got != f.Offset {
				t.Errorf("%s.%s: offset %d in the object, %d generated", rs.Name, f.Name, got, f.Offset)
			}
		}
	}
}

func TestPyConfWindow(t *testing.T) {
	for _, minor := range []int{10, 11, 12} {
		l, err := pyproc.TableLayout(minor)
		if err != nil {
			t.Fatal(err)
		}
		c := PyConf(&pyproc.Process{Layout: l, GilKey: 0})
		if err := CheckPyConf(c); err != nil {
			t.Errorf("3.%d: %v", minor, err)
		}
	}
	if err := CheckPyConf(bpf.PyConf{FrameCode: 4, FramePrev: 8, FrameOwner: bpf.NoOffset, WinOff: 0, WinLen: 16}); err == nil {
		t.Error("unaligned code offset accepted")
	}
}
