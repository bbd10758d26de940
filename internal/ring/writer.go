package ring

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Writer is a ring producer (tests, Go-side sources). Write is safe for concurrent use.
type Writer struct {
	mapping
	mu sync.Mutex
}

// Create makes a memfd named "profilemate-<source>" with a header and dataSize
// bytes of data (a power of two ≥ 64) and maps it.
func Create(source Source, dataSize int) (*Writer, error) {
	if !isPow2(uint64(dataSize)) || dataSize < 64 {
		return nil, fmt.Errorf("ring: data size %d is not a power of two ≥ 64", dataSize)
	}
	fd, err := unix.MemfdCreate("profilemate-"+source.String(), unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("ring: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:profilemate-"+source.String())
	total := HeaderSize + dataSize
	if err := f.Truncate(int64(total)); err != nil {
		f.Close()
		return nil, fmt.Errorf("ring: ftruncate: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ring: mmap: %w", err)
	}
	w := &Writer{mapping: mapping{mem: mem, data: mem[HeaderSize:], dataSize: uint64(dataSize), f: f}}
	binary.LittleEndian.PutUint32(mem[offVersion:], Version)
	binary.LittleEndian.PutUint32(mem[offHeaderSize:], HeaderSize)
	binary.LittleEndian.PutUint64(mem[offDataSize:], uint64(dataSize))
	binary.LittleEndian.PutUint32(mem[offPid:], uint32(os.Getpid()))
	binary.LittleEndian.PutUint32(mem[offSource:], uint32(source))
	binary.LittleEndian.PutUint64(mem[offCreatedNs:], MonotonicNs())
	w.store32(offProducerState, StateRunning)
	copy(mem[offMagic:], Magic) // last: a reader that sees the magic sees the whole header (ErrNotReady before)
	return w, nil
}

// File returns the memfd (for passing over a control socket).
func (w *Writer) File() *os.File { return w.f }

// Header returns a snapshot of all header fields.
func (w *Writer) Header() Header { return w.header() }

// SetState stores producer_state.
func (w *Writer) SetState(s uint32) { w.store32(offProducerState, s) }

// SetSourceDropped stores source_dropped.
func (w *Writer) SetSourceDropped(n uint64) { w.store64(offSourceDropped, n) }

// SetLateStart stores late_start_ns and first_enable_ns as an injected agent does
// (tests and Go-side stand-ins for the agent).
func (w *Writer) SetLateStart(lateStartNs, firstEnableNs uint64) {
	w.store64(offLateStartNs, lateStartNs)
	w.store64(offFirstEnableNs, firstEnableNs)
}

// Ack copies control_seq to control_ack and returns the control words.
func (w *Writer) Ack() (enable uint32, detail Detail, sampleEvery uint32) {
	seq := w.load32(offControlSeq)
	enable, detail, sampleEvery = w.load32(offControlEnable), Detail(w.load32(offControlDetail)), w.load32(offSampleEvery)
	w.store32(offControlAck, seq)
	return
}

// AckSeq stores seq in control_ack: the acknowledgement of the control words read with that
// control_seq, for a producer that acts on them first (a detach sets producer_state before it
// acknowledges, as the agent does).
func (w *Writer) AckSeq(seq uint32) { w.store32(offControlAck, seq) }

// Write appends one framed record (its header's size field must equal len(rec),
// a multiple of 8). It returns false when the ring is full: the record is dropped
// and counted, never waited for.
func (w *Writer) Write(rec []byte) bool {
	n := uint64(len(rec))
	if n < RecordHeaderSize || n%8 != 0 {
		panic(fmt.Sprintf("ring: Write of a %d-byte record", n))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	head := w.load64(offHead)
	tail := w.load64(offTail)
	pos := head & (w.dataSize - 1)
	contig := w.dataSize - pos
	need := n
	pad := uint64(0)
	if n > contig {
		pad = contig
		need += pad
	}
	if n > w.dataSize || need > w.dataSize-(head-tail) {
		w.store64(offRecsDropped, w.load64(offRecsDropped)+1)
		w.store64(offBytesDropped, w.load64(offBytesDropped)+n)
		return false
	}
	if pad > 0 {
		binary.LittleEndian.PutUint64(w.data[pos:], 0)
		binary.LittleEndian.PutUint32(w.data[pos+4:], uint32(pad))
		pos = 0
	}
	copy(w.data[pos:pos+n], rec)
	w.store64(offRecsWritten, w.load64(offRecsWritten)+1)
	w.store64(offLastFlushNs, MonotonicNs())
	w.store64(offHead, head+need) // atomic store: release after the bytes
	return true
}

// Close unmaps and closes the memfd (a reader that opened it keeps its own mapping).
func (w *Writer) Close() error { return w.close() }

// Frame builds a record: 8-byte header {typ, 0, size} + body, zero-padded to 8.
func Frame(typ uint16, body []byte) []byte {
	size := Align8(RecordHeaderSize + len(body))
	b := make([]byte, size)
	binary.LittleEndian.PutUint16(b[0:], typ)
	binary.LittleEndian.PutUint32(b[4:], uint32(size))
	copy(b[8:], body)
	return b
}
