//go:build linux

package cupti

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkAgentConversion measures the agent thread's CPU per converted record
// (CUPTI buffer walk + conversion + ring write; the mock's own cost is excluded)
// from the agent_stats counters of a flood of b.N kernel launches (2 records each).
//
//	go test -run '^$' -bench AgentConversion -benchtime 200000x ./cupti
func BenchmarkAgentConversion(b *testing.B) {
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	t := b
	p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_RING_KB=262144", "PROFILEMATE_MAX_MB=1024"), "flood", fmt.Sprint(b.N))
	pid := pidOf(t, p.waitLine("PID", 5*time.Second))
	p.waitLine("READY", 120*time.Second)
	r := findRing(t, pid, 2*time.Second)
	p.quit()
	c := newCapture()
	c.drain(t, r)
	s := c.lastStats()
	if s.RecordsConverted == 0 {
		b.Fatalf("nothing converted: %+v", s)
	}
	b.ReportMetric(float64(s.FlushNSTotal)/float64(s.RecordsConverted), "agent-ns/record")
	b.ReportMetric(float64(s.RecordsDiscarded+s.CuptiDropped), "lost")
}
