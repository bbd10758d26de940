// Package ring implements the shared-memory record ring of docs/record-format.md:
// the consumer side used by the tracer (Find, Open, Reader) and a producer (Create,
// Writer) used by tests and Go-side sources. It uses no cgo.
//
// The layout constants here mirror the header table in docs/record-format.md and
// struct pm_ring_hdr in cupti/csrc/pm_ring.h; TestHeaderOffsets checks them.
package ring

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Magic is the first 8 bytes of a ring file.
const Magic = "PMRING\x00\x01"

// Layout constants (docs/record-format.md, "Shared-memory ring").
const (
	Version    = 1
	HeaderSize = 4096

	offMagic         = 0
	offVersion       = 8
	offHeaderSize    = 12
	offDataSize      = 16
	offPid           = 24
	offSource        = 28
	offCreatedNs     = 32
	offProducerState = 40
	offProducerFlags = 44
	offControlEnable = 64
	offControlDetail = 68
	offControlSeq    = 72
	offControlAck    = 76
	offHeartbeatNs   = 80
	offSampleEvery   = 88
	offFirstEnableNs = 96
	offLateStartNs   = 104
	offHead          = 128
	offRecsWritten   = 136
	offRecsDropped   = 144
	offBytesDropped  = 152
	offSourceDropped = 160
	offLastFlushNs   = 168
	offTail          = 192

	// RecordHeaderSize is the size of the framing header of every record.
	RecordHeaderSize = 8
)

// Source identifies the producer of a ring (header field "source").
type Source uint32

// Sources.
const (
	SourceCUPTI  Source = 1
	SourcePyhook Source = 2
)

func (s Source) String() string {
	switch s {
	case SourceCUPTI:
		return "cupti"
	case SourcePyhook:
		return "pyhook"
	}
	return fmt.Sprintf("source(%d)", uint32(s))
}

// ParseSource maps a memfd/control-socket source name to a Source (0 if unknown).
func ParseSource(name string) Source {
	switch name {
	case "cupti":
		return SourceCUPTI
	case "pyhook":
		return SourcePyhook
	}
	return 0
}

// Detail is the kernel detail level (control_detail).
type Detail uint32

// Detail levels.
const (
	DetailOff   Detail = 0
	DetailGraph Detail = 1
	DetailNodes Detail = 2
)

func (d Detail) String() string {
	switch d {
	case DetailOff:
		return "off"
	case DetailGraph:
		return "graph"
	case DetailNodes:
		return "nodes"
	}
	return fmt.Sprintf("detail(%d)", uint32(d))
}

// ParseDetail parses "off", "graph" or "nodes".
func ParseDetail(s string) (Detail, error) {
	switch s {
	case "off":
		return DetailOff, nil
	case "graph", "":
		return DetailGraph, nil
	case "nodes":
		return DetailNodes, nil
	}
	return 0, fmt.Errorf("ring: unknown detail level %q (want off, graph or nodes)", s)
}

// ProducerState values (header field producer_state).
const (
	StateInit    = 0
	StateRunning = 1
	StateExited  = 2
	StatePassive = 3
	StateFailed  = 4
	// StateDetached: an injected producer detached on request (control_enable=ControlDetach)
	// or after its tracer stopped heart-beating; it has unmapped and closed the ring and
	// will never write again.
	StateDetached = 5
)

// control_enable values (header field control_enable, written by the tracer).
const (
	ControlDormant = 0 // collect nothing (the agent keeps its ring)
	ControlCollect = 1 // collect at control_detail
	ControlYield   = 2 // agent: disable, flush, unsubscribe; passive until the next ControlCollect
	// ControlDetach: an injected producer (pm_inject_start, profilemate_trace.late) stops
	// for good: disables everything, flushes, acknowledges with producer_state
	// StateDetached, stops its thread and closes its ring. A preloaded agent treats it
	// like ControlYield (docs/record-format.md).
	ControlDetach = 3
)

// Producer flag bits (header field producer_flags).
const (
	FlagArmedAtInit = 1 << 0
	FlagLateStart   = 1 << 1
)

// Header is a snapshot of every header field.
type Header struct {
	Magic               [8]byte
	Version             uint32
	HeaderSize          uint32
	DataSize            uint64
	Pid                 uint32
	Source              Source
	CreatedNs           uint64
	ProducerState       uint32
	ProducerFlags       uint32
	ControlEnable       uint32
	ControlDetail       Detail
	ControlSeq          uint32
	ControlAck          uint32
	ConsumerHeartbeatNs uint64
	SampleEvery         uint32
	// FirstEnableNs is how long the agent's first enable blocked its thread while it armed
	// CUPTI late (subscribe, callbacks, kinds, DEVICE/CONTEXT dump), in ns of CLOCK_MONOTONIC;
	// 0 until such an enable happened or when CUPTI was armed at cuInit.
	FirstEnableNs uint64
	// LateStartNs is the CLOCK_MONOTONIC time at which pm_inject_start started the agent in
	// a running process (injection); 0 for an agent started by cuInit.
	LateStartNs    uint64
	Head           uint64
	RecordsWritten uint64
	RecordsDropped uint64
	BytesDropped   uint64
	SourceDropped  uint64
	LastFlushNs    uint64
	Tail           uint64
}

// ErrNotReady is wrapped by Open/OpenFile when the ring file exists but its producer has not
// finished writing the header (empty file, or no magic yet: producers write the magic last).
// Retry after a few milliseconds; a tracer scanning /proc/PID/fd right after a late start
// (pm_inject_start) can see the memfd that early.
var ErrNotReady = errors.New("ring: header not written yet")

// ErrCorrupt is wrapped by errors that report bad framing.
var ErrCorrupt = errors.New("ring: corrupt record stream")

// mapping is the shared part of Reader and Writer.
type mapping struct {
	mem      []byte
	data     []byte
	dataSize uint64
	f        *os.File
}

func (m *mapping) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&m.mem[off])) }
func (m *mapping) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&m.mem[off])) }

func (m *mapping) load32(off int) uint32     { return atomic.LoadUint32(m.u32(off)) }
func (m *mapping) load64(off int) uint64     { return atomic.LoadUint64(m.u64(off)) }
func (m *mapping) store32(off int, v uint32) { atomic.StoreUint32(m.u32(off), v) }
func (m *mapping) store64(off int, v uint64) { atomic.StoreUint64(m.u64(off), v) }

func (m *mapping) header() Header {
	var h Header
	copy(h.Magic[:], m.mem[offMagic:offMagic+8])
	h.Version = m.load32(offVersion)
	h.HeaderSize = m.load32(offHeaderSize)
	h.DataSize = m.load64(offDataSize)
	h.Pid = m.load32(offPid)
	h.Source = Source(m.load32(offSource))
	h.CreatedNs = m.load64(offCreatedNs)
	h.ProducerState = m.load32(offProducerState)
	h.ProducerFlags = m.load32(offProducerFlags)
	h.ControlEnable = m.load32(offControlEnable)
	h.ControlDetail = Detail(m.load32(offControlDetail))
	h.ControlSeq = m.load32(offControlSeq)
	h.ControlAck = m.load32(offControlAck)
	h.ConsumerHeartbeatNs = m.load64(offHeartbeatNs)
	h.SampleEvery = m.load32(offSampleEvery)
	h.FirstEnableNs = m.load64(offFirstEnableNs)
	h.LateStartNs = m.load64(offLateStartNs)
	h.Head = m.load64(offHead)
	h.RecordsWritten = m.load64(offRecsWritten)
	h.RecordsDropped = m.load64(offRecsDropped)
	h.BytesDropped = m.load64(offBytesDropped)
	h.SourceDropped = m.load64(offSourceDropped)
	h.LastFlushNs = m.load64(offLastFlushNs)
	h.Tail = m.load64(offTail)
	return h
}

func (m *mapping) close() error {
	var err error
	if m.mem != nil {
		err = unix.Munmap(m.mem)
		m.mem, m.data = nil, nil
	}
	if m.f != nil {
		if cerr := m.f.Close(); err == nil {
			err = cerr
		}
		m.f = nil
	}
	return err
}

// MonotonicNs returns CLOCK_MONOTONIC in nanoseconds (the clock of every record).
func MonotonicNs() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Sec)*1e9 + uint64(ts.Nsec)
}

func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

// Align8 rounds n up to a multiple of 8.
func Align8(n int) int { return (n + 7) &^ 7 }
