package export

import (
	"testing"

	"github.com/profilemate/profilemate-trace/tracer"
)

// export keeps its own copy of the eBPF probe names; it must match the tracer's table.
func TestEBPFAPINames(t *testing.T) {
	for _, a := range tracer.APIs {
		if got := ebpfAPIName(a.ID); got != a.Symbol {
			t.Errorf("api %d: export says %q, tracer %q", a.ID, got, a.Symbol)
		}
	}
	if len(ebpfAPIs)-1 != len(tracer.APIs) {
		t.Errorf("export names %d APIs, tracer %d", len(ebpfAPIs)-1, len(tracer.APIs))
	}
}
