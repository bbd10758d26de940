package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func rec(typ uint16, seq uint64, extra int) []byte {
	body := make([]byte, 8+extra)
	binary.LittleEndian.PutUint64(body, seq)
	for i := 8; i < len(body); i++ {
		body[i] = byte(seq + uint64(i))
	}
	return Frame(typ, body)
}

func openReader(t *testing.T, w *Writer) *Reader {
	t.Helper()
	found, err := Find(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		if f.Source == w.Header().Source.String() {
			fi1, _ := os.Stat(f.Path)
			fi2, _ := w.File().Stat()
			if os.SameFile(fi1, fi2) {
				r, err := Open(f.Path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return r
			}
		}
	}
	t.Fatalf("ring of this writer not found in /proc/self/fd: %+v", found)
	return nil
}

func TestHeaderOffsets(t *testing.T) {
	w, err := Create(SourceCUPTI, 1<<12)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := openReader(t, w)
	h := r.Header()
	if string(h.Magic[:]) != Magic || h.Version != 1 || h.HeaderSize != 4096 || h.DataSize != 4096 ||
		h.Pid != uint32(os.Getpid()) || h.Source != SourceCUPTI || h.CreatedNs == 0 || h.ProducerState != StateRunning {
		t.Fatalf("header %+v", h)
	}
	r.SetControl(true, DetailNodes, 7)
	r.Heartbeat()
	raw := w.mem
	le := binary.LittleEndian
	if le.Uint32(raw[64:]) != 1 || le.Uint32(raw[68:]) != 2 || le.Uint32(raw[72:]) != 1 || le.Uint32(raw[88:]) != 7 || le.Uint64(raw[80:]) == 0 {
		t.Fatalf("control words at wrong offsets: % x", raw[64:96])
	}
	en, d, s := w.Ack()
	if en != 1 || d != DetailNodes || s != 7 || r.Header().ControlAck != 1 {
		t.Fatalf("ack: %d %v %d %+v", en, d, s, r.Header())
	}
	w.SetLateStart(111, 222)
	if le.Uint64(raw[104:]) != 111 || le.Uint64(raw[96:]) != 222 {
		t.Fatalf("late_start_ns/first_enable_ns at wrong offsets: % x", raw[96:112])
	}
	if h := r.Header(); h.LateStartNs != 111 || h.FirstEnableNs != 222 {
		t.Fatalf("LateStartNs/FirstEnableNs: %+v", h)
	}
	r.Detach()
	if le.Uint32(raw[64:]) != ControlDetach || le.Uint32(raw[68:]) != 2 || le.Uint32(raw[72:]) != 2 {
		t.Fatalf("detach control words: % x", raw[64:80])
	}
	w.Write(rec(5, 1, 0))
	if le.Uint64(raw[128:]) != 16 || le.Uint64(raw[136:]) != 1 {
		t.Fatalf("head/records_written at wrong offsets")
	}
	if _, err := r.Read(func([]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if le.Uint64(raw[192:]) != 16 {
		t.Fatalf("tail at wrong offset")
	}
}

func TestWraparound(t *testing.T) {
	w, err := Create(SourcePyhook, 256)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := openReader(t, w)
	var next uint64
	var got uint64
	for round := 0; round < 200; round++ {
		// sizes 16..56 so records straddle the end at varying offsets
		for i := 0; i < 3; i++ {
			if !w.Write(rec(uint16(1+next%3), next, int(next%5)*8)) {
				t.Fatalf("unexpected drop at %d (%+v)", next, w.Header())
			}
			next++
		}
		_, err := r.Read(func(b []byte) error {
			seq := binary.LittleEndian.Uint64(b[8:])
			if seq != got {
				return fmt.Errorf("got seq %d want %d", seq, got)
			}
			if typ := binary.LittleEndian.Uint16(b); typ != uint16(1+seq%3) {
				return fmt.Errorf("type %d", typ)
			}
			if len(b) != 16+int(seq%5)*8 {
				return fmt.Errorf("len %d", len(b))
			}
			for i := 16; i < len(b); i++ {
				if b[i] != byte(seq+uint64(i-8)) {
					return fmt.Errorf("payload")
				}
			}
			got++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got != next || w.Header().RecordsDropped != 0 {
		t.Fatalf("got %d of %d, %+v", got, next, w.Header())
	}
	if h := r.Header(); h.Head != h.Tail || h.Head <= 256*10 {
		t.Fatalf("head %d tail %d", h.Head, h.Tail)
	}
}

func TestFullRingDrops(t *testing.T) {
	w, err := Create(SourceCUPTI, 128)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := openReader(t, w)
	ok := 0
	for i := 0; i < 20; i++ {
		if w.Write(rec(1, uint64(i), 8)) { // 24 bytes
			ok++
		}
	}
	h := r.Header()
	if ok != 5 || h.RecordsWritten != 5 || h.RecordsDropped != 15 || h.BytesDropped != 15*24 {
		t.Fatalf("ok=%d %+v", ok, h)
	}
	if w.Write(make([]byte, 256)) {
		t.Fatal("record larger than the ring accepted")
	}
	n, err := r.Read(func([]byte) error { return nil })
	if err != nil || n != 5 {
		t.Fatal(n, err)
	}
	// space again; a record that needs padding at the end
	if !w.Write(rec(1, 99, 16)) || !w.Write(rec(1, 100, 16)) {
		t.Fatalf("after drain: %+v", r.Header())
	}
	var seqs []uint64
	if _, err := r.Read(func(b []byte) error { seqs = append(seqs, binary.LittleEndian.Uint64(b[8:])); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[99 100]" {
		t.Fatal(seqs)
	}
}

func TestReadStopsOnCallbackError(t *testing.T) {
	w, _ := Create(SourceCUPTI, 1024)
	defer w.Close()
	r := openReader(t, w)
	for i := 0; i < 4; i++ {
		w.Write(rec(1, uint64(i), 0))
	}
	stop := errors.New("stop")
	n, err := r.Read(func(b []byte) error {
		if binary.LittleEndian.Uint64(b[8:]) == 2 {
			return stop
		}
		return nil
	})
	if n != 2 || err != stop {
		t.Fatal(n, err)
	}
	var seqs []uint64
	r.Read(func(b []byte) error { seqs = append(seqs, binary.LittleEndian.Uint64(b[8:])); return nil })
	if fmt.Sprint(seqs) != "[2 3]" {
		t.Fatal(seqs)
	}
}

func TestCorruption(t *testing.T) {
	for _, tc := range []struct {
		name string
		size uint32
	}{{"small", 4}, {"unaligned", 20}, {"pastend", 4096}, {"pasthead", 64}} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := Create(SourceCUPTI, 1024)
			defer w.Close()
			r := openReader(t, w)
			w.Write(rec(1, 0, 0))
			w.Write(rec(1, 1, 0))
			w.Write(rec(1, 2, 0))
			binary.LittleEndian.PutUint32(w.data[16+4:], tc.size) // break the second record
			var got int
			n, err := r.Read(func([]byte) error { got++; return nil })
			if !errors.Is(err, ErrCorrupt) || n != 1 || got != 1 {
				t.Fatalf("n=%d err=%v", n, err)
			}
			if want := "stream offset 16"; !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name the offset", err)
			}
			if _, err2 := r.Read(func([]byte) error { return nil }); err2 == nil {
				t.Fatal("stream should stay dead")
			}
		})
	}
	t.Run("head", func(t *testing.T) {
		w, _ := Create(SourceCUPTI, 1024)
		defer w.Close()
		r := openReader(t, w)
		w.store64(offHead, 5000)
		if _, err := r.Read(func([]byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Fatal(err)
		}
	})
	t.Run("unknown types are delivered", func(t *testing.T) {
		w, _ := Create(SourceCUPTI, 1024)
		defer w.Close()
		r := openReader(t, w)
		w.Write(rec(250, 0, 0))
		n, err := r.Read(func([]byte) error { return nil })
		if n != 1 || err != nil {
			t.Fatal(n, err)
		}
	})
}

func TestOpenRejectsBadFiles(t *testing.T) {
	f, _ := os.CreateTemp(t.TempDir(), "x")
	f.Write(make([]byte, 8192))
	if _, err := OpenFile(f); err == nil {
		t.Fatal("zero file accepted")
	}
	f.Close()
}

func TestConcurrentProducerConsumer(t *testing.T) {
	w, _ := Create(SourceCUPTI, 4096)
	defer w.Close()
	r := openReader(t, w)
	const producers, per = 4, 20000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				w.Write(rec(uint16(p+1), uint64(i), (i%3)*8))
			}
		}(p)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	last := make([]int64, producers)
	for i := range last {
		last[i] = -1
	}
	var got uint64
	check := func(b []byte) error {
		p := int(binary.LittleEndian.Uint16(b)) - 1
		seq := int64(binary.LittleEndian.Uint64(b[8:]))
		if seq <= last[p] {
			return fmt.Errorf("producer %d: seq %d after %d", p, seq, last[p])
		}
		last[p] = seq
		got++
		return nil
	}
	for {
		if _, err := r.Read(check); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
			if _, err := r.Read(check); err != nil {
				t.Fatal(err)
			}
			h := r.Header()
			if got+h.RecordsDropped != producers*per || got != h.RecordsWritten {
				t.Fatalf("got %d dropped %d written %d", got, h.RecordsDropped, h.RecordsWritten)
			}
			t.Logf("delivered %d dropped %d", got, h.RecordsDropped)
			return
		default:
		}
	}
}

func TestControlSocket(t *testing.T) {
	cs, err := ListenControl(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	w, _ := Create(SourcePyhook, 1024)
	defer w.Close()
	w.Write(rec(70, 42, 0))
	conn, err := net.Dial("unix", cs.Path())
	if err != nil {
		t.Fatal(err)
	}
	uc := conn.(*net.UnixConn)
	if _, _, err := uc.WriteMsgUnix([]byte("pyhook 4242\n"), syscall.UnixRights(int(w.File().Fd())), nil); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	// a bad message is ignored
	c2, _ := net.Dial("unix", cs.Path())
	c2.Write([]byte("garbage"))
	c2.Close()
	select {
	case in := <-cs.Incoming():
		if in.Source != "pyhook" || in.Pid != 4242 {
			t.Fatalf("%+v", in)
		}
		r, err := OpenFile(in.File)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var seq uint64
		n, err := r.Read(func(b []byte) error { seq = binary.LittleEndian.Uint64(b[8:]); return nil })
		if n != 1 || err != nil || seq != 42 {
			t.Fatal(n, err, seq)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no incoming ring")
	}
}

func TestParse(t *testing.T) {
	for _, s := range []string{"off", "graph", "nodes"} {
		d, err := ParseDetail(s)
		if err != nil || d.String() != s {
			t.Fatal(s, d, err)
		}
	}
	if _, err := ParseDetail("x"); err == nil {
		t.Fatal("bad detail accepted")
	}
	if ParseSource("cupti") != SourceCUPTI || SourceCUPTI.String() != "cupti" {
		t.Fatal("source")
	}
}

// TestOpenNotReady: a ring file whose producer has not written the header yet (empty, or the
// magic, written last, still zero) is ErrNotReady, so a tracer retries instead of giving up.
func TestOpenNotReady(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, HeaderSize + 4096} {
		p := fmt.Sprintf("%s/ring-%d", dir, size)
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(p); !errors.Is(err, ErrNotReady) {
			t.Errorf("size %d: %v, want ErrNotReady", size, err)
		}
	}
	w, err := Create(SourceCUPTI, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if string(w.mem[:8]) != Magic {
		t.Fatal("Create must leave the magic written")
	}
}
