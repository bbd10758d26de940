package collect

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/record"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

type files struct{ dir string }

func (f files) create(name string) (io.WriteCloser, error) {
	return os.OpenFile(filepath.Join(f.dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
}

func readStream(t *testing.T, path string) (record.StreamMeta, []record.Type) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := record.NewRawReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var types []record.Type
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, record.TypeOf(rec))
	}
	return r.Meta, types
}

// A ring found by scanning /proc and handed over again on the socket is collected once,
// enabled at the requested detail, and its stream ends with the ring's counters.
func TestScanDedupeEnableAndStats(t *testing.T) {
	w, err := ring.Create(ring.SourceCUPTI, 1<<12)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	dir := t.TempDir()
	c := New(Options{Create: files{dir}.create, Enable: true, Detail: ring.DetailNodes, DisableOnFinish: true, Poll: 10 * time.Millisecond, Scan: 10 * time.Millisecond})
	c.Watch(os.Getpid())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx, nil); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(c.Sources()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := c.Sources(); len(got) != 1 || got[0] != "cupti" {
		t.Fatalf("sources after scan = %v", got)
	}
	// The same memfd handed over again (as over the control socket) is not a second stream.
	dup, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(w.File().Fd())), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Add(os.Getpid(), "cupti", dup, "socket"); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Sources()); n != 1 {
		t.Fatalf("%d streams after a duplicate hand-over", n)
	}
	if en, d, _ := w.Ack(); en != 1 || d != ring.DetailNodes {
		t.Fatalf("control after attach: enable=%d detail=%v", en, d)
	}
	// 200 records of 32 bytes do not fit a 4 KiB ring at once: the collector must keep up
	// while the producer writes, so write slowly enough to be drained.
	written, refused := 0, 0
	for i := 0; i < 200; i++ {
		for !w.Write(record.AppendLog(nil, &record.Log{TsNS: uint64(i), Text: []byte("x")})) {
			refused++ // the producer counts each refusal as a drop
			time.Sleep(time.Millisecond)
		}
		written++
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	infos, err := c.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Records != uint64(written) || infos[0].RecordsDropped != uint64(refused) {
		t.Fatalf("stream info = %+v, want %d records and %d drops", infos, written, refused)
	}
	if en, _, _ := w.Ack(); en != 0 {
		t.Fatal("ring not returned to dormant at finish")
	}
	meta, types := readStream(t, filepath.Join(dir, filepath.Base(infos[0].File)))
	if meta.Pid != os.Getpid() || meta.Source != "cupti" {
		t.Fatalf("meta = %+v", meta)
	}
	if len(types) != written+1 || types[len(types)-1] != record.TypeStreamStats {
		t.Fatalf("got %d records, last %v", len(types), types[len(types)-1])
	}
}

// Drops in the ring are reported, never hidden.
func TestDropsReported(t *testing.T) {
	w, err := ring.Create(ring.SourcePyhook, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	dropped := 0
	for i := 0; i < 10; i++ {
		if !w.Write(record.AppendLog(nil, &record.Log{TsNS: 1})) {
			dropped++
		}
	}
	if dropped == 0 {
		t.Fatal("a 64-byte ring took ten 24-byte records")
	}
	dir := t.TempDir()
	c := New(Options{Create: files{dir}.create})
	dup, _ := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(w.File().Fd())), os.O_RDWR, 0)
	if err := c.Add(os.Getpid(), "pyhook", dup, "socket"); err != nil {
		t.Fatal(err)
	}
	infos, err := c.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if infos[0].RecordsDropped != uint64(dropped) {
		t.Fatalf("records_dropped = %d, want %d", infos[0].RecordsDropped, dropped)
	}
}

func TestDescendants(t *testing.T) {
	got := Descendants([]int{1})
	found := false
	for _, p := range got {
		if p == os.Getpid() {
			found = true
		}
	}
	if !found {
		t.Fatalf("this process is not a descendant of pid 1: %v", got)
	}
}

// Two collectors on one ring (a daemon window and an attach on the same server): the second
// neither reads the ring nor writes its control words while the first holds it, names the
// first as the holder, and takes the ring over once the first finishes. Every record is read
// exactly once, by whichever collector held the ring when it was written.
func TestSecondCollectorWaitsForTheRing(t *testing.T) {
	w, err := ring.Create(ring.SourceCUPTI, 1<<12)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	type run struct {
		c      *Collector
		dir    string
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(detail ring.Detail) *run {
		r := &run{dir: t.TempDir(), done: make(chan struct{})}
		r.c = New(Options{Create: files{r.dir}.create, Enable: true, Detail: detail, DisableOnFinish: true, Poll: 10 * time.Millisecond, Scan: 10 * time.Millisecond})
		r.c.Watch(os.Getpid())
		var ctx context.Context
		ctx, r.cancel = context.WithCancel(context.Background())
		go func() { r.c.Run(ctx, nil); close(r.done) }()
		return r
	}
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	write := func(n int) {
		for i := 0; i < n; i++ {
			for !w.Write(record.AppendLog(nil, &record.Log{TsNS: uint64(i), Text: []byte("x")})) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	finish := func(r *run) []StreamInfo {
		r.cancel()
		<-r.done
		infos, err := r.c.Finish()
		if err != nil {
			t.Fatal(err)
		}
		return infos
	}

	first := start(ring.DetailNodes)
	until("the first collector's stream", func() bool { return len(first.c.Sources()) == 1 })
	second := start(ring.DetailGraph)
	until("the second collector to find the ring held", func() bool { return len(second.c.Contended()) == 1 })
	ct := second.c.Contended()[0]
	if ct.Pid != os.Getpid() || ct.Source != "cupti" || ct.Holder != os.Getpid() || ct.TakenOverSec != 0 {
		t.Fatalf("contention %+v: want this process's cupti ring held by pid %d", ct, os.Getpid())
	}
	write(60)
	time.Sleep(50 * time.Millisecond) // several scans of the second collector
	if n := len(second.c.Sources()); n != 0 {
		t.Fatalf("the second collector reads the held ring (%d streams)", n)
	}
	if en, d, _ := w.Ack(); en != 1 || d != ring.DetailNodes {
		t.Fatalf("control words %d/%v: the second collector wrote them while the first held the ring", en, d)
	}
	a := finish(first)
	until("the second collector to take the ring over", func() bool { return len(second.c.Sources()) == 1 })
	if en, d, _ := w.Ack(); en != 1 || d != ring.DetailGraph {
		t.Fatalf("control words after the take-over: %d/%v, want the second collector's graph detail", en, d)
	}
	write(40)
	time.Sleep(50 * time.Millisecond)
	b := finish(second)
	if len(a) != 1 || a[0].Records != 60 || len(b) != 1 || b[0].Records != 40 {
		t.Fatalf("records: first %+v, second %+v; want 60 and 40", a, b)
	}
	ct = second.c.Contended()[0]
	if ct.TakenOverSec <= ct.RefusedSec || !strings.Contains(ct.Message(), "until") || !strings.Contains(ct.Message(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("contention at the end %+v: %q", ct, ct.Message())
	}
}
