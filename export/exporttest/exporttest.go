// Package exporttest builds synthetic sessions (metadata.json plus raw streams) from
// generated record types, for the export tests, benchmarks and the benchmark command.
package exporttest

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/profilemate/profilemate-trace/internal/record"
)

// Builder collects raw streams of one session.
type Builder struct {
	StartNs uint64
	streams map[string]*Stream
}

// Stream is one raw stream being built.
type Stream struct {
	Meta record.StreamMeta
	Buf  []byte
	N    int
}

// New returns a builder whose session starts at startNs (CLOCK_MONOTONIC).
func New(startNs uint64) *Builder { return &Builder{StartNs: startNs, streams: map[string]*Stream{}} }

// Stream returns the stream of (pid, source), creating it.
func (b *Builder) Stream(pid int, source string) *Stream {
	k := fmt.Sprintf("%d.%s", pid, source)
	st := b.streams[k]
	if st == nil {
		st = &Stream{Meta: record.StreamMeta{Source: source, Pid: pid, Comm: "synthetic"}}
		b.streams[k] = st
	}
	return st
}

// Add appends framed records (built with record.Append*).
func (st *Stream) Add(recs ...[]byte) {
	for _, r := range recs {
		st.Buf = append(st.Buf, r...)
		st.N++
	}
}

// Files returns the raw stream files' names (raw/<pid>.<source>.pmr) and contents.
func (b *Builder) Files() (map[string][]byte, error) {
	out := map[string][]byte{}
	for k, st := range b.streams {
		var buf bytesBuffer
		w, err := record.NewRawWriter(&buf, st.Meta)
		if err != nil {
			return nil, err
		}
		if err := w.Write(st.Buf); err != nil {
			return nil, err
		}
		if err := w.Flush(); err != nil {
			return nil, err
		}
		out["raw/"+k+".pmr"] = buf.b
	}
	m, _ := json.MarshalIndent(map[string]any{"tool": "profilemate-trace", "version": "test", "start_monotonic_ns": b.StartNs,
		"clock": "CLOCK_MONOTONIC", "detail": "graph"}, "", "  ")
	out["metadata.json"] = m
	return out, nil
}

// Write writes the session into dir (created).
func (b *Builder) Write(dir string) error {
	files, err := b.Files()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[n], 0o600); err != nil {
			return err
		}
	}
	return nil
}

type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// Name appends a kernel_name record.
func Name(id uint32, name string) []byte {
	return record.AppendKernelName(nil, &record.KernelName{NameID: id, NameLen: uint32(len(name)), Name: []byte(name)})
}

// Kernel appends an eager kernel record.
func Kernel(corr, nameID uint32, start, end uint64) []byte {
	return record.AppendKernel(nil, &record.Kernel{StartNS: start, EndNS: end, CorrelationID: corr, NameID: nameID, StreamID: 7})
}

// Graph appends a graph_trace record.
func Graph(corr, graphID uint32, start, end uint64) []byte {
	return record.AppendGraphTrace(nil, &record.GraphTrace{StartNS: start, EndNS: end, CorrelationID: corr, GraphID: graphID, StreamID: 7})
}

// Memcpy appends a memcpy record.
func Memcpy(corr uint32, bytes, start, end uint64) []byte {
	return record.AppendMemcpy(nil, &record.Memcpy{StartNS: start, EndNS: end, Bytes: bytes, CorrelationID: corr, StreamID: 7, CopyKind: 1})
}

// API appends an api record (driver domain).
func API(corr, tid, cbid uint32, start, end uint64) []byte {
	return record.AppendAPI(nil, &record.API{StartNS: start, EndNS: end, Domain: 4, Cbid: cbid, TID: tid, CorrelationID: corr})
}

// Forward appends a py_forward record.
func Forward(step uint64, tid, phase, tokens, reqs uint32, start, end uint64) []byte {
	r := &record.PyForward{StartNS: start, EndNS: end, StepID: step, TID: tid, Phase: phase, NumTokens: tokens, NumReqs: reqs, Runner: 1}
	switch phase {
	case 1:
		r.NumPrefillReqs, r.NumPrefillTokens = reqs, tokens
	case 2:
		r.NumDecodeReqs, r.NumDecodeTokens = reqs, tokens
	}
	return record.AppendPyForward(nil, r)
}

// Dispatch appends a py_graph_dispatch record (mode 0 NONE, 1 PIECEWISE, 2 FULL).
func Dispatch(step uint64, tid, mode, tokens uint32, reqs int32, uniform bool, ts uint64) []byte {
	f := uint32(0)
	if uniform {
		f |= 1
	}
	kind := uint32(2)
	if mode == 0 {
		kind = 1
	}
	return record.AppendPyGraphDispatch(nil, &record.PyGraphDispatch{TsNS: ts, StepID: step, TID: tid, RuntimeMode: mode, NumTokens: tokens,
		NumReqs: reqs, UniformTokenCount: -1, MaxQueryLen: -1, Flags: f, ExecKind: kind, Source: 1})
}

// U32s encodes little-endian u32s.
func U32s(v ...uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(x), byte(x>>8), byte(x>>16), byte(x>>24)
	}
	return b
}

// U64s encodes little-endian u64s.
func U64s(v ...uint64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		for k := 0; k < 8; k++ {
			b[8*i+k] = byte(x >> (8 * k))
		}
	}
	return b
}

// KV appends a py_kv_blocks record.
func KV(op, pool, numFree, aux uint32, ts uint64, ids ...uint32) []byte {
	b := U32s(ids...)
	return record.AppendPyKVBlocks(nil, &record.PyKVBlocks{TsNS: ts, TID: 1, Op: op, PoolID: pool, NumFree: numFree, Aux: aux, BlockIdsLen: uint32(len(b)), BlockIds: b})
}

// CSVRows reads an output CSV file into one map per data row, keyed by the header's column names.
func CSVRows(path string) ([]map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%s: no header", path)
	}
	rows := make([]map[string]string, 0, len(recs)-1)
	for _, r := range recs[1:] {
		row := map[string]string{}
		for i, h := range recs[0] {
			row[h] = r[i]
		}
		rows = append(rows, row)
	}
	return rows, nil
}
