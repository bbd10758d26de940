//go:build linux

package inject

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/ring"
)

// TestDetachSurvivesAnOverwrittenRequest: a producer sees only the last write of its control
// word. When another writer (a second tracer attached to the same process) overwrites the detach
// request before the producer reads it, Detach must ask again, not wait out its bound and leave
// the agent running (seen once in CI: "no acknowledgement of control_seq 3 (control_ack 4)").
func TestDetachSurvivesAnOverwrittenRequest(t *testing.T) {
	w, err := ring.Create(ring.SourceCUPTI, 1<<12)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetLateStart(ring.MonotonicNs(), 0) // an injected agent's ring
	w.SetState(ring.StateRunning)
	// The agent's thread: every few ms, apply the latest control word; a detach sets
	// producer_state before the acknowledgement.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			// control_seq first, then the words (the tracer writes them in the other order)
			if seq := w.Header().ControlSeq; seq != w.Header().ControlAck {
				if w.Header().ControlEnable == ring.ControlDetach {
					w.SetState(ring.StateDetached)
				}
				w.AckSeq(seq)
			}
		}
	}()
	defer func() { close(stop); <-done }()

	overwrites := 0
	afterDetachRequest = func(r *ring.Reader) {
		overwrites++
		r.SetControl(true, ring.DetailGraph, 0) // the other tracer's enable, right after ours
	}
	defer func() { afterDetachRequest = func(*ring.Reader) {} }()

	inj := &Injection{Processes: []*Process{{Pid: os.Getpid(), Method: string(MethodPtrace)}}}
	start := time.Now()
	if err := inj.Detach(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	p := inj.Processes[0]
	if overwrites != 1 || !strings.HasPrefix(p.Detach, "acknowledged; request re-issued for cupti (overwritten with enable 1)") {
		t.Fatalf("detach %q after %d overwrite(s)", p.Detach, overwrites)
	}
	if h := w.Header(); h.ProducerState != ring.StateDetached {
		t.Fatalf("producer_state %d, want %d (detached)", h.ProducerState, ring.StateDetached)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("detach took %v: it waited instead of asking again", d)
	}
}
