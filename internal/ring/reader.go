package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Found is one ring discovered in a process's fd table.
type Found struct {
	Source string // "cupti", "pyhook", … (the memfd name after "profilemate-")
	Path   string // /proc/PID/fd/N, openable with Open
}

// Find scans /proc/PID/fd for links named "/memfd:profilemate-<source> (deleted)".
func Find(pid int) ([]Found, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []Found
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		link, err := os.Readlink(p)
		if err != nil {
			continue
		}
		const pfx = "/memfd:profilemate-"
		if !strings.HasPrefix(link, pfx) {
			continue
		}
		src := strings.TrimSuffix(strings.TrimPrefix(link, pfx), " (deleted)")
		out = append(out, Found{Source: src, Path: p})
	}
	return out, nil
}

// Reader is the consumer side of one ring. It is not safe for concurrent use.
type Reader struct {
	mapping
	broken error
	claim  *os.File // the open file description holding the consumer lock (Claim)
}

// Open opens and maps a ring file (for example a /proc/PID/fd/N path from Find).
func Open(path string) (*Reader, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	r, err := OpenFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// OpenFile maps an already open ring file. The Reader owns f afterwards (Close closes it).
func OpenFile(f *os.File) (*Reader, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() < HeaderSize {
		if st.Size() == 0 {
			return nil, fmt.Errorf("ring: %s: %w (empty file)", f.Name(), ErrNotReady)
		}
		return nil, fmt.Errorf("ring: %s: file of %d bytes is smaller than the header", f.Name(), st.Size())
	}
	var hdr [HeaderSize]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return nil, fmt.Errorf("ring: %s: %w", f.Name(), err)
	}
	if string(hdr[:8]) == "\x00\x00\x00\x00\x00\x00\x00\x00" {
		return nil, fmt.Errorf("ring: %s: %w (no magic yet)", f.Name(), ErrNotReady)
	}
	if string(hdr[:8]) != Magic {
		return nil, fmt.Errorf("ring: %s: bad magic %q", f.Name(), hdr[:8])
	}
	if v := binary.LittleEndian.Uint32(hdr[offVersion:]); v != Version {
		return nil, fmt.Errorf("ring: %s: unsupported version %d", f.Name(), v)
	}
	if hs := binary.LittleEndian.Uint32(hdr[offHeaderSize:]); hs != HeaderSize {
		return nil, fmt.Errorf("ring: %s: unsupported header size %d", f.Name(), hs)
	}
	ds := binary.LittleEndian.Uint64(hdr[offDataSize:])
	if !isPow2(ds) || ds < 64 || int64(ds)+HeaderSize > st.Size() {
		return nil, fmt.Errorf("ring: %s: bad data_size %d (file %d bytes)", f.Name(), ds, st.Size())
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(HeaderSize+ds), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("ring: mmap %s: %w", f.Name(), err)
	}
	r := &Reader{mapping: mapping{mem: mem, data: mem[HeaderSize:], dataSize: ds, f: f}}
	return r, nil
}

// Header returns a snapshot of all header fields.
func (r *Reader) Header() Header { return r.header() }

// SetControl sets the control words and then increments control_seq.
func (r *Reader) SetControl(enable bool, detail Detail, sampleEvery uint32) {
	var e uint32
	if enable {
		e = 1
	}
	r.store32(offControlEnable, e)
	r.store32(offControlDetail, uint32(detail))
	r.store32(offSampleEvery, sampleEvery)
	r.store32(offControlSeq, r.load32(offControlSeq)+1)
}

// SetControlRaw is SetControl with a raw enable value (2 = yield CUPTI, see cupti/README.md).
// It returns the control_seq it wrote: the acknowledgement to wait for.
func (r *Reader) SetControlRaw(enable uint32, detail Detail, sampleEvery uint32) uint32 {
	r.store32(offControlEnable, enable)
	r.store32(offControlDetail, uint32(detail))
	r.store32(offSampleEvery, sampleEvery)
	seq := r.load32(offControlSeq) + 1
	r.store32(offControlSeq, seq)
	return seq
}

// Detach writes control_enable=ControlDetach (keeping the detail) and bumps control_seq:
// an injected producer stops for good and closes its ring (producer_state StateDetached
// once it acknowledged). A preloaded agent treats it like ControlYield. It returns the
// control_seq it wrote (re-reading the header could see another writer's later one).
func (r *Reader) Detach() uint32 {
	return r.SetControlRaw(ControlDetach, Detail(r.load32(offControlDetail)), 0)
}

// Heartbeat stores the current CLOCK_MONOTONIC time in consumer_heartbeat_ns.
func (r *Reader) Heartbeat() { r.store64(offHeartbeatNs, MonotonicNs()) }

// Read delivers every record available now to fn, skipping padding records, and
// advances tail past them. rec aliases the shared mapping and is valid only during
// the call. It returns the number of records delivered. When fn returns an error,
// Read stops before that record (it will be delivered again) and returns the error.
// Bad framing returns an error wrapping ErrCorrupt that names the offset; the
// stream is then dead and every later Read returns the same error.
func (r *Reader) Read(fn func(rec []byte) error) (int, error) {
	if r.broken != nil {
		return 0, r.broken
	}
	if r.mem == nil {
		return 0, fmt.Errorf("ring: read on closed reader")
	}
	head := r.load64(offHead)
	tail := r.load64(offTail)
	if head < tail || head-tail > r.dataSize {
		r.broken = fmt.Errorf("%w: head %d tail %d data_size %d", ErrCorrupt, head, tail, r.dataSize)
		return 0, r.broken
	}
	n := 0
	defer func() { r.store64(offTail, tail) }()
	for tail < head {
		pos := tail & (r.dataSize - 1)
		if r.dataSize-pos < RecordHeaderSize {
			r.broken = fmt.Errorf("%w: stream offset %d: no room for a record header", ErrCorrupt, tail)
			return n, r.broken
		}
		typ := binary.LittleEndian.Uint16(r.data[pos:])
		size := uint64(binary.LittleEndian.Uint32(r.data[pos+4:]))
		if size < RecordHeaderSize || size%8 != 0 || pos+size > r.dataSize || tail+size > head {
			r.broken = fmt.Errorf("%w: stream offset %d: record type %d size %d", ErrCorrupt, tail, typ, size)
			return n, r.broken
		}
		if typ == 0 {
			tail += size
			continue
		}
		if err := fn(r.data[pos : pos+size]); err != nil {
			return n, err
		}
		tail += size
		n++
	}
	return n, nil
}

// Close unmaps the ring, closes its file and gives up the claim.
func (r *Reader) Close() error {
	if r.claim != nil {
		r.claim.Close()
		r.claim = nil
	}
	return r.close()
}

// ErrClaimed is wrapped by Claim's error when another consumer holds the ring.
var ErrClaimed = errors.New("ring: read by another tracer")

// ClaimError says who holds a ring that Claim could not take.
type ClaimError struct {
	Holder  int    // pid of the holder in our pid namespace; 0 when /proc/locks did not say
	Cmdline string // the holder's command line, when readable
}

func (e *ClaimError) Error() string {
	if e.Holder > 0 {
		return "ring: read by another tracer, " + e.Who()
	}
	return ErrClaimed.Error()
}

// Who names the holder: "pid N (command line)", "pid N", or that /proc/locks did not say.
func (e *ClaimError) Who() string {
	switch {
	case e.Holder > 0 && e.Cmdline != "":
		return fmt.Sprintf("pid %d (%s)", e.Holder, e.Cmdline)
	case e.Holder > 0:
		return fmt.Sprintf("pid %d", e.Holder)
	}
	return "a process /proc/locks does not name"
}

func (e *ClaimError) Unwrap() error { return ErrClaimed }

// Claim makes r the ring's only consumer. A ring has one tail: two readers split its
// records between them, and their control words overwrite each other's (a second tracer
// attached to a traced server). The claim is an exclusive flock(2) on an open file
// description of r's own, so it works whether r's file came from /proc/PID/fd or was
// handed over by the producer (which shares the producer's description); the kernel
// drops it when r is closed or the tracer dies. Producers never lock. Claim does not
// block: when another reader holds the ring it returns a *ClaimError naming it.
func (r *Reader) Claim() error {
	if r.claim != nil {
		return nil
	}
	if r.f == nil {
		return fmt.Errorf("ring: claim on closed reader")
	}
	own, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(r.f.Fd())), os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("ring: claim: %w", err)
	}
	for {
		err = unix.Flock(int(own.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err == nil {
		r.claim = own
		return nil
	}
	defer own.Close()
	if err != unix.EWOULDBLOCK {
		return fmt.Errorf("ring: claim: flock: %w", err)
	}
	var st unix.Stat_t
	ce := &ClaimError{}
	if unix.Fstat(int(own.Fd()), &st) == nil {
		if b, err := os.ReadFile("/proc/locks"); err == nil {
			ce.Holder = flockHolder(b, st.Dev, st.Ino)
		}
	}
	if ce.Holder > 0 {
		if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(ce.Holder), "cmdline")); err == nil {
			ce.Cmdline = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return ce
}

// flockHolder finds the pid holding a flock on the file dev:ino in the text of /proc/locks
// ("1: FLOCK  ADVISORY  WRITE 4242 00:01:2088 0 EOF"; device numbers in hex, the inode in
// decimal); 0 when none is listed.
func flockHolder(locks []byte, dev, ino uint64) int {
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	for _, line := range strings.Split(string(locks), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue // "->" lines are waiters: their columns shift, and they hold nothing
		}
		if pid, err := strconv.Atoi(f[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}
