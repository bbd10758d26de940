package cupti

import (
	"errors"
	"fmt"
	"time"

	"github.com/profilemate/profilemate-trace/internal/ring"
)

// ErrNotAvailable is returned where GPU tracing cannot work in this build or on
// this machine (no cgo for the test driver, no agent in the target).
var ErrNotAvailable = errors.New("cupti: GPU tracing not available")

// ErrPassive is returned by Enable when the agent acknowledged but does not hold
// CUPTI (another tool does, or it yielded and could not take CUPTI back).
var ErrPassive = errors.New("cupti: agent is passive (CUPTI held by another tool)")

// ErrNoAck is returned when the agent did not acknowledge a control change in time.
var ErrNoAck = errors.New("cupti: agent did not acknowledge the control change")

// ControlYield is the control_enable value that asks the agent to hand CUPTI
// back to other tools (flush, disable, unsubscribe; passive afterwards).
const ControlYield = ring.ControlYield

// ErrNotDetached is returned by Detach when the agent acknowledged but did not detach
// (a preloaded agent: it yields instead and keeps its ring).
var ErrNotDetached = errors.New("cupti: agent acknowledged but did not detach (not injected)")

// Enable turns collection on at the given detail level and waits up to timeout
// for the agent's acknowledgement (the agent polls its control word every 25 ms).
func Enable(r *ring.Reader, detail ring.Detail, timeout time.Duration) error {
	r.Heartbeat()
	r.SetControl(true, detail, 0)
	if err := WaitAck(r, timeout); err != nil {
		return err
	}
	if r.Header().ProducerState == ring.StatePassive {
		return ErrPassive
	}
	return nil
}

// Disable turns collection off (dormant) and waits for the acknowledgement.
// The agent flushes what was collected before it acknowledges.
func Disable(r *ring.Reader, timeout time.Duration) error {
	r.SetControl(false, r.Header().ControlDetail, 0)
	return WaitAck(r, timeout)
}

// Yield asks the agent to release CUPTI (for torch.profiler in the same
// process) and waits for the acknowledgement. The agent stays passive afterwards.
func Yield(r *ring.Reader, timeout time.Duration) error {
	r.SetControlRaw(ControlYield, r.Header().ControlDetail, 0)
	return WaitAck(r, timeout)
}

// Detach asks an injected agent (pm_inject_start) to stop for good: it disables every
// kind, flushes into the ring, unsubscribes, sets producer_state StateDetached,
// acknowledges, stops its thread and closes its ring. Records it flushed stay readable
// through r. A preloaded agent yields instead (ErrNotDetached).
func Detach(r *ring.Reader, timeout time.Duration) error {
	r.Detach()
	if err := WaitAck(r, timeout); err != nil {
		return err
	}
	if r.Header().ProducerState != ring.StateDetached {
		return ErrNotDetached
	}
	return nil
}

// WaitAck waits until control_ack equals control_seq, or until the producer has
// exited or failed (then it returns an error naming the state). Passive agents
// acknowledge too.
func WaitAck(r *ring.Reader, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		h := r.Header()
		if h.ControlAck == h.ControlSeq {
			return nil
		}
		if h.ProducerState == ring.StateExited || h.ProducerState == ring.StateFailed {
			return fmt.Errorf("%w: producer state %d", ErrNoAck, h.ProducerState)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w within %v (seq %d, ack %d)", ErrNoAck, timeout, h.ControlSeq, h.ControlAck)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
