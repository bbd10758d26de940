// Command gen turns the record schemas in internal/record/schema/*.json into the C header,
// the Go types and the Python struct specs, so that a layout is written down exactly once.
//
//	go run ./gen -schema schema -c c/pm_records.h -go records_gen.go -py ../../pyhook/profilemate_trace/_records.py
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/format"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type field struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Count int    `json:"count,omitempty"`
	Doc   string `json:"doc,omitempty"`

	offset int
}

type rec struct {
	Name   string  `json:"name"`
	Type   int     `json:"type"`
	Doc    string  `json:"doc,omitempty"`
	Fields []field `json:"fields"`
	Tail   string  `json:"tail,omitempty"`

	source string
	size   int // fixed size including the 8-byte header, padded to 8
}

type schema struct {
	Source  string `json:"source"`
	Doc     string `json:"doc,omitempty"`
	Records []rec  `json:"records"`
}

var scalar = map[string]struct {
	size        int
	c, goT, pyF string
}{
	"u8":  {1, "uint8_t", "uint8", "B"},
	"u16": {2, "uint16_t", "uint16", "H"},
	"u32": {4, "uint32_t", "uint32", "I"},
	"u64": {8, "uint64_t", "uint64", "Q"},
	"i32": {4, "int32_t", "int32", "i"},
	"i64": {8, "int64_t", "int64", "q"},
	"f64": {8, "double", "float64", "d"},
}

var ranges = map[string][2]int{
	"cupti":  {1, 63},
	"pyhook": {64, 127},
	"ebpf":   {128, 191},
	"common": {192, 254},
}

func main() {
	dir := flag.String("schema", "schema", "directory of *.json schemas")
	cOut := flag.String("c", "", "C header to write")
	goOut := flag.String("go", "", "Go file to write")
	pyOut := flag.String("py", "", "Python module to write")
	flag.Parse()
	recs, err := load(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	outs := []struct {
		path string
		fn   func([]rec) ([]byte, error)
	}{{*cOut, genC}, {*goOut, genGo}, {*pyOut, genPy}}
	for _, o := range outs {
		if o.path == "" {
			continue
		}
		b, err := o.fn(recs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "gen: %s: %v\n", o.path, err)
			os.Exit(1)
		}
		if err := os.MkdirAll(filepath.Dir(o.path), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(o.path, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}

func load(dir string) ([]rec, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var all []rec
	types := map[int]string{}
	names := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var s schema
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		rg, ok := ranges[s.Source]
		if !ok {
			return nil, fmt.Errorf("%s: unknown source %q", f, s.Source)
		}
		for _, r := range s.Records {
			r.source = s.Source
			if r.Type < rg[0] || r.Type > rg[1] {
				return nil, fmt.Errorf("%s: record %s: type %d outside %s range %d-%d", f, r.Name, r.Type, s.Source, rg[0], rg[1])
			}
			if prev, dup := types[r.Type]; dup {
				return nil, fmt.Errorf("%s: record %s: type %d already used by %s", f, r.Name, r.Type, prev)
			}
			if prev, dup := names[r.Name]; dup {
				return nil, fmt.Errorf("%s: record name %s already used in %s", f, r.Name, prev)
			}
			types[r.Type] = r.Name
			names[r.Name] = f
			if err := layout(&r); err != nil {
				return nil, fmt.Errorf("%s: record %s: %w", f, r.Name, err)
			}
			all = append(all, r)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Type < all[j].Type })
	return all, nil
}

func layout(r *rec) error {
	off := 8
	seen := map[string]bool{}
	for i := range r.Fields {
		f := &r.Fields[i]
		sc, ok := scalar[f.Type]
		if !ok {
			return fmt.Errorf("field %s: unknown type %q", f.Name, f.Type)
		}
		if seen[f.Name] || f.Name == "" {
			return fmt.Errorf("field %q: empty or duplicate name", f.Name)
		}
		seen[f.Name] = true
		if off%sc.size != 0 {
			return fmt.Errorf("field %s (%s) at offset %d is not naturally aligned; reorder fields or add an explicit pad field", f.Name, f.Type, off)
		}
		f.offset = off
		n := f.Count
		if n == 0 {
			n = 1
		}
		off += sc.size * n
	}
	if r.Tail != "" {
		lf := r.Tail + "_len"
		found := false
		for _, f := range r.Fields {
			if f.Name == lf && f.Type == "u32" && f.Count == 0 {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("tail %q needs a u32 field %q", r.Tail, lf)
		}
	}
	r.size = (off + 7) &^ 7
	return nil
}

func camel(s string) string {
	var b strings.Builder
	for _, p := range strings.Split(s, "_") {
		if p == "" {
			continue
		}
		switch p {
		case "id", "ns", "cpu", "gpu", "api", "kv", "tid", "pid", "moe":
			b.WriteString(strings.ToUpper(p))
			continue
		}
		b.WriteString(strings.ToUpper(p[:1]) + p[1:])
	}
	return b.String()
}

const banner = "Code generated by internal/record/gen from the JSON schemas in internal/record/schema. DO NOT EDIT."

func genC(recs []rec) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "/* %s */\n", banner)
	b.WriteString(`#ifndef PM_RECORDS_H
#define PM_RECORDS_H

#ifdef __BPF__
/* eBPF programs include vmlinux.h for the fixed-width types. */
#else
#include <stdint.h>
#include <stddef.h>
#endif

/* Every record starts with this header; size covers the whole record and is a multiple of 8. */
struct pm_rec_hdr {
	uint16_t type;  /* 0 */
	uint16_t flags; /* 2 */
	uint32_t size;  /* 4 */
};

#define PM_REC_PAD 0
#define PM_REC_ALIGN 8
#define PM_REC_ALIGN_UP(n) (((n) + 7u) & ~7u)

`)
	for _, r := range recs {
		up := strings.ToUpper(r.Name)
		if r.Doc != "" {
			fmt.Fprintf(&b, "/* %s (%s) */\n", r.Doc, r.source)
		}
		fmt.Fprintf(&b, "#define PM_REC_%s %d\n#define PM_REC_%s_SIZE %d\n", up, r.Type, up, r.size)
		fmt.Fprintf(&b, "struct pm_rec_%s {\n\tstruct pm_rec_hdr hdr; /* 0 */\n", r.Name)
		end := 8
		for _, f := range r.Fields {
			sc := scalar[f.Type]
			arr := ""
			n := 1
			if f.Count > 0 {
				arr = fmt.Sprintf("[%d]", f.Count)
				n = f.Count
			}
			doc := ""
			if f.Doc != "" {
				doc = " " + strings.ReplaceAll(f.Doc, "*/", "* /")
			}
			fmt.Fprintf(&b, "\t%s %s%s; /* %d%s */\n", sc.c, f.Name, arr, f.offset, doc)
			end = f.offset + sc.size*n
		}
		if pad := r.size - end; pad > 0 {
			fmt.Fprintf(&b, "\tuint8_t _pad_end[%d]; /* %d */\n", pad, end)
		}
		if r.Tail != "" {
			fmt.Fprintf(&b, "\t/* followed by %s_len bytes of %s, then zero padding to 8 */\n", r.Tail, r.Tail)
		}
		b.WriteString("};\n")
		fmt.Fprintf(&b, "_Static_assert(sizeof(struct pm_rec_%s) == %d, \"pm_rec_%s size\");\n", r.Name, r.size, r.Name)
		for _, f := range r.Fields {
			fmt.Fprintf(&b, "_Static_assert(__builtin_offsetof(struct pm_rec_%s, %s) == %d, \"pm_rec_%s.%s\");\n", r.Name, f.Name, f.offset, r.Name, f.Name)
		}
		b.WriteString("\n")
	}
	b.WriteString("#endif /* PM_RECORDS_H */\n")
	return b.Bytes(), nil
}

func genGo(recs []rec) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// %s\n\npackage record\n\nimport (\n\t\"encoding/binary\"\n\t\"math\"\n)\n\nvar _ = math.Float64frombits\n\n", banner)
	b.WriteString("// Record type ids.\nconst (\n")
	for _, r := range recs {
		fmt.Fprintf(&b, "\tType%s Type = %d // %s\n", camel(r.Name), r.Type, r.source)
	}
	b.WriteString(")\n\n")
	b.WriteString("// Specs describes every generated record: name, source, fixed size and fields.\nvar Specs = map[Type]Spec{\n")
	for _, r := range recs {
		fmt.Fprintf(&b, "\tType%s: {Name: %q, Source: %q, Size: %d, Tail: %q, Fields: []FieldSpec{", camel(r.Name), r.Name, r.source, r.size, r.Tail)
		for _, f := range r.Fields {
			fmt.Fprintf(&b, "{Name: %q, Kind: %q, Offset: %d, Count: %d}, ", f.Name, f.Type, f.offset, f.Count)
		}
		b.WriteString("}},\n")
	}
	b.WriteString("}\n\n")
	for _, r := range recs {
		cn := camel(r.Name)
		if r.Doc != "" {
			fmt.Fprintf(&b, "// %s is %s\n", cn, lowerFirst(r.Doc))
		} else {
			fmt.Fprintf(&b, "// %s is the %s record.\n", cn, r.Name)
		}
		fmt.Fprintf(&b, "type %s struct {\n", cn)
		for _, f := range r.Fields {
			sc := scalar[f.Type]
			t := sc.goT
			if f.Count > 0 {
				t = fmt.Sprintf("[%d]%s", f.Count, sc.goT)
			}
			doc := ""
			if f.Doc != "" {
				doc = " // " + f.Doc
			}
			fmt.Fprintf(&b, "\t%s %s%s\n", camel(f.Name), t, doc)
		}
		if r.Tail != "" {
			fmt.Fprintf(&b, "\t%s []byte // variable tail\n", camel(r.Tail))
		}
		b.WriteString("}\n\n")
		// Decode
		fmt.Fprintf(&b, "// Decode%s decodes a whole framed record (header included).\n", cn)
		fmt.Fprintf(&b, "func Decode%s(b []byte) (%s, error) {\n\tvar r %s\n", cn, cn, cn)
		fmt.Fprintf(&b, "\tif err := check(b, Type%s, %d); err != nil {\n\t\treturn r, err\n\t}\n", cn, r.size)
		for _, f := range r.Fields {
			n := f.Count
			if n == 0 {
				fmt.Fprintf(&b, "\tr.%s = %s\n", camel(f.Name), readExpr(f.Type, f.offset))
				continue
			}
			sz := scalar[f.Type].size
			fmt.Fprintf(&b, "\tfor i := 0; i < %d; i++ {\n\t\tr.%s[i] = %s\n\t}\n", n, camel(f.Name), readExpr(f.Type, f.offset, fmt.Sprintf("+i*%d", sz)))
		}
		if r.Tail != "" {
			fmt.Fprintf(&b, "\ttail, err := tailBytes(b, %d, int(r.%s))\n\tif err != nil {\n\t\treturn r, err\n\t}\n\tr.%s = tail\n", r.size, camel(r.Tail+"_len"), camel(r.Tail))
		}
		b.WriteString("\treturn r, nil\n}\n\n")
		// Append
		fmt.Fprintf(&b, "// Append%s appends r framed as a record; a tail's length field is set from the tail.\n", cn)
		fmt.Fprintf(&b, "func Append%s(dst []byte, r *%s) []byte {\n", cn, cn)
		if r.Tail != "" {
			fmt.Fprintf(&b, "\tr.%s = uint32(len(r.%s))\n\ttotal := (%d + len(r.%s) + 7) &^ 7\n", camel(r.Tail+"_len"), camel(r.Tail), r.size, camel(r.Tail))
		} else {
			fmt.Fprintf(&b, "\ttotal := %d\n", r.size)
		}
		fmt.Fprintf(&b, "\tstart := len(dst)\n\tdst = grow(dst, total)\n\tb := dst[start:]\n\tputHeader(b, Type%s, total)\n", cn)
		for _, f := range r.Fields {
			if f.Count == 0 {
				fmt.Fprintf(&b, "\t%s\n", writeStmt(f.Type, f.offset, "r."+camel(f.Name), ""))
				continue
			}
			sz := scalar[f.Type].size
			fmt.Fprintf(&b, "\tfor i := 0; i < %d; i++ {\n\t\t%s\n\t}\n", f.Count, writeStmt(f.Type, f.offset, "r."+camel(f.Name)+"[i]", fmt.Sprintf("+i*%d", sz)))
		}
		if r.Tail != "" {
			fmt.Fprintf(&b, "\tcopy(b[%d:], r.%s)\n", r.size, camel(r.Tail))
		}
		b.WriteString("\treturn dst\n}\n\n")
	}
	out, err := format.Source(b.Bytes())
	if err != nil {
		return b.Bytes(), err
	}
	return out, nil
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	s = strings.TrimSuffix(s, ".") + "."
	return strings.ToLower(s[:1]) + s[1:]
}

func readExpr(t string, off int, extra ...string) string {
	x := ""
	if len(extra) > 0 {
		x = extra[0]
	}
	o := fmt.Sprintf("%d%s", off, x)
	switch t {
	case "u8":
		return fmt.Sprintf("b[%s]", o)
	case "u16":
		return fmt.Sprintf("binary.LittleEndian.Uint16(b[%s:])", o)
	case "u32":
		return fmt.Sprintf("binary.LittleEndian.Uint32(b[%s:])", o)
	case "u64":
		return fmt.Sprintf("binary.LittleEndian.Uint64(b[%s:])", o)
	case "i32":
		return fmt.Sprintf("int32(binary.LittleEndian.Uint32(b[%s:]))", o)
	case "i64":
		return fmt.Sprintf("int64(binary.LittleEndian.Uint64(b[%s:]))", o)
	case "f64":
		return fmt.Sprintf("math.Float64frombits(binary.LittleEndian.Uint64(b[%s:]))", o)
	}
	panic(t)
}

func writeStmt(t string, off int, v, extra string) string {
	o := fmt.Sprintf("%d%s", off, extra)
	switch t {
	case "u8":
		return fmt.Sprintf("b[%s] = %s", o, v)
	case "u16":
		return fmt.Sprintf("binary.LittleEndian.PutUint16(b[%s:], %s)", o, v)
	case "u32":
		return fmt.Sprintf("binary.LittleEndian.PutUint32(b[%s:], %s)", o, v)
	case "u64":
		return fmt.Sprintf("binary.LittleEndian.PutUint64(b[%s:], %s)", o, v)
	case "i32":
		return fmt.Sprintf("binary.LittleEndian.PutUint32(b[%s:], uint32(%s))", o, v)
	case "i64":
		return fmt.Sprintf("binary.LittleEndian.PutUint64(b[%s:], uint64(%s))", o, v)
	case "f64":
		return fmt.Sprintf("binary.LittleEndian.PutUint64(b[%s:], math.Float64bits(%s))", o, v)
	}
	panic(t)
}

func genPy(recs []rec) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n", banner)
	b.WriteString(`"""Record layouts shared with the C agent and the Go joiner (see docs/record-format.md)."""

import struct as _struct

HEADER = _struct.Struct("<HHI")


class RecordSpec:
    """One record layout: pack(**fields) returns the framed bytes (header included)."""

    __slots__ = ("name", "type", "size", "fields", "tail", "_struct")

    def __init__(self, name, type_, size, fmt, fields, tail):
        self.name = name
        self.type = type_
        self.size = size
        self.fields = fields
        self.tail = tail
        self._struct = _struct.Struct(fmt)

    def pack(self, tail=b"", **fields):
        """Frame a record. Missing fields are 0; a tail's length field is filled in."""
        if self.tail:
            fields[self.tail + "_len"] = len(tail)
        total = (self.size + len(tail) + 7) & ~7
        vals = []
        for name, count in self.fields:
            v = fields.get(name, 0)
            if count:
                v = list(v) + [0] * (count - len(v))
                vals.extend(v[:count])
            else:
                vals.append(v)
        body = self._struct.pack(self.type, 0, total, *vals)
        if tail:
            return body + bytes(tail) + b"\0" * (total - self.size - len(tail))
        return body

    def unpack(self, buf):
        """Decode a framed record into a dict (tests and tools)."""
        vals = self._struct.unpack_from(buf, 0)
        out = {}
        i = 3
        for name, count in self.fields:
            if count:
                out[name] = list(vals[i : i + count])
                i += count
            else:
                out[name] = vals[i]
                i += 1
        if self.tail:
            n = out[self.tail + "_len"]
            out[self.tail] = bytes(buf[self.size : self.size + n])
        return out


`)
	for _, r := range recs {
		fmtS := "<HHI"
		end := 8
		var names []string
		for _, f := range r.Fields {
			sc := scalar[f.Type]
			n := f.Count
			if n == 0 {
				fmtS += sc.pyF
				n = 1
			} else {
				fmtS += fmt.Sprintf("%d%s", n, sc.pyF)
			}
			names = append(names, fmt.Sprintf("(%q, %d)", f.Name, f.Count))
			end = f.offset + sc.size*n
		}
		if pad := r.size - end; pad > 0 {
			fmtS += fmt.Sprintf("%dx", pad)
		}
		tail := "None"
		if r.Tail != "" {
			tail = fmt.Sprintf("%q", r.Tail)
		}
		fmt.Fprintf(&b, "%s = RecordSpec(%q, %d, %d, %q, (%s), %s)\n", strings.ToUpper(r.Name), r.Name, r.Type, r.size, fmtS, strings.Join(names, ", ")+trailingComma(len(names)), tail)
	}
	b.WriteString("\nBY_TYPE = {s.type: s for s in (")
	for i, r := range recs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strings.ToUpper(r.Name))
	}
	b.WriteString(trailingComma(len(recs)) + ")}\n")
	return b.Bytes(), nil
}

func trailingComma(n int) string {
	if n == 1 {
		return ","
	}
	return ""
}
