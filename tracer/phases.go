package tracer

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// PhaseRule marks the code objects of one Python function as a phase.
type PhaseRule struct {
	Phase      string // phase name (the CSV "phase" column)
	Qualname   string // co_qualname to match exactly (3.10 has no qualname: its last component is matched against co_name)
	FileSuffix string // optional: co_filename must end with this ("" = any file)
}

// PhaseTable is an ordered rule list; phase ids are assigned 1.. in order of first appearance.
type PhaseTable struct {
	Rules []PhaseRule
	ids   map[string]uint16
	names []string
}

// DefaultPhaseTable is vLLM's (V1 engine; V1 and V2 GPU model runners). Sources:
// shared/reference/vllm-hook-points.md §4, §5, §8.
const DefaultPhaseTable = `# phase                 qualname                              file suffix
engine.step             EngineCore.step                       vllm/v1/engine/core.py
engine.step             EngineCore.step_with_batch_queue      vllm/v1/engine/core.py
scheduler.schedule      Scheduler.schedule                    vllm/v1/core/sched/scheduler.py
scheduler.update        Scheduler.update_from_output          vllm/v1/core/sched/scheduler.py
runner.execute_model    GPUModelRunner.execute_model          vllm/v1/worker/gpu_model_runner.py
runner.execute_model    GPUModelRunner.execute_model          vllm/v1/worker/gpu/model_runner.py
runner.prepare_inputs   GPUModelRunner._prepare_inputs        vllm/v1/worker/gpu_model_runner.py
runner.prepare_inputs   GPUModelRunner.prepare_inputs         vllm/v1/worker/gpu/model_runner.py
runner.model_forward    GPUModelRunner._model_forward         vllm/v1/worker/gpu_model_runner.py
runner.sample_tokens    GPUModelRunner.sample_tokens          vllm/v1/worker/gpu_model_runner.py
runner.sample_tokens    GPUModelRunner.sample_tokens          vllm/v1/worker/gpu/model_runner.py
runner.mm_encoder       GPUModelRunner._execute_mm_encoder    vllm/v1/worker/gpu_model_runner.py
runner.mm_encoder       EncoderRunner.execute_mm_encoder      vllm/v1/worker/gpu/mm/encoder_runner.py
sampler.forward         Sampler.forward                       vllm/v1/sample/sampler.py
`

// ParsePhaseTable reads the phase file format: one rule per line, "phase qualname [file-suffix]",
// fields separated by white space; '#' starts a comment.
func ParsePhaseTable(r io.Reader) (*PhaseTable, error) {
	t := &PhaseTable{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("phase table line %d: want \"phase qualname [file-suffix]\", got %q", n, sc.Text())
		}
		r := PhaseRule{Phase: f[0], Qualname: f[1]}
		if len(f) == 3 {
			r.FileSuffix = f[2]
		}
		t.Rules = append(t.Rules, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.Rules) == 0 {
		return nil, fmt.Errorf("phase table has no rules")
	}
	t.index()
	if len(t.names) > 0xfffe {
		return nil, fmt.Errorf("phase table has %d phases, at most 65534", len(t.names))
	}
	return t, nil
}

// LoadPhaseTable reads a phase file, or the default table when path is "".
func LoadPhaseTable(path string) (*PhaseTable, error) {
	if path == "" {
		return ParsePhaseTable(strings.NewReader(DefaultPhaseTable))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("phase table: %w", err)
	}
	defer f.Close()
	t, err := ParsePhaseTable(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func (t *PhaseTable) index() {
	t.ids = map[string]uint16{}
	t.names = nil
	for _, r := range t.Rules {
		if _, ok := t.ids[r.Phase]; !ok {
			t.names = append(t.names, r.Phase)
			t.ids[r.Phase] = uint16(len(t.names))
		}
	}
}

// Phases returns the phase names; the phase with id i is Phases()[i-1].
func (t *PhaseTable) Phases() []string { return t.names }

// Name returns the phase name of id ("" for 0 or unknown ids).
func (t *PhaseTable) Name(id uint16) string {
	if id == 0 || int(id) > len(t.names) {
		return ""
	}
	return t.names[id-1]
}

// Match returns the phase id of a function (0 = none). hasQualname is false on CPython 3.10,
// where qualname is only co_name.
func (t *PhaseTable) Match(qualname, filename string, hasQualname bool) uint16 {
	for _, r := range t.Rules {
		want := r.Qualname
		if !hasQualname {
			if i := strings.LastIndexByte(want, '.'); i >= 0 {
				want = want[i+1:]
			}
		}
		if qualname != want {
			continue
		}
		if r.FileSuffix != "" && !strings.HasSuffix(filename, r.FileSuffix) {
			continue
		}
		return t.ids[r.Phase]
	}
	return 0
}

// Names returns the set of co_name values any rule can match (for the attach-time scan filter).
func (t *PhaseTable) coNames() map[string]bool {
	m := map[string]bool{}
	for _, r := range t.Rules {
		n := r.Qualname
		if i := strings.LastIndexByte(n, '.'); i >= 0 {
			n = n[i+1:]
		}
		m[n] = true
	}
	return m
}
