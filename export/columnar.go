package export

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/profilemate/profilemate-trace/internal/record"
)

// Columnar raw streams (bundle members raw/<pid>.<src>.pmc).
//
// A raw stream is a sequence of fixed-layout records; compressing it row by row leaves
// most of the redundancy (timestamps that grow by a few microseconds, correlation ids that
// grow by one, constant thread ids) to zstd's byte matcher. In a bundle, each raw stream is
// therefore stored transposed: per record type, one column per field, timestamps and ids
// as zigzag varint deltas from the previous record of that type (end_ns as the duration
// from the record's start_ns), small fields as byte planes. ReadBundle turns a .pmc member
// back into the identical .pmr bytes; WriteBundle checks the round trip before using it.
//
//	"PMCOL\0\0\1"
//	uvarint len, raw stream header bytes (magic, version, metadata, padding) verbatim
//	uvarint n, then n uvarints: per record its type + 1, or 0 for a record kept opaque
//	opaque column: uvarint length + bytes per opaque record
//	per type, in ascending type order: uvarint type, uvarint count, uvarint ncols,
//	  then ncols columns, each uvarint length + bytes
//
// Columns of a type: header flags (uvarint), tail length (uvarint; only for types with a
// tail), one per scalar field and array element (u8/u16/f64 as raw bytes; u32/u64 as
// zigzag deltas in byte planes, see planes), the tail bytes. Records shorter than their
// layout, of a size a tailless layout does not allow, or of an unknown type stay opaque.

var colMagic = []byte("PMCOL\x00\x00\x01")

// colSuffix names columnar raw streams inside a bundle.
const colSuffix = ".pmc"

// ErrColumnar reports a columnar stream that cannot be decoded.
var ErrColumnar = errors.New("corrupt columnar stream")

type colField struct {
	off      int
	kind     string
	startOff int // for end_ns: offset of start_ns (else -1)
}

type colLayout struct {
	spec   record.Spec
	fields []colField
}

// colLayouts holds the layout of every known type (all known types are < 256).
var colLayouts = func() *[256]*colLayout {
	m := new([256]*colLayout)
	for t, sp := range record.Specs {
		if t >= 256 {
			continue
		}
		l := &colLayout{spec: sp}
		start := -1
		for _, f := range sp.Fields {
			if f.Name == "start_ns" && f.Kind == "u64" && f.Count == 0 {
				start = f.Offset
			}
		}
		for _, f := range sp.Fields {
			n := max(f.Count, 1)
			sz := kindSize(f.Kind)
			for i := 0; i < n; i++ {
				cf := colField{off: f.Offset + i*sz, kind: f.Kind, startOff: -1}
				if f.Name == "end_ns" && f.Kind == "u64" && start >= 0 && start < f.Offset {
					cf.startOff = start
				}
				l.fields = append(l.fields, cf)
			}
		}
		m[t] = l
	}
	return m
}()

func layoutOf(t record.Type) *colLayout {
	if t >= 256 {
		return nil
	}
	return colLayouts[t]
}

func kindSize(k string) int {
	switch k {
	case "u8":
		return 1
	case "u16":
		return 2
	case "u32", "i32":
		return 4
	default:
		return 8
	}
}

func zig(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzig(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// encodeColumnar transposes a raw stream file. It fails on a stream whose header or
// framing is broken (such a stream is bundled as it is).
func encodeColumnar(raw []byte) ([]byte, error) {
	rr, err := record.NewRawReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	hdrLen := int(rr.Offset())
	type colSet struct {
		n    int
		cols [][]byte
		vals [][]uint64 // zigzag deltas of the u32/u64 columns, written as byte planes
		prev []uint64
	}
	var sets [256]*colSet
	// count records per type first, so that every column is allocated once
	var counts [256]int
	for off := hdrLen; off+record.HeaderSize <= len(raw); {
		size := int(binary.LittleEndian.Uint32(raw[off+4:]))
		if size < record.HeaderSize {
			break
		}
		counts[binary.LittleEndian.Uint16(raw[off:])&0xff]++
		off += size
	}
	var typesCol, opaque []byte
	n := 0
	for off := hdrLen; off < len(raw); {
		if len(raw)-off < record.HeaderSize {
			return nil, fmt.Errorf("%w: truncated", record.ErrCorrupt)
		}
		t := record.Type(binary.LittleEndian.Uint16(raw[off:]))
		size := int(binary.LittleEndian.Uint32(raw[off+4:]))
		if size < record.HeaderSize || size%8 != 0 || size > len(raw)-off {
			return nil, fmt.Errorf("%w: bad record at %d", record.ErrCorrupt, off)
		}
		rec := raw[off : off+size]
		off += size
		n++
		l := layoutOf(t)
		if l == nil || size < l.spec.Size || (l.spec.Tail == "" && size != l.spec.Size) {
			typesCol = binary.AppendUvarint(typesCol, 0)
			opaque = binary.AppendUvarint(opaque, uint64(size))
			opaque = append(opaque, rec...)
			continue
		}
		typesCol = binary.AppendUvarint(typesCol, uint64(t)+1)
		cs := sets[t]
		if cs == nil {
			nc := 1 + len(l.fields) + 1
			if l.spec.Tail != "" {
				nc++
			}
			cs = &colSet{cols: make([][]byte, nc), vals: make([][]uint64, nc), prev: make([]uint64, len(l.fields))}
			first := 1
			if l.spec.Tail != "" {
				first = 2
			}
			for i, f := range l.fields {
				switch f.kind {
				case "u32", "i32", "u64", "i64":
					cs.vals[first+i] = make([]uint64, 0, counts[t])
				default:
					cs.cols[first+i] = make([]byte, 0, counts[t]*kindSize(f.kind))
				}
			}
			sets[t] = cs
		}
		cs.n++
		c := 0
		cs.cols[c] = binary.AppendUvarint(cs.cols[c], uint64(binary.LittleEndian.Uint16(rec[2:])))
		c++
		if l.spec.Tail != "" {
			cs.cols[c] = binary.AppendUvarint(cs.cols[c], uint64(size-l.spec.Size))
			c++
		}
		for i, f := range l.fields {
			col := &cs.cols[c+i]
			switch f.kind {
			case "u8":
				*col = append(*col, rec[f.off])
			case "u16":
				*col = append(*col, rec[f.off], rec[f.off+1])
			case "f64":
				*col = append(*col, rec[f.off:f.off+8]...)
			case "u32", "i32":
				v := binary.LittleEndian.Uint32(rec[f.off:])
				cs.vals[c+i] = append(cs.vals[c+i], zig(int64(int32(v-uint32(cs.prev[i])))))
				cs.prev[i] = uint64(v)
			default: // u64, i64
				v := binary.LittleEndian.Uint64(rec[f.off:])
				if f.startOff >= 0 {
					cs.vals[c+i] = append(cs.vals[c+i], zig(int64(v-binary.LittleEndian.Uint64(rec[f.startOff:]))))
				} else {
					cs.vals[c+i] = append(cs.vals[c+i], zig(int64(v-cs.prev[i])))
					cs.prev[i] = v
				}
			}
		}
		last := len(cs.cols) - 1
		cs.cols[last] = append(cs.cols[last], rec[l.spec.Size:]...)
	}
	out := append([]byte(nil), colMagic...)
	out = binary.AppendUvarint(out, uint64(hdrLen))
	out = append(out, raw[:hdrLen]...)
	out = binary.AppendUvarint(out, uint64(n))
	out = append(out, typesCol...)
	out = binary.AppendUvarint(out, uint64(len(opaque)))
	out = append(out, opaque...)
	for t := 0; t < 256; t++ {
		cs := sets[t]
		if cs == nil {
			continue
		}
		out = binary.AppendUvarint(out, uint64(t))
		out = binary.AppendUvarint(out, uint64(cs.n))
		out = binary.AppendUvarint(out, uint64(len(cs.cols)))
		for i, v := range cs.vals {
			if v != nil {
				cs.cols[i] = planes(v)
			}
		}
		for _, c := range cs.cols {
			out = binary.AppendUvarint(out, uint64(len(c)))
			out = append(out, c...)
		}
	}
	return out, nil
}

// planes writes values as one width byte w (the bytes the largest needs) followed by w
// byte planes: all lowest bytes, then all second bytes, … (zstd compresses the nearly
// constant high planes to almost nothing).
func planes(v []uint64) []byte {
	var or uint64
	for _, x := range v {
		or |= x
	}
	w := 0
	for or != 0 {
		w++
		or >>= 8
	}
	out := make([]byte, 1+w*len(v))
	out[0] = byte(w)
	for p := 0; p < w; p++ {
		dst := out[1+p*len(v):]
		for i, x := range v {
			dst[i] = byte(x >> (8 * p))
		}
	}
	return out
}

type colReader struct {
	b   []byte
	err error
	// byte-plane columns
	planes [][]byte
	pos    int
}

// initPlanes prepares a byte-plane column of n values.
func (r *colReader) initPlanes(n uint64) {
	if len(r.b) == 0 {
		r.fail()
		return
	}
	w := int(r.b[0])
	if w > 8 || uint64(len(r.b)-1) != uint64(w)*n {
		r.fail()
		return
	}
	for p := 0; p < w; p++ {
		r.planes = append(r.planes, r.b[1+p*int(n):1+(p+1)*int(n)])
	}
	r.planes = append(r.planes, nil) // marks an initialised plane column even when w == 0
}

func (r *colReader) plane() uint64 {
	if r.err != nil {
		return 0
	}
	var v uint64
	for p, pl := range r.planes[:len(r.planes)-1] {
		v |= uint64(pl[r.pos]) << (8 * p)
	}
	r.pos++
	return v
}

func (r *colReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *colReader) bytes(n uint64) []byte {
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *colReader) fail() {
	if r.err == nil {
		r.err = ErrColumnar
	}
	r.b = nil
}

// decodeColumnar rebuilds the raw stream bytes. maxOut bounds the result.
func decodeColumnar(b []byte, maxOut int) ([]byte, error) {
	if !bytes.HasPrefix(b, colMagic) {
		return nil, fmt.Errorf("%w: bad magic", ErrColumnar)
	}
	r := &colReader{b: b[len(colMagic):]}
	hdr := r.bytes(r.uvarint())
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		return nil, ErrColumnar
	}
	types := make([]uint64, n)
	for i := range types {
		types[i] = r.uvarint()
	}
	opaque := &colReader{b: r.bytes(r.uvarint())}
	type colSet struct {
		l    *colLayout
		n    uint64
		cols []*colReader
		prev []uint64
	}
	var sets [256]*colSet
	for len(r.b) > 0 && r.err == nil {
		t := record.Type(r.uvarint())
		cnt := r.uvarint()
		nc := r.uvarint()
		l := layoutOf(t)
		if r.err != nil || l == nil || sets[t] != nil {
			return nil, ErrColumnar
		}
		want := 1 + len(l.fields) + 1
		if l.spec.Tail != "" {
			want++
		}
		if nc != uint64(want) {
			return nil, ErrColumnar
		}
		if cnt > n {
			return nil, ErrColumnar
		}
		cs := &colSet{l: l, n: cnt, prev: make([]uint64, len(l.fields))}
		for i := 0; i < want; i++ {
			cs.cols = append(cs.cols, &colReader{b: r.bytes(r.uvarint())})
		}
		first := 1
		if l.spec.Tail != "" {
			first = 2
		}
		for i, f := range l.fields {
			if f.kind == "u32" || f.kind == "i32" || f.kind == "u64" || f.kind == "i64" {
				cs.cols[first+i].initPlanes(cnt)
			}
		}
		sets[t] = cs
	}
	if r.err != nil {
		return nil, r.err
	}
	out := make([]byte, 0, min(maxOut, len(hdr)+len(b)*4))
	out = append(out, hdr...)
	for _, tp := range types {
		if len(out) > maxOut {
			return nil, fmt.Errorf("%w: larger than %d bytes", ErrColumnar, maxOut)
		}
		if tp == 0 {
			out = append(out, opaque.bytes(opaque.uvarint())...)
			if opaque.err != nil {
				return nil, ErrColumnar
			}
			continue
		}
		if tp-1 > math.MaxUint16 {
			return nil, ErrColumnar
		}
		t := record.Type(tp - 1)
		if t >= 256 {
			return nil, ErrColumnar
		}
		cs := sets[t]
		if cs == nil || cs.n == 0 {
			return nil, ErrColumnar
		}
		cs.n--
		l := cs.l
		flags := cs.cols[0].uvarint()
		c := 1
		size := l.spec.Size
		if l.spec.Tail != "" {
			extra := cs.cols[1].uvarint()
			if extra > uint64(maxOut) {
				return nil, ErrColumnar
			}
			size += int(extra)
			c = 2
		}
		start := len(out)
		out = append(out, make([]byte, size)...)
		rec := out[start:]
		binary.LittleEndian.PutUint16(rec, uint16(t))
		binary.LittleEndian.PutUint16(rec[2:], uint16(flags))
		binary.LittleEndian.PutUint32(rec[4:], uint32(size))
		for i, f := range l.fields {
			col := cs.cols[c+i]
			switch f.kind {
			case "u8":
				copy(rec[f.off:], col.bytes(1))
			case "u16":
				copy(rec[f.off:], col.bytes(2))
			case "f64":
				copy(rec[f.off:], col.bytes(8))
			case "u32", "i32":
				v := uint32(cs.prev[i]) + uint32(int32(unzig(col.plane())))
				binary.LittleEndian.PutUint32(rec[f.off:], v)
				cs.prev[i] = uint64(v)
			default:
				d := uint64(unzig(col.plane()))
				var v uint64
				if f.startOff >= 0 {
					v = binary.LittleEndian.Uint64(rec[f.startOff:]) + d
				} else {
					v = cs.prev[i] + d
					cs.prev[i] = v
				}
				binary.LittleEndian.PutUint64(rec[f.off:], v)
			}
			if col.err != nil {
				return nil, ErrColumnar
			}
		}
		tail := cs.cols[len(cs.cols)-1]
		copy(rec[l.spec.Size:], tail.bytes(uint64(size-l.spec.Size)))
		if tail.err != nil || cs.cols[0].err != nil || (c == 2 && cs.cols[1].err != nil) {
			return nil, ErrColumnar
		}
	}
	return out, nil
}
