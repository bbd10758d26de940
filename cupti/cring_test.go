package cupti

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/profilemate/profilemate-trace/internal/ring"
)

// TestCRingProducerGoConsumer runs the agent's C ring producer against the Go
// consumer: framing, tails, padding at the wrap, full-ring drops, header fields.
func TestCRingProducerGoConsumer(t *testing.T) {
	if !haveCgo {
		t.Skip("built without cgo: the C ring producer cannot be driven from Go")
	}
	c, err := newCRing(512)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	r, err := ring.Open(fmt.Sprintf("/proc/self/fd/%d", c.fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := r.Header()
	if h.Source != ring.SourceCUPTI || h.DataSize != 512 || h.ProducerState != ring.StateInit {
		t.Fatalf("header %+v", h)
	}
	c.setState(ring.StateRunning)
	var seq, got uint64
	for round := 0; round < 300; round++ {
		for i := 0; i < 3; i++ {
			tail := make([]byte, int(seq%11))
			for j := range tail {
				tail[j] = byte(seq)
			}
			if !c.write(uint16(1+seq%4), 16, tail, seq) {
				t.Fatalf("drop at %d: %+v", seq, r.Header())
			}
			seq++
		}
		if _, err := r.Read(func(b []byte) error {
			s := binary.LittleEndian.Uint64(b[8:])
			if s != got || len(b) != (16+int(s%11)+7)&^7 || binary.LittleEndian.Uint32(b[4:]) != uint32(len(b)) {
				return fmt.Errorf("record %d: len %d", s, len(b))
			}
			for _, x := range b[16 : 16+int(s%11)] {
				if x != byte(s) {
					return fmt.Errorf("tail of %d", s)
				}
			}
			for _, x := range b[16+int(s%11):] {
				if x != 0 {
					return fmt.Errorf("padding of %d not zero", s)
				}
			}
			got++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got != seq {
		t.Fatal(got, seq)
	}
	// Fill without a consumer: drops are counted, never waited for.
	n := 0
	for i := 0; i < 100; i++ {
		if c.write(1, 32, nil, uint64(i)) {
			n++
		}
	}
	h = r.Header()
	if n < 15 || n > 16 || h.RecordsDropped != uint64(100-n) || h.BytesDropped != uint64(100-n)*32 || h.RecordsWritten != seq+uint64(n) {
		t.Fatalf("n=%d %+v", n, h)
	}
}
