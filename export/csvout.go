package export

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// table is one CSV file: a header and rows of already formatted cells.
type table struct {
	name   string
	header []string
	rows   [][]string
	// body holds further rows already encoded (written after rows), for the large tables
	// that are built in order with a rowBuf.
	body []byte
}

// rowBuf encodes one CSV row straight into a table's body, without per-cell strings.
type rowBuf struct {
	t     *table
	cells int
}

func (t *table) row() *rowBuf { return &rowBuf{t: t} }

func (r *rowBuf) sep() {
	if r.cells > 0 {
		r.t.body = append(r.t.body, ',')
	}
	r.cells++
}

func (r *rowBuf) str(s string) *rowBuf {
	r.sep()
	if !needsQuote(s) {
		r.t.body = append(r.t.body, s...)
		return r
	}
	r.t.body = append(r.t.body, '"')
	for k := 0; k < len(s); k++ {
		if s[k] == '"' {
			r.t.body = append(r.t.body, '"')
		}
		r.t.body = append(r.t.body, s[k])
	}
	r.t.body = append(r.t.body, '"')
	return r
}

func (r *rowBuf) int(v int64) *rowBuf {
	r.sep()
	r.t.body = strconv.AppendInt(r.t.body, v, 10)
	return r
}

func (r *rowBuf) fixed(v float64, prec int) *rowBuf {
	r.sep()
	r.t.body = strconv.AppendFloat(r.t.body, v, 'f', prec, 64)
	return r
}

// sec writes a CLOCK_MONOTONIC time as seconds since start with 6 decimals (as f6).
func (r *rowBuf) sec(ns, start uint64) *rowBuf {
	r.sep()
	d := int64(ns - start)
	if ns < start {
		r.t.body = append(r.t.body, '-')
		d = int64(start - ns)
	}
	u := (d + 500) / 1000
	r.t.body = strconv.AppendInt(r.t.body, u/1e6, 10)
	r.t.body = append(r.t.body, '.')
	r.t.body = appendPadded(r.t.body, u%1e6, 6)
	return r
}

// us writes nanoseconds as microseconds with 3 decimals (as us).
func (r *rowBuf) us(ns uint64) *rowBuf {
	r.sep()
	r.t.body = strconv.AppendUint(r.t.body, ns/1000, 10)
	r.t.body = append(r.t.body, '.')
	r.t.body = appendPadded(r.t.body, int64(ns%1000), 3)
	return r
}

func appendPadded(b []byte, v int64, width int) []byte {
	var tmp [20]byte
	d := strconv.AppendInt(tmp[:0], v, 10)
	for i := len(d); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, d...)
}

// end finishes the row; a row with the wrong number of cells is a bug.
func (r *rowBuf) end() {
	if r.cells != len(r.t.header) {
		panic(fmt.Sprintf("%s: row has %d cells, header %d", r.t.name, r.cells, len(r.t.header)))
	}
	r.t.body = append(r.t.body, '\n')
	r.cells = 0
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, t.name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := t.writeTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (t *table) writeTo(f io.Writer) error {
	w := bufio.NewWriterSize(f, 256<<10)
	writeRow(w, t.header)
	for _, r := range t.rows {
		if len(r) != len(t.header) {
			return fmt.Errorf("%s: row has %d cells, header %d", t.name, len(r), len(t.header))
		}
		writeRow(w, r)
	}
	w.Write(t.body)
	return w.Flush()
}

// writeRow writes one CSV record as encoding/csv does (RFC 4180, "\n" line ends): a field
// is quoted when it holds a comma, quote, CR or LF, or starts with a space or tab.
func writeRow(w *bufio.Writer, cells []string) {
	for i, c := range cells {
		if i > 0 {
			w.WriteByte(',')
		}
		if !needsQuote(c) {
			w.WriteString(c)
			continue
		}
		w.WriteByte('"')
		for k := 0; k < len(c); k++ {
			if c[k] == '"' {
				w.WriteByte('"')
			}
			w.WriteByte(c[k])
		}
		w.WriteByte('"')
	}
	w.WriteByte('\n')
}

func needsQuote(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == ' ' || s[0] == '\t' || s == `\.` {
		return true
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', '"', '\r', '\n':
			return true
		}
	}
	return false
}

func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
func f3(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
func f6(v float64) string { return strconv.FormatFloat(v, 'f', 6, 64) }
func itoa[T ~int | ~int32 | ~int64 | ~uint32 | ~uint64 | ~uint16 | ~uint8](v T) string {
	return strconv.FormatInt(int64(v), 10)
}

// pyBool renders booleans as the original ProfileMate did (Python's str(bool)).
func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// durStats holds a sorted sample of durations in nanoseconds.
type durStats struct{ ns []uint64 }

func (d *durStats) add(ns uint64) { d.ns = append(d.ns, ns) }

func (d *durStats) sorted() []uint64 {
	sort.Slice(d.ns, func(i, j int) bool { return d.ns[i] < d.ns[j] })
	return d.ns
}

func (d *durStats) total() uint64 {
	var t uint64
	for _, v := range d.ns {
		t += v
	}
	return t
}

// pct returns the p-th percentile (0..100) of sorted values by the nearest-rank method.
func pct(sorted []uint64, p float64) uint64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}

func us(ns uint64) string { return f3(float64(ns) / 1e3) }

// output is one derived file.
type output interface {
	fileName() string
	write(dir string) error
}

func (t *table) fileName() string { return t.name }

// blob is a derived non-CSV file (JSON, text).
type blob struct {
	name string
	data []byte
}

func (b *blob) fileName() string { return b.name }

func (b *blob) write(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, b.name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b.data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func jsonBlob(name string, v any) *blob {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b = []byte(fmt.Sprintf("{\"error\": %q}", err.Error()))
	}
	return &blob{name: name, data: append(b, '\n')}
}

// pctStats are the latency percentiles written into *_summary.json.
type pctStats struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Total float64 `json:"total"`
}

// statsOf returns percentiles of v (any unit; v is sorted in place).
func statsOf(v []float64) pctStats {
	if len(v) == 0 {
		return pctStats{}
	}
	sort.Float64s(v)
	var tot float64
	for _, x := range v {
		tot += x
	}
	q := func(p float64) float64 {
		r := int(p/100*float64(len(v))+0.999999999) - 1
		if r < 0 {
			r = 0
		}
		if r >= len(v) {
			r = len(v) - 1
		}
		return round3(v[r])
	}
	return pctStats{Count: len(v), Mean: round3(tot / float64(len(v))), P50: q(50), P95: q(95), P99: q(99), Min: round3(v[0]), Max: round3(v[len(v)-1]), Total: round3(tot)}
}

func round3(x float64) float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return 0
	}
	return math.Round(x*1000) / 1000
}

func (s *Session) warnf(format string, a ...any) {
	s.Warnings = append(s.Warnings, fmt.Sprintf(format, a...))
}
