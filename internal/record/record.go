// Package record defines the framed records that every profilemate source emits (the CUPTI
// agent, the Python hook, the eBPF programs) and the raw stream files that hold them.
//
// The layouts live in schema/*.json and are generated into records_gen.go (Go),
// c/pm_records.h (C and eBPF) and pyhook/profilemate_trace/_records.py (Python); see
// docs/record-format.md for the wire rules.
package record

//go:generate go run ./gen -schema schema -c c/pm_records.h -go records_gen.go -py ../../pyhook/profilemate_trace/_records.py

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Type is a record's type id (the first u16 of its header).
type Type uint16

// TypePad marks padding at the end of a ring's data area; it carries no data.
const TypePad Type = 0

// HeaderSize is the size of the header that starts every record.
const HeaderSize = 8

// Spec describes one generated record layout.
type Spec struct {
	Name   string
	Source string
	Size   int // fixed part including the header, a multiple of 8
	Tail   string
	Fields []FieldSpec
}

// FieldSpec describes one fixed field of a record.
type FieldSpec struct {
	Name   string
	Kind   string // u8 u16 u32 u64 i32 i64 f64
	Offset int
	Count  int // 0 for a scalar
}

// ErrCorrupt reports a record whose framing is broken.
var ErrCorrupt = errors.New("corrupt record")

// ErrShort reports a record shorter than its type's fixed layout.
var ErrShort = errors.New("record shorter than its layout")

// Peek returns the type and size of the record at the start of b, validating the framing.
func Peek(b []byte) (Type, int, error) {
	if len(b) < HeaderSize {
		return 0, 0, fmt.Errorf("%w: %d bytes left, need a header", ErrCorrupt, len(b))
	}
	t := Type(binary.LittleEndian.Uint16(b))
	size := int(binary.LittleEndian.Uint32(b[4:]))
	if size < HeaderSize || size%8 != 0 {
		return t, size, fmt.Errorf("%w: type %d has size %d", ErrCorrupt, t, size)
	}
	if size > len(b) {
		return t, size, fmt.Errorf("%w: type %d size %d runs past the end (%d bytes left)", ErrCorrupt, t, size, len(b))
	}
	return t, size, nil
}

// Iterate calls fn for each framed record in b, skipping padding records. It stops at the
// first framing error and returns it together with the offset where it happened.
func Iterate(b []byte, fn func(rec []byte) error) (int, error) {
	off := 0
	for off < len(b) {
		t, size, err := Peek(b[off:])
		if err != nil {
			return off, err
		}
		if t != TypePad {
			if err := fn(b[off : off+size]); err != nil {
				return off, err
			}
		}
		off += size
	}
	return off, nil
}

// TypeOf returns the type of a framed record (0 if too short).
func TypeOf(rec []byte) Type {
	if len(rec) < 2 {
		return 0
	}
	return Type(binary.LittleEndian.Uint16(rec))
}

// Name returns the schema name of t, or "type_<n>" for an unknown type.
func (t Type) String() string {
	if s, ok := Specs[t]; ok {
		return s.Name
	}
	return fmt.Sprintf("type_%d", uint16(t))
}

func check(b []byte, want Type, size int) error {
	t, n, err := Peek(b)
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("record type %d, want %d", t, want)
	}
	if n < size {
		return fmt.Errorf("%w: %s is %d bytes, layout needs %d", ErrShort, want, n, size)
	}
	return nil
}

func tailBytes(b []byte, fixed, n int) ([]byte, error) {
	size := int(binary.LittleEndian.Uint32(b[4:]))
	if n < 0 || fixed+n > size {
		return nil, fmt.Errorf("%w: tail of %d bytes does not fit a %d-byte record", ErrCorrupt, n, size)
	}
	return b[fixed : fixed+n], nil
}

func putHeader(b []byte, t Type, size int) {
	binary.LittleEndian.PutUint16(b, uint16(t))
	binary.LittleEndian.PutUint16(b[2:], 0)
	binary.LittleEndian.PutUint32(b[4:], uint32(size))
}

// grow appends n zero bytes to dst.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		dst = dst[:len(dst)+n]
		clear(dst[len(dst)-n:])
		return dst
	}
	return append(dst, make([]byte, n)...)
}
