package record

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestRawRoundTripAndTruncation(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewRawWriter(&buf, StreamMeta{Source: "cupti", Pid: 77, Comm: "python3"})
	if err != nil {
		t.Fatal(err)
	}
	var recs []byte
	for i := 0; i < 3; i++ {
		recs = AppendLog(recs, &Log{TsNS: uint64(i), Text: []byte("abc")})
	}
	recs = append(recs, 0, 0, 0, 0, 8, 0, 0, 0) // a padding record is dropped
	if err := w.Write(recs); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	r, err := NewRawReader(bytes.NewReader(full))
	if err != nil {
		t.Fatal(err)
	}
	if r.Meta.Pid != 77 || r.Meta.Source != "cupti" {
		t.Fatalf("meta %+v", r.Meta)
	}
	n := 0
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		l, err := DecodeLog(rec)
		if err != nil || l.TsNS != uint64(n) {
			t.Fatalf("record %d: %+v %v", n, l, err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("read %d records, want 3", n)
	}
	// Cut the last record in half: two records come back, then a corruption error.
	r, _ = NewRawReader(bytes.NewReader(full[:len(full)-12]))
	got := 0
	for {
		_, err := r.Next()
		if err == nil {
			got++
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated stream: %v", err)
		}
		break
	}
	if got != 2 {
		t.Fatalf("salvaged %d records, want 2", got)
	}
	if _, err := NewRawReader(bytes.NewReader([]byte("not a raw stream at all"))); !errors.Is(err, ErrNotRaw) {
		t.Fatalf("garbage: %v", err)
	}
	bad := append([]byte(nil), full...)
	bad[8] = 9
	if _, err := NewRawReader(bytes.NewReader(bad)); !errors.Is(err, ErrVersion) {
		t.Fatalf("version: %v", err)
	}
}

func FuzzRawReader(f *testing.F) {
	var buf bytes.Buffer
	w, _ := NewRawWriter(&buf, StreamMeta{Source: "pyhook", Pid: 1})
	w.Write(AppendLog(nil, &Log{TsNS: 1, Text: []byte("x")}))
	w.Flush()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewRawReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		for i := 0; i < 1<<16; i++ {
			rec, err := r.Next()
			if err != nil {
				return
			}
			if spec, ok := Specs[TypeOf(rec)]; ok && spec.Name == "log" {
				DecodeLog(rec)
			}
		}
	})
}
