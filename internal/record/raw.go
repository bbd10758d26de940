package record

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// RawMagic starts every raw stream file (raw/<pid>.<source>.pmr).
var RawMagic = [8]byte{'P', 'M', 'R', 'A', 'W', 0, 0, 1}

// RawVersion is the raw stream format version this package writes and reads.
const RawVersion = 1

// maxMeta bounds the metadata block so that a corrupt length cannot make a reader allocate
// without limit.
const maxMeta = 1 << 20

// maxRecord bounds one record for the same reason; no producer writes records this large.
const maxRecord = 16 << 20

// ErrNotRaw reports a file that does not start with RawMagic.
var ErrNotRaw = errors.New("not a profilemate raw stream")

// ErrVersion reports a raw stream of a version this build cannot read.
var ErrVersion = errors.New("unsupported raw stream version")

// StreamMeta describes one raw stream: who wrote it and where it came from.
type StreamMeta struct {
	Source  string         `json:"source"`             // cupti, pyhook, ebpf
	Pid     int            `json:"pid"`                // host pid
	NsPid   int            `json:"ns_pid,omitempty"`   // pid inside the process's own namespace, when different
	Ppid    int            `json:"ppid,omitempty"`     // host parent pid
	Comm    string         `json:"comm,omitempty"`     // /proc/PID/comm
	Cmdline []string       `json:"cmdline,omitempty"`  // /proc/PID/cmdline
	StartNs uint64         `json:"start_ns,omitempty"` // CLOCK_MONOTONIC when the stream was first read
	Extra   map[string]any `json:"extra,omitempty"`
}

// RawWriter writes one raw stream file.
type RawWriter struct {
	w       *bufio.Writer
	records uint64
	bytes   uint64
}

// NewRawWriter writes the raw header and metadata to w.
func NewRawWriter(w io.Writer, meta StreamMeta) (*RawWriter, error) {
	m, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("encoding stream metadata: %w", err)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	var hdr [16]byte
	copy(hdr[:], RawMagic[:])
	binary.LittleEndian.PutUint32(hdr[8:], RawVersion)
	binary.LittleEndian.PutUint32(hdr[12:], uint32(len(m)))
	bw.Write(hdr[:])
	bw.Write(m)
	pad := (8 - len(m)%8) % 8
	bw.Write(make([]byte, pad))
	return &RawWriter{w: bw}, nil
}

// Write appends framed records (one or many, as read from a ring) after validating framing.
// Padding records are dropped.
func (rw *RawWriter) Write(recs []byte) error {
	_, err := Iterate(recs, func(rec []byte) error {
		if _, err := rw.w.Write(rec); err != nil {
			return err
		}
		rw.records++
		rw.bytes += uint64(len(rec))
		return nil
	})
	return err
}

// Records returns how many records were written so far.
func (rw *RawWriter) Records() uint64 { return rw.records }

// Flush writes buffered data to the underlying writer.
func (rw *RawWriter) Flush() error { return rw.w.Flush() }

// RawReader reads one raw stream file.
type RawReader struct {
	r    *bufio.Reader
	Meta StreamMeta
	off  int64
	buf  []byte
}

// NewRawReader reads and checks the header and metadata of a raw stream.
func NewRawReader(r io.Reader) (*RawReader, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	var hdr [16]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: file shorter than its header", ErrNotRaw)
		}
		return nil, err
	}
	if !bytes.Equal(hdr[:8], RawMagic[:]) {
		return nil, ErrNotRaw
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != RawVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrVersion, v, RawVersion)
	}
	n := int(binary.LittleEndian.Uint32(hdr[12:]))
	if n > maxMeta {
		return nil, fmt.Errorf("%w: metadata of %d bytes", ErrCorrupt, n)
	}
	pad := (8 - n%8) % 8
	m := make([]byte, n+pad)
	if _, err := io.ReadFull(br, m); err != nil {
		return nil, fmt.Errorf("%w: metadata truncated", ErrCorrupt)
	}
	rr := &RawReader{r: br, off: int64(16 + n + pad)}
	if err := json.Unmarshal(m[:n], &rr.Meta); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", ErrCorrupt, err)
	}
	return rr, nil
}

// Next returns the next framed record, valid until the following call. It returns io.EOF at
// a clean end, and an error naming the offset when the stream is truncated or corrupt.
func (rr *RawReader) Next() ([]byte, error) {
	var hdr [8]byte
	n, err := io.ReadFull(rr.r, hdr[:])
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("%w: truncated header at offset %d (%d bytes)", ErrCorrupt, rr.off, n)
	}
	size := int(binary.LittleEndian.Uint32(hdr[4:]))
	if size < HeaderSize || size%8 != 0 || size > maxRecord {
		return nil, fmt.Errorf("%w: record at offset %d has size %d", ErrCorrupt, rr.off, size)
	}
	if cap(rr.buf) < size {
		rr.buf = make([]byte, size)
	}
	b := rr.buf[:size]
	copy(b, hdr[:])
	if _, err := io.ReadFull(rr.r, b[8:]); err != nil {
		return nil, fmt.Errorf("%w: record at offset %d truncated", ErrCorrupt, rr.off)
	}
	rr.off += int64(size)
	return b, nil
}

// Offset returns the byte offset of the next record.
func (rr *RawReader) Offset() int64 { return rr.off }
