// Package pyproc finds CPython inside a running process and reads its interpreter state from
// outside, through /proc/PID/mem, /proc/PID/maps and /proc/PID/root (so it works across mount
// namespaces). It gives the tracer the layout numbers the eBPF frame walk needs, the thread
// states, the gilstate pthread key, and names of code objects.
//
// Offsets: 3.10-3.12 from tables (layout.go), 3.13 from _Py_DebugOffsets in _PyRuntime; every
// layout is validated on the live process before use (Validate).
package pyproc

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End, Offset uint64
	Perms              string
	Inode              uint64
	Path               string
}

// ErrNotPython reports a process with no CPython mapped.
var ErrNotPython = errors.New("no CPython interpreter in process")

// ErrNoProcess reports a pid that does not exist.
var ErrNoProcess = errors.New("no such process")

// ReadMaps parses /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("reading maps of pid %d: %w", pid, err)
	}
	defer f.Close()
	var out []Mapping
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		var m Mapping
		se := strings.SplitN(fs[0], "-", 2)
		if len(se) != 2 {
			continue
		}
		m.Start, _ = strconv.ParseUint(se[0], 16, 64)
		m.End, _ = strconv.ParseUint(se[1], 16, 64)
		m.Perms = fs[1]
		m.Offset, _ = strconv.ParseUint(fs[2], 16, 64)
		m.Inode, _ = strconv.ParseUint(fs[4], 10, 64)
		if len(fs) >= 6 {
			m.Path = strings.Join(fs[5:], " ")
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// Age returns how long ago pid started (/proc/PID/stat starttime against /proc/uptime, in the
// kernel's fixed 100 Hz USER_HZ ticks).
func Age(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after comm", pid, len(f))
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64) // field 22: starttime
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat starttime: %w", pid, err)
	}
	u, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	up, err := strconv.ParseFloat(strings.Fields(string(u))[0], 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/uptime: %w", err)
	}
	age := time.Duration(up*float64(time.Second)) - time.Duration(ticks)*(time.Second/100)
	return max(age, 0), nil
}

// HostPath returns a path under /proc/PID/root for a path seen inside the process, so files are
// resolved in the process's mount namespace.
func HostPath(pid int, path string) string {
	return fmt.Sprintf("/proc/%d/root%s", pid, path)
}

// Process is a CPython process opened for reading.
type Process struct {
	Pid     int
	Path    string // binary or libpython that holds _PyRuntime, as the process sees it
	Version uint64 // PY_VERSION_HEX (0 when unknown for 3.10)
	Minor   int
	Layout  Layout

	Runtime   uint64 // address of _PyRuntime
	CodeType  uint64 // address of PyCode_Type
	NoneAddr  uint64 // address of _Py_NoneStruct
	GilKey    int32  // gilstate pthread key, -1 if unusable
	Interp    uint64 // main interpreter
	mem       *os.File
	libcudaAt string
}

// MemReader reads process memory.
type MemReader interface {
	ReadAt(p []byte, off int64) (int, error)
}

var pyLibRe = regexp.MustCompile(`(?:^|/)(?:lib)?python3\.(\d+)[a-z]*(?:\.so[.0-9]*)?$`)

// Open finds CPython in pid and determines its layout. It does not validate it (see Validate).
func Open(pid int) (*Process, error) {
	maps, err := ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	p := &Process{Pid: pid, GilKey: -1}
	// Prefer libpython (shared builds) over the executable.
	var cands []Mapping
	seen := map[string]bool{}
	for _, m := range maps {
		if m.Path == "" || seen[m.Path] || !pyLibRe.MatchString(m.Path) {
			continue
		}
		seen[m.Path] = true
		cands = append(cands, m)
	}
	var lastErr error = fmt.Errorf("pid %d: %w", pid, ErrNotPython)
	for i := len(cands) - 1; i >= 0; i-- { // libpython usually comes after the executable
		m := cands[i]
		syms, err := elfSymbols(HostPath(pid, m.Path), maps, m.Path)
		if err != nil {
			lastErr = err
			continue
		}
		rt, ok := syms["_PyRuntime"]
		if !ok {
			lastErr = fmt.Errorf("pid %d: %s has no _PyRuntime symbol: %w", pid, m.Path, ErrNotPython)
			continue
		}
		p.Path, p.Runtime = m.Path, rt
		p.CodeType = syms["PyCode_Type"]
		p.NoneAddr = syms["_Py_NoneStruct"]
		if mm := pyLibRe.FindStringSubmatch(m.Path); mm != nil {
			p.Minor, _ = strconv.Atoi(mm[1])
		}
		if v, ok := syms["Py_Version"]; ok {
			p.Version = v // resolved below: address of the constant
		}
		break
	}
	if p.Runtime == 0 {
		return nil, lastErr
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, fmt.Errorf("opening memory of pid %d: %w", pid, err)
	}
	p.mem = mem
	if p.Version != 0 {
		v, err := p.ReadU32(p.Version)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("reading Py_Version: %w", err)
		}
		p.Version = uint64(v)
		p.Minor = int(v>>16) & 0xff
	}
	head := make([]byte, 512)
	if err := p.Read(p.Runtime, head); err != nil {
		p.Close()
		return nil, fmt.Errorf("reading _PyRuntime: %w", err)
	}
	if string(head[:8]) == "xdebugpy" {
		l, v, err := debugOffsetsLayout(head)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("pid %d (%s): %w", pid, p.Path, err)
		}
		p.Layout, p.Version, p.Minor = l, v, l.Minor
	} else {
		l, err := TableLayout(p.Minor)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("pid %d (%s): %w", pid, p.Path, err)
		}
		p.Layout = l
	}
	return p, nil
}

// Close releases the memory file.
func (p *Process) Close() error {
	if p == nil || p.mem == nil {
		return nil
	}
	err := p.mem.Close()
	p.mem = nil
	return err
}

// Read reads len(b) bytes at addr.
func (p *Process) Read(addr uint64, b []byte) error {
	n, err := p.mem.ReadAt(b, int64(addr))
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %d bytes at %#x: %w", len(b), addr, err)
}

// ReadU64 reads one little-endian u64.
func (p *Process) ReadU64(addr uint64) (uint64, error) {
	var b [8]byte
	if err := p.Read(addr, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// ReadU32 reads one little-endian u32.
func (p *Process) ReadU32(addr uint64) (uint32, error) {
	var b [4]byte
	if err := p.Read(addr, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

// VersionString is "3.minor" or "3.minor.micro" when the full version is known.
func (p *Process) VersionString() string {
	if p.Version != 0 {
		return fmt.Sprintf("%d.%d.%d", p.Version>>24, (p.Version>>16)&0xff, (p.Version>>8)&0xff)
	}
	return fmt.Sprintf("3.%d", p.Minor)
}

// elfSymbols returns the run-time addresses of the few symbols pyproc needs from the ELF file at
// hostPath, mapped in the process as procPath.
func elfSymbols(hostPath string, maps []Mapping, procPath string) (map[string]uint64, error) {
	f, err := elf.Open(hostPath)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", hostPath, err)
	}
	defer f.Close()
	want := map[string]bool{"_PyRuntime": true, "PyCode_Type": true, "_Py_NoneStruct": true, "Py_Version": true}
	out := map[string]uint64{}
	add := func(syms []elf.Symbol) {
		for _, s := range syms {
			if want[s.Name] && s.Value != 0 && s.Section != elf.SHN_UNDEF {
				out[s.Name] = s.Value
			}
		}
	}
	if ds, err := f.DynamicSymbols(); err == nil {
		add(ds)
	}
	if len(out) < len(want) {
		if ss, err := f.Symbols(); err == nil {
			add(ss)
		}
	}
	if len(out) == 0 {
		return out, nil
	}
	bias, err := loadBias(f, maps, procPath)
	if err != nil {
		return nil, err
	}
	for k, v := range out {
		out[k] = v + bias
	}
	return out, nil
}

// loadBias computes where the ELF file was loaded: 0 for ET_EXEC, else the start of the mapping
// of file offset 0 minus the first PT_LOAD's page-aligned vaddr.
func loadBias(f *elf.File, maps []Mapping, procPath string) (uint64, error) {
	if f.Type == elf.ET_EXEC {
		return 0, nil
	}
	var first *elf.Prog
	for _, pr := range f.Progs {
		if pr.Type == elf.PT_LOAD {
			first = pr
			break
		}
	}
	if first == nil {
		return 0, errors.New("no PT_LOAD segment")
	}
	for _, m := range maps {
		if m.Path == procPath && m.Offset == 0 {
			return m.Start - (first.Vaddr &^ 0xfff), nil
		}
	}
	return 0, fmt.Errorf("%s: no mapping at file offset 0", procPath)
}

// FindLibrary returns the first mapped file whose base name starts with prefix (e.g.
// "libcuda.so"), as the process sees the path.
func FindLibrary(maps []Mapping, prefix string) string {
	for _, m := range maps {
		if m.Path != "" && strings.HasPrefix(filepath.Base(m.Path), prefix) {
			return m.Path
		}
	}
	return ""
}

// readString reads a compact str object (ASCII or Latin-1); max bounds the length.
func (p *Process) readString(obj uint64, max int) (string, error) {
	if obj == 0 {
		return "", errors.New("null str")
	}
	var hdr [48]byte
	if err := p.Read(obj, hdr[:40]); err != nil {
		return "", err
	}
	l := p.Layout
	n := binary.LittleEndian.Uint64(hdr[l.UnicodeLength:])
	state := binary.LittleEndian.Uint32(hdr[l.UnicodeState:])
	kind := (state >> 2) & 7
	compact := state&(1<<5) != 0
	ascii := state&(1<<6) != 0
	if !compact || kind != 1 {
		return "", fmt.Errorf("str at %#x is not a compact 1-byte string", obj)
	}
	if n > uint64(max) {
		n = uint64(max)
	}
	data := l.CompactData
	if ascii {
		data = l.ASCIIData
	}
	b := make([]byte, n)
	if err := p.Read(obj+data, b); err != nil {
		return "", err
	}
	if !ascii {
		var r []rune
		for _, c := range b {
			r = append(r, rune(c))
		}
		return string(r), nil
	}
	return string(b), nil
}

// strASCII reads a short compact ASCII str object with one read.
func (p *Process) strASCII(ptr uint64) (string, error) {
	if ptr == 0 {
		return "", errors.New("null str")
	}
	var b [128]byte
	if err := p.Read(ptr, b[:]); err != nil {
		return "", err
	}
	l := p.Layout
	n := binary.LittleEndian.Uint64(b[l.UnicodeLength:])
	state := binary.LittleEndian.Uint32(b[l.UnicodeState:])
	if state&(1<<5) == 0 || state&(1<<6) == 0 || n > uint64(len(b))-l.ASCIIData {
		return "", errors.New("not a short compact ASCII str")
	}
	return string(b[l.ASCIIData : l.ASCIIData+n]), nil
}

// Code is a code object's identity.
type Code struct {
	Addr        uint64
	Name        string
	Qualname    string // equals Name on 3.10
	Filename    string
	FirstLineno uint32
}

// ReadCode reads the names of the code object at addr, checking its type.
func (p *Process) ReadCode(addr uint64) (Code, error) {
	c := Code{Addr: addr}
	t, err := p.ReadU64(addr + 8)
	if err != nil {
		return c, err
	}
	if p.CodeType != 0 && t != p.CodeType {
		return c, fmt.Errorf("object at %#x is not a code object (type %#x)", addr, t)
	}
	l := p.Layout
	get := func(off uint64) (string, error) {
		ptr, err := p.ReadU64(addr + off)
		if err != nil {
			return "", err
		}
		return p.readString(ptr, 512)
	}
	if c.Name, err = get(l.CodeName); err != nil {
		return c, fmt.Errorf("co_name: %w", err)
	}
	c.Qualname = c.Name
	if l.CodeQualname != None {
		if c.Qualname, err = get(l.CodeQualname); err != nil {
			return c, fmt.Errorf("co_qualname: %w", err)
		}
	}
	if c.Filename, err = get(l.CodeFilename); err != nil {
		c.Filename = "?"
	}
	c.FirstLineno, _ = p.ReadU32(addr + l.CodeFirstLineno)
	return c, nil
}

// ScanCodes looks for code objects in the process's anonymous writable memory and heap (where
// CPython allocates them) and returns those whose co_name passes name and for which keep
// returns true. It reads at most maxBytes bytes; mappings larger than 1 GiB (tensors, not
// objects) are skipped.
func (p *Process) ScanCodes(maxBytes uint64, name func(string) bool, keep func(Code) bool) ([]Code, error) {
	if p.CodeType == 0 {
		return nil, errors.New("PyCode_Type not found")
	}
	maps, err := ReadMaps(p.Pid)
	if err != nil {
		return nil, err
	}
	// Smallest mappings first: CPython's object arenas (obmalloc's 1 MiB arenas, mimalloc's
	// segments) and the brk heap are small; the large anonymous mappings of an inference server
	// are mostly tensors and pinned buffers, so when maxBytes cuts the scan it cuts those.
	cand := maps[:0:0]
	for _, m := range maps {
		if len(m.Perms) < 2 || m.Perms[0] != 'r' || m.Perms[1] != 'w' {
			continue
		}
		if m.Path != "" && m.Path != "[heap]" {
			continue
		}
		if m.End-m.Start > 1<<30 {
			continue
		}
		cand = append(cand, m)
	}
	sort.SliceStable(cand, func(i, j int) bool { return cand[i].End-cand[i].Start < cand[j].End-cand[j].Start })
	var out []Code
	var scanned uint64
	buf := make([]byte, 1<<20)
	names := map[uint64]string{} // co_name str objects are shared (interned): read each once
	for _, m := range cand {
		for a := m.Start; a < m.End; a += uint64(len(buf)) {
			n := uint64(len(buf))
			if m.End-a < n {
				n = m.End - a
			}
			if scanned+n > maxBytes {
				return out, fmt.Errorf("code scan stopped after %d bytes", scanned)
			}
			scanned += n
			b := buf[:n]
			if err := p.Read(a, b); err != nil {
				break
			}
			for i := 8; i+8 <= len(b); i += 8 {
				if binary.LittleEndian.Uint64(b[i:]) != p.CodeType {
					continue
				}
				obj := a + uint64(i) - 8
				// Cheap filter first: co_name (from the buffer when it is there, names cached),
				// then the full code object.
				var ptr uint64
				if no := i - 8 + int(p.Layout.CodeName); no+8 <= len(b) {
					ptr = binary.LittleEndian.Uint64(b[no:])
				} else if ptr, err = p.ReadU64(obj + p.Layout.CodeName); err != nil {
					continue
				}
				n, ok := names[ptr]
				if !ok {
					n, _ = p.strASCII(ptr)
					names[ptr] = n
				}
				if n == "" || !name(n) {
					continue
				}
				c, err := p.ReadCode(obj)
				if err != nil {
					continue
				}
				if keep(c) {
					out = append(out, c)
				}
			}
		}
	}
	return out, nil
}
